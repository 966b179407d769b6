"""Per-segment styles: the segment reduction, the encoder's locality, codes drawn by (seed, id), the KL term,
the code channels' hole filling, and the generator's style option (off: today's model unchanged)."""

from __future__ import annotations

import json

import pytest
import torch

from pansynth.models import Generator
from pansynth.models.style import (
    StyleEncoder,
    code_map,
    kl_divergence,
    sample_codes,
    segment_index,
    segment_mean,
    style_hole_features,
)
from pansynth.ops import panoptic_conv2d

NUM_CLASSES = 4
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def _ragged_maps() -> torch.Tensor:
    """Two 8x8 maps: ragged segments, one-pixel segments and ids near the int64 limits."""
    panoptic = torch.zeros(2, 8, 8, dtype=torch.long)
    panoptic[0, :, 3:] = INT64_MAX
    panoptic[0, 2:5, 1:6] = INT64_MIN
    panoptic[0, 7, 7] = INT64_MAX - 1  # one pixel
    panoptic[0, 0, 0] = 5  # one pixel
    panoptic[1] = torch.arange(64).view(8, 8) % 3 * (INT64_MAX // 2)  # ragged stripes
    panoptic[1, 4, 4] = INT64_MIN + 1  # one pixel
    panoptic[1, 0, :] = 5  # the same id as in image 0: another segment there
    return panoptic


def _literal_segment_means(features: torch.Tensor, panoptic: torch.Tensor) -> dict[tuple[int, int], torch.Tensor]:
    """The mean feature of every (image, id), by a plain loop over pixels."""
    sums: dict[tuple[int, int], torch.Tensor] = {}
    counts: dict[tuple[int, int], int] = {}
    n, _, height, width = features.shape
    for b in range(n):
        for y in range(height):
            for x in range(width):
                key = (b, int(panoptic[b, y, x]))
                sums[key] = sums.get(key, 0) + features[b, :, y, x]
                counts[key] = counts.get(key, 0) + 1
    return {key: sums[key] / counts[key] for key in sums}


def test_segment_mean_matches_a_literal_loop_on_ragged_tiny_and_extreme_segments():
    panoptic = _ragged_maps()
    features = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    index, keys = segment_index(panoptic)
    means = segment_mean(features, index, len(keys))
    expected = _literal_segment_means(features, panoptic)
    assert sorted(expected) == sorted(map(tuple, keys.tolist()))
    for row, key in enumerate(map(tuple, keys.tolist())):
        torch.testing.assert_close(means[row], expected[key], rtol=1e-12, atol=1e-12)
    # the code map spreads each segment's value back onto exactly its pixels
    spread = code_map(means, index)
    for b in range(2):
        for y, x in [(0, 0), (7, 7), (4, 4), (3, 2)]:
            torch.testing.assert_close(spread[b, :, y, x], expected[(b, int(panoptic[b, y, x]))])


def test_segment_mean_does_not_depend_on_the_id_values():
    panoptic = _ragged_maps()
    features = torch.randn(2, 5, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    index, keys = segment_index(panoptic)
    per_pixel = code_map(segment_mean(features, index, len(keys)), index)
    # A bijection of the ids (reversed order, other magnitudes) gives every pixel the same mean.
    relabelled = torch.empty_like(panoptic)
    for row, (_, identifier) in enumerate(keys.tolist()):
        relabelled[panoptic == identifier] = -7 * row + 3
    other_index, other_keys = segment_index(relabelled)
    again = code_map(segment_mean(features, other_index, len(other_keys)), other_index)
    torch.testing.assert_close(again, per_pixel, rtol=0, atol=0)


def test_segment_mean_gradient():
    panoptic = _ragged_maps()
    index, keys = segment_index(panoptic)
    features = torch.randn(2, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: segment_mean(f, index, len(keys)), (features,))


def _scene(size: int = 16, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Semantic + panoptic maps: stuff, two touching instances of one class (at an odd column), a thin one."""
    semantic = torch.zeros(1, size, width or size, dtype=torch.long)
    semantic[:, 3:12, 2:13] = 1
    semantic[:, 13, 1:15] = 2
    panoptic = semantic * 100
    panoptic[:, 3:12, 7:13] += 1  # instance 101 touches instance 100 at column 7
    return semantic, panoptic


@pytest.mark.parametrize(
    ("conv", "upsample", "local"), [("panoptic", "panoptic", True), ("standard", "nearest", False)]
)
def test_changing_one_instance_changes_only_its_code_with_panoptic_layers(conv, upsample, local):
    torch.manual_seed(0)
    encoder = StyleEncoder(3, channels=4, num_down=2, conv=conv, upsample=upsample, backend="torch").double()
    _, panoptic = _scene()
    image = torch.rand(1, 3, 16, 16, dtype=torch.float64) * 2 - 1
    edited = image.clone()
    edited[:, :, panoptic[0] == 101] = torch.rand(3, int((panoptic == 101).sum()), dtype=torch.float64)
    mu, logvar, _, keys = encoder(image, panoptic)
    mu_edited, logvar_edited, _, _ = encoder(edited, panoptic)
    changed = keys[:, 1] == 101
    assert not torch.equal(mu[changed], mu_edited[changed])
    others_equal = torch.equal(mu[~changed], mu_edited[~changed]) and torch.equal(
        logvar[~changed], logvar_edited[~changed]
    )
    if local:
        assert others_equal  # bit for bit, in float64
    else:
        # plain convolutions and nearest upsampling read the neighbour: its code moves
        assert not others_equal
        neighbour = keys[:, 1] == 100
        assert (mu[neighbour] - mu_edited[neighbour]).abs().max() > 1e-6


def test_sampled_codes_depend_on_their_own_seed_and_id_only():
    ids = torch.tensor([0, 5, INT64_MAX, INT64_MIN, -1, 2**40])
    codes = sample_codes(ids, 6, seed=3)
    assert codes.shape == (6, 6) and codes.dtype == torch.float32
    # any order, any subset, any company: the same code per (seed, id)
    permutation = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(sample_codes(ids[permutation], 6, seed=3), codes[permutation], rtol=0, atol=0)
    torch.testing.assert_close(sample_codes(ids[2:3], 6, seed=3), codes[2:3], rtol=0, atol=0)
    # per-id seeds: only the id given another seed changes
    seeds = torch.full((6,), 3)
    seeds[1] = 4
    reseeded = sample_codes(ids, 6, seed=seeds)
    assert torch.equal(reseeded[[0, 2, 3, 4, 5]], codes[[0, 2, 3, 4, 5]])
    assert not torch.equal(reseeded[1], codes[1])
    # different seeds and different ids give different codes
    assert not torch.equal(sample_codes(ids, 6, seed=4), codes)
    assert len({tuple(row) for row in codes.tolist()}) == 6


def test_sampled_codes_are_standard_normal():
    codes = sample_codes(torch.arange(4000), 8, seed=11).double()
    assert abs(codes.mean()) < 0.03
    assert abs(codes.std() - 1) < 0.03
    # channels uncorrelated
    correlation = torch.corrcoef(codes.t())
    assert (correlation - torch.eye(8, dtype=torch.float64)).abs().max() < 0.06
    # tails of a normal: about 4.6% beyond 2 sd
    assert 0.035 < float((codes.abs() > 2).double().mean()) < 0.057


def test_kl_divergence_matches_its_formula_and_reaches_the_encoder():
    mu = torch.randn(5, 3, dtype=torch.float64)
    logvar = torch.randn(5, 3, dtype=torch.float64)
    expected = 0.0
    for s in range(5):
        for d in range(3):
            var = torch.exp(logvar[s, d])
            # KL(N(m, v) || N(0, 1)) = (v + m^2 - 1 - log v) / 2
            expected += 0.5 * (var + mu[s, d] ** 2 - 1 - logvar[s, d])
    torch.testing.assert_close(kl_divergence(mu, logvar, num_images=2), expected / 2, rtol=1e-12, atol=1e-12)
    assert float(kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3))) == 0.0

    torch.manual_seed(0)
    generator = Generator(NUM_CLASSES, size=(32, 64), ngf=2, spade_hidden=8, style="instance", style_dim=3)
    semantic, panoptic = _scene(32, 64)
    mu, logvar, _, _ = generator.encode(torch.rand(1, 3, 32, 64) * 2 - 1, panoptic)
    kl_divergence(mu, logvar).backward()
    for name, parameter in generator.style_encoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_style_hole_features_equal_the_convolution_of_the_code_map():
    torch.manual_seed(0)
    _, panoptic = _scene()
    codes = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    weight = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    positions = torch.tensor([[0, 0, 0], [0, 3, 7], [0, 13, 1], [0, 15, 15], [0, 8, 6]])
    dense = panoptic_conv2d(codes, panoptic, weight, backend="torch")
    expected = dense[positions[:, 0], :, positions[:, 1], positions[:, 2]]
    torch.testing.assert_close(style_hole_features(codes, panoptic, positions, weight, partial=True), expected)
    plain = torch.nn.functional.conv2d(codes, weight, padding=1)
    expected = plain[positions[:, 0], :, positions[:, 1], positions[:, 2]]
    torch.testing.assert_close(style_hole_features(codes, panoptic, positions, weight, partial=False), expected)


def _style_generator(**kwargs) -> Generator:
    torch.manual_seed(0)
    return Generator(NUM_CLASSES, size=(32, 64), ngf=2, spade_hidden=8, style="instance", style_dim=3, **kwargs)


def test_style_is_off_by_default_and_changes_nothing(tmp_path):
    torch.manual_seed(0)
    default = Generator(NUM_CLASSES, size=(32, 64), ngf=2, spade_hidden=8)
    torch.manual_seed(0)
    explicit = Generator(NUM_CLASSES, size=(32, 64), ngf=2, spade_hidden=8, style="none")
    assert default.state_dict().keys() == explicit.state_dict().keys()
    assert not any("style" in key for key in default.state_dict())
    assert "style" not in default.config and "style_dim" not in default.config
    semantic, panoptic = _scene(32, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            default.eval()(semantic, panoptic), explicit.eval()(semantic, panoptic), rtol=0, atol=0
        )
    default.save_pretrained(tmp_path)
    assert "style" not in json.loads((tmp_path / "config.json").read_text())
    with pytest.raises(ValueError, match="no styles"):
        default(semantic, panoptic, torch.zeros(1, 3, 32, 64))
    with pytest.raises(ValueError, match="no styles"):
        default.style_map(panoptic)


@pytest.mark.parametrize(("conv", "upsample"), [("panoptic", "panoptic"), ("standard", "nearest")])
def test_style_generator_uses_its_codes_saves_and_loads(tmp_path, conv, upsample):
    generator = _style_generator(conv=conv, upsample=upsample).eval()
    semantic, panoptic = _scene(32, 64)
    codes = generator.style_map(panoptic, seed=1)
    with torch.no_grad():
        image = generator(semantic, panoptic, codes)
        assert not torch.equal(image, generator(semantic, panoptic, generator.style_map(panoptic, seed=2)))
        torch.testing.assert_close(
            generator(semantic, panoptic), generator(semantic, panoptic, generator.style_map(panoptic))
        )
    generator.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["style"], config["style_dim"]) == ("instance", 3)
    loaded = Generator.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(semantic, panoptic, codes), image, rtol=0, atol=0)
    with pytest.raises(ValueError, match="code map must be"):
        generator(semantic, panoptic, torch.zeros(1, 2, 32, 64))
    with pytest.raises(ValueError, match="style must be one of"):
        Generator(NUM_CLASSES, size=(32, 64), style="global")


def test_restyle_changes_one_segment_code_bit_for_bit():
    generator = _style_generator()
    _, panoptic = _scene(32, 64)
    before = generator.style_map(panoptic, seed=5)
    after = generator.style_map(panoptic, seed=5, restyle={101: 9})
    inside = (panoptic == 101).unsqueeze(1).expand_as(before)
    assert torch.equal(before[~inside], after[~inside])
    assert (before[inside] != after[inside]).all()
    # a newly painted instance gets a fresh code and every other segment keeps its own
    painted = panoptic.clone()
    painted[:, 20:24, 20:24] = 555
    repainted = generator.style_map(painted, seed=5)
    untouched = (painted != 555).unsqueeze(1).expand_as(before)
    assert torch.equal(repainted[untouched], before[untouched])
    # given codes win, except for a restyled id
    given = generator.style_map(panoptic, seed=5, codes={0: torch.ones(3)})
    assert torch.equal(given[:, :, 0, 0], torch.ones(1, 3))


def test_encoder_under_triton_interpreter_and_bf16():
    torch.manual_seed(0)
    encoder = StyleEncoder(2, channels=4, num_down=1, backend="torch")
    _, panoptic = _scene()
    panoptic = panoptic[:, ::2, ::2].contiguous()  # 8x8
    image = torch.rand(1, 3, 8, 8) * 2 - 1
    reference, _, _, _ = encoder(image, panoptic)
    encoder.backend = "triton"
    for module in encoder.modules():
        if hasattr(module, "backend"):
            module.backend = "triton"
    try:
        triton_mu, _, _, _ = encoder(image, panoptic)
    except RuntimeError as error:  # Triton absent or without its interpreter on this machine
        pytest.skip(f"Triton engine unavailable: {error}")
    torch.testing.assert_close(triton_mu, reference, rtol=1e-4, atol=1e-5)
    encoder.backend = "torch"
    for module in encoder.modules():
        if hasattr(module, "backend"):
            module.backend = "torch"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_mu, _, _, _ = encoder(image, panoptic)
    assert bf16_mu.dtype == torch.float32  # the segment reduction accumulates in float32
    torch.testing.assert_close(bf16_mu, reference, rtol=0.05, atol=0.02)
