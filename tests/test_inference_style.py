"""The style API (encode, sample, synthesize with codes, transfer by class) and `synthesize --samples/--seed/--restyle`
with a reference style; bad input is one line and writes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pansynth.cli import main
from pansynth.data.io import write_id_png, write_label_png
from pansynth.inference import encode_style, sample_style, segment_classes, style_by_class, synthesize
from pansynth.models import Generator
from pansynth.viz import image_to_uint8

NUM_CLASSES = 4


def _maps() -> tuple[torch.Tensor, torch.Tensor]:
    semantic = torch.zeros(32, 64, dtype=torch.long)
    semantic[4:20, 6:50] = 1
    semantic[24:30, :] = 2
    panoptic = semantic * 1000
    panoptic[4:20, 27:50] += 1  # instances 1000 and 1001 of class 1, touching
    return semantic, panoptic


@pytest.fixture(scope="module")
def style_generator():
    torch.manual_seed(0)
    return Generator(NUM_CLASSES, size=(32, 64), ngf=2, spade_hidden=8, style="instance", style_dim=3).eval()


@pytest.fixture
def files(tmp_path, style_generator):
    """An exported style generator, a style-less one, a map pair and a reference photograph."""
    style_generator.save_pretrained(tmp_path / "style")
    torch.manual_seed(0)
    Generator(NUM_CLASSES, size=(32, 64), ngf=2, spade_hidden=8).save_pretrained(tmp_path / "plain")
    semantic, panoptic = _maps()
    write_label_png(tmp_path / "sem.png", semantic.numpy())
    write_id_png(tmp_path / "pan.png", panoptic.numpy())
    photo = (np.random.default_rng(0).random((32, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    Image.fromarray(photo[:16]).save(tmp_path / "small.png")
    return tmp_path


def test_codes_from_encoding_sampling_and_class_transfer(style_generator):
    semantic, panoptic = _maps()
    image = torch.rand(3, 32, 64) * 2 - 1
    codes = encode_style(style_generator, image, semantic, panoptic)
    assert sorted(codes) == [0, 1000, 1001, 2000] and codes[1000].shape == (3,)
    # synthesizing with the encoded codes is the generator fed their code map
    expected = style_generator(semantic[None], panoptic[None], style_generator.style_map(panoptic[None], codes=codes))
    torch.testing.assert_close(synthesize(style_generator, semantic, panoptic, codes=codes), expected[0])
    # by class: each class takes the mean code of its segments in the reference
    by_class = style_by_class(style_generator, image, semantic, panoptic)
    torch.testing.assert_close(by_class[1], (codes[1000] + codes[1001]) / 2)
    torch.testing.assert_close(by_class[0], codes[0])
    target_semantic, target_panoptic = semantic.clone(), panoptic.clone()
    target_semantic[30:] = 3  # a class the reference lacks: sampled
    target_panoptic[30:] = 3000
    target_panoptic[4:20, 6:20] = 1005  # a third instance of class 1
    ids, classes = segment_classes(target_semantic, target_panoptic)
    assert dict(zip(ids.tolist(), classes.tolist()))[1005] == 1
    transferred = {1005: by_class[1], 1000: by_class[1], 1001: by_class[1], 0: by_class[0], 2000: by_class[2]}
    expected = style_generator(
        target_semantic[None],
        target_panoptic[None],
        style_generator.style_map(target_panoptic[None], seed=4, codes=transferred),
    )
    torch.testing.assert_close(
        synthesize(style_generator, target_semantic, target_panoptic, class_codes=by_class, seed=4), expected[0]
    )
    # sampling: a torch.Generator gives reproducible draws, each a function of (seed, id)
    first = sample_style(style_generator, panoptic, torch.Generator().manual_seed(3))
    again = sample_style(style_generator, panoptic, torch.Generator().manual_seed(3))
    assert all(torch.equal(first[i], again[i]) for i in first)
    restyled = sample_style(style_generator, panoptic, 5, restyle={1001: 6})
    plain = sample_style(style_generator, panoptic, 5)
    assert [i for i in plain if not torch.equal(plain[i], restyled[i])] == [1001]
    with pytest.raises(ValueError, match="same size"):
        encode_style(style_generator, image[:, :16], semantic, panoptic)


def test_style_less_generator_synthesizes_as_before_and_refuses_style_options():
    torch.manual_seed(0)
    generator = Generator(NUM_CLASSES, size=(32, 64), ngf=2, spade_hidden=8).eval()
    semantic, panoptic = _maps()
    with torch.no_grad():
        expected = generator(semantic[None], panoptic[None])[0]
    torch.testing.assert_close(synthesize(generator, semantic, panoptic), expected, rtol=0, atol=0)
    for kwargs in ({"seed": 1}, {"restyle": {0: 1}}, {"codes": {}}):
        with pytest.raises(ValueError, match="model.style=instance"):
            synthesize(generator, semantic, panoptic, **kwargs)


def _pngs(folder):
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_synthesize_samples_seeds_restyle_and_reference(files, capsys):
    base = ["synthesize", "--checkpoint", str(files / "style"), "--input", str(files / "sem.png")]
    base += ["--panoptic", str(files / "pan.png"), "--device", "cpu"]
    assert main([*base, "--out", str(files / "a"), "--samples", "3", "--seed", "5"]) == 0
    assert main([*base, "--out", str(files / "b"), "--samples", "3", "--seed", "5"]) == 0
    assert main([*base, "--out", str(files / "c"), "--seed", "9"]) == 0
    a, b, c = _pngs(files / "a"), _pngs(files / "b"), _pngs(files / "c")
    assert sorted(a) == ["sem_0.png", "sem_1.png", "sem_2.png"]
    assert all(np.array_equal(a[name], b[name]) for name in a)  # the same seed, the same images
    assert not np.array_equal(a["sem_0.png"], a["sem_1.png"])  # seed 5 and 6 differ
    assert not np.array_equal(a["sem_0.png"], c["sem.png"])
    # --seed S --samples 1 is sample 0 of --seed S
    assert main([*base, "--out", str(files / "d"), "--seed", "5"]) == 0
    assert np.array_equal(_pngs(files / "d")["sem.png"], a["sem_0.png"])
    # --restyle: the image of the Python API with that segment's own seed, nothing else redrawn
    assert main([*base, "--out", str(files / "e"), "--seed", "5", "--restyle", "1001:42"]) == 0
    generator = Generator.from_pretrained(files / "style")
    semantic, panoptic = _maps()
    expected = image_to_uint8(synthesize(generator, semantic, panoptic, seed=5, restyle={1001: 42}))
    assert np.array_equal(_pngs(files / "e")["sem.png"], expected)
    assert not np.array_equal(expected, a["sem_0.png"])
    # a reference photograph with its maps: style by class
    reference = ["--style-image", str(files / "photo.png"), "--style-semantic", str(files / "sem.png")]
    reference += ["--style-panoptic", str(files / "pan.png")]
    assert main([*base, "--out", str(files / "f"), *reference]) == 0
    photo = torch.from_numpy(np.array(Image.open(files / "photo.png"))).permute(2, 0, 1).float() / 127.5 - 1
    by_class = style_by_class(generator, photo, semantic, panoptic)
    expected = image_to_uint8(synthesize(generator, semantic, panoptic, class_codes=by_class))
    assert np.array_equal(_pngs(files / "f")["sem.png"], expected)


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        ("plain", ["--samples", "2"], "--samples needs a generator with styles"),
        ("plain", ["--restyle", "1001"], "--restyle needs a generator with styles"),
        ("style", ["--restyle", "77"], "--restyle 77: no segment with this id in"),
        ("style", ["--restyle", "x"], "expected a segment id"),
        (
            "style",
            ["--style-image", "{}/small.png", "--style-semantic", "{}/sem.png", "--style-panoptic", "{}/pan.png"],
            "small.png is 16x64 but its maps",
        ),  # fmt: skip
        ("style", ["--style-image", "{}/photo.png"], "needs --style-semantic and --style-panoptic"),
        ("style", ["--style-sample", "0"], "--style-sample INDEX reads a sample of --dataset"),
    ],
)
def test_bad_style_options_are_one_line_and_write_nothing(files, capsys, model, extra, message):
    out = files / "out"
    extra = [value.replace("{}", str(files)) for value in extra]
    argv = ["synthesize", "--checkpoint", str(files / model), "--input", str(files / "sem.png")]
    argv += ["--panoptic", str(files / "pan.png"), "--out", str(out), "--device", "cpu", *extra]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not out.exists()
