"""Generator: the four variants, the paper's parameter budget, hole filling, persistence, bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pansynth.models import Generator
from pansynth.ops import semantic_one_hot

NUM_CLASSES = 5
SIZE = 64  # 64x64, "normal" -> 2x2 start


def _maps(n: int = 2, height: int = SIZE, width: int = SIZE, seed: int = 0):
    """Semantic and panoptic maps with odd-aligned, thin and small segments at every scale."""
    generator = torch.Generator().manual_seed(seed)
    ys = torch.arange(height)[:, None]
    xs = torch.arange(width)[None, :]
    semantic = torch.zeros(n, height, width, dtype=torch.long)
    semantic[:, (ys // 11 + xs // 13).expand(height, width) % 2 == 1] = 1
    semantic[:, 5:40, 7:30] = 2
    semantic[:, 21:22, :] = 3  # one-pixel line: new at the highest resolution only
    semantic[:, 45:58, 3:61] = 4
    semantic[-1] = torch.where(torch.rand(height, width, generator=generator) < 0.05, 3, semantic[-1])
    panoptic = semantic * 1000 + 17
    panoptic[:, 5:40, 18:30] += 5  # two instances of class 2 touching at an odd column
    panoptic[:, 45:58, 33:61] += 9  # two instances of class 4
    return semantic, panoptic


def _parameter_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


@pytest.mark.parametrize("conv", ["standard", "panoptic"])
@pytest.mark.parametrize("upsample", ["nearest", "panoptic"])
def test_forward_backward_all_variants_reach_every_parameter(conv, upsample):
    torch.manual_seed(0)
    generator = Generator(NUM_CLASSES, ngf=4, spade_hidden=16, conv=conv, upsample=upsample, size=(SIZE, SIZE))
    semantic, panoptic = _maps()
    image = generator(semantic, panoptic)
    assert image.shape == (2, 3, SIZE, SIZE)
    assert image.abs().max() <= 1
    (image * torch.randn_like(image)).sum().backward()
    for name, parameter in generator.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name
    if upsample == "panoptic":
        # Every stage has unmatched pixels (the maps are built so), so hole filling is wired in.
        assert generator.upsample_layers is not None
        assert any("proj" in name for name, _ in generator.named_parameters())


def test_paper_generator_has_baseline_parameters_plus_hole_filling_convs():
    # SPADE's hidden width (128) by default; no forward pass here, so the full width is cheap.
    paper = Generator(NUM_CLASSES, ignore_index=255, ngf=4, conv="panoptic", upsample="panoptic", size=(SIZE, SIZE))
    assert paper.head_0.norm_0.shared[0].weight.shape[0] == 128
    baseline = Generator(
        NUM_CLASSES,
        ignore_index=255,
        ngf=4,
        conv="standard",
        upsample="nearest",
        boundary=False,
        size=(SIZE, SIZE),
    )
    assert paper.config["boundary"] is False
    paper_shapes, baseline_shapes = _parameter_shapes(paper), _parameter_shapes(baseline)
    extra = {name: shape for name, shape in paper_shapes.items() if name not in baseline_shapes}
    assert set(baseline_shapes) <= set(paper_shapes)
    assert all(paper_shapes[name] == shape for name, shape in baseline_shapes.items())
    nf = 4
    # x2 upsamplings of the "normal" generator work on 16nf, 16nf, 8nf, 4nf, 2nf channels:
    # the 1x1 convs project the shared first layer's 16nf channels to the last three.
    expected = {}
    for index, channels in [(2, 8 * nf), (3, 4 * nf), (4, 2 * nf)]:
        expected[f"upsample_layers.{index}.proj.weight"] = (channels, 16 * nf, 1, 1)
        expected[f"upsample_layers.{index}.proj.bias"] = (channels,)
    assert extra == expected
    # The first layer is shared: its weights appear once, under "first_layer".
    assert sum(1 for name in paper.state_dict() if name.endswith("weight") and "first_layer" in name.split(".")) == 1

    # With SPADE's default boundary=True, the only difference is one more label input channel.
    spade = Generator(NUM_CLASSES, ignore_index=255, ngf=4, conv="standard", upsample="nearest", size=(SIZE, SIZE))
    spade_shapes = _parameter_shapes(spade)
    assert set(spade_shapes) == set(baseline_shapes)
    differing = {name for name in spade_shapes if spade_shapes[name] != baseline_shapes[name]}
    assert "first_layer.weight" in differing
    label_channels = NUM_CLASSES + 1
    for name in differing:
        expected_shape = list(baseline_shapes[name])
        assert expected_shape[1] == label_channels, name
        expected_shape[1] += 1
        assert spade_shapes[name] == tuple(expected_shape), name
    # Exactly the layers that read the label map: the first layer and every SPADE shared conv.
    assert differing == {"first_layer.weight"} | {name for name in baseline_shapes if name.endswith("shared.0.weight")}


def test_single_segment_panoptic_upsampling_equals_nearest():
    torch.manual_seed(2)
    paper = Generator(
        NUM_CLASSES, ngf=4, spade_hidden=16, conv="panoptic", upsample="panoptic", size=(SIZE, SIZE)
    ).eval()
    nearest = Generator(
        NUM_CLASSES, ngf=4, spade_hidden=16, conv="panoptic", upsample="nearest", size=(SIZE, SIZE)
    ).eval()
    missing, unexpected = nearest.load_state_dict(paper.state_dict(), strict=False)
    assert missing == [] and all(".proj." in name for name in unexpected)
    semantic, _ = _maps(n=1)
    panoptic = torch.full_like(semantic, 42)
    torch.testing.assert_close(paper(semantic, panoptic), nearest(semantic, panoptic))
    # With several segments the two differ (alignment correction and hole filling act).
    semantic, panoptic = _maps(n=1)
    assert not torch.allclose(paper(semantic, panoptic), nearest(semantic, panoptic))


def test_generator_modes_batch_sizes_and_norms():
    semantic, panoptic = _maps(n=2)
    for norm in ("instance", "batch", "syncbatch"):
        generator = Generator(NUM_CLASSES, ngf=4, spade_hidden=16, size=(SIZE, SIZE), norm=norm)
        first = generator(semantic, panoptic)
        assert first.shape == (2, 3, SIZE, SIZE)
        generator.eval()
        single = generator(semantic[:1], panoptic[:1])
        assert single.shape == (1, 3, SIZE, SIZE) and torch.isfinite(single).all()
        if norm == "instance":  # per-sample statistics: batching does not change a sample's output
            torch.testing.assert_close(single, generator(semantic, panoptic)[:1], atol=1e-5, rtol=1e-4)


def test_num_upsampling_layers_and_non_square_size():
    generator = Generator(NUM_CLASSES, size=(32, 64), ngf=4, spade_hidden=16, conv="standard", upsample="nearest")
    assert generator.start_size == (1, 2) and generator.output_size == (32, 64)
    semantic, panoptic = _maps(n=1, height=32, width=64)
    assert generator(semantic, panoptic).shape == (1, 3, 32, 64)
    more = Generator(NUM_CLASSES, ngf=2, spade_hidden=16, size=(64, 128), num_upsampling_layers="more")
    assert more.output_size == (64, 128) and len(more.upsample_layers) == 6
    most = Generator(NUM_CLASSES, ngf=2, spade_hidden=16, size=(128, 256), num_upsampling_layers="most")
    assert most.output_size == (128, 256) and len(most.upsample_layers) == 7
    assert most.conv_img.weight.shape == (3, 1, 3, 3)  # the extra up_4 block halves ngf
    semantic, panoptic = _maps(n=1, height=64, width=128)
    with torch.no_grad():
        assert more.eval()(semantic, panoptic).shape == (1, 3, 64, 128)


def test_save_pretrained_round_trip(tmp_path):
    torch.manual_seed(4)
    generator = Generator(NUM_CLASSES, ignore_index=255, ngf=4, spade_hidden=16, size=(SIZE, SIZE))
    semantic, panoptic = _maps(n=2)
    semantic[0, :3] = 255
    generator(semantic, panoptic)  # a training step moves the spectral-norm power-iteration vectors
    generator.eval()
    expected = generator(semantic, panoptic)
    out_dir = generator.save_pretrained(tmp_path / "export")
    config = json.loads((out_dir / "config.json").read_text())
    assert config["num_classes"] == NUM_CLASSES and config["ignore_index"] == 255 and config["conv"] == "panoptic"
    assert sorted(p.name for p in out_dir.iterdir()) == ["config.json", "model.safetensors"]
    loaded = Generator.from_pretrained(out_dir)
    assert not loaded.training and loaded.config == generator.config
    torch.testing.assert_close(loaded(semantic, panoptic), expected)
    # NHWC weights (the default on CUDA): the same images; CPU stays NCHW unless asked
    assert loaded.first_layer.weight.is_contiguous()
    nhwc = Generator.from_pretrained(out_dir, channels_last=True)
    assert nhwc.first_layer.weight.is_contiguous(memory_format=torch.channels_last)
    assert not nhwc.first_layer.weight.is_contiguous()
    torch.testing.assert_close(nhwc(semantic, panoptic), expected)
    assert Generator(**generator.config).config == generator.config
    # Saving again replaces the files atomically.
    generator.save_pretrained(out_dir)
    assert sorted(p.name for p in out_dir.iterdir()) == ["config.json", "model.safetensors"]
    # deepcopy (an EMA copy) keeps the first layer shared with the hole-filling stages.
    twin = copy.deepcopy(generator)
    assert all(layer.first_layer is twin.first_layer for layer in twin.upsample_layers)


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        Generator.from_pretrained(tmp_path / "nowhere")
    small = Generator(NUM_CLASSES, ngf=4, spade_hidden=16, size=(SIZE, SIZE))
    small.save_pretrained(tmp_path / "a")
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    config["ngf"] = 8
    (tmp_path / "a" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match the generator"):
        Generator.from_pretrained(tmp_path / "a")
    config["ngf"], config["wings"] = 4, 2
    (tmp_path / "a" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unknown generator arguments"):
        Generator.from_pretrained(tmp_path / "a")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        small.save_pretrained(tmp_path / "file")


def test_bad_inputs_raise_clear_errors():
    generator = Generator(NUM_CLASSES, ngf=4, spade_hidden=16, size=(SIZE, SIZE))
    semantic, panoptic = _maps(n=1)
    with pytest.raises(ValueError, match="expects 64x64"):
        generator(semantic[:, :32], panoptic[:, :32])
    with pytest.raises(ValueError, match=r"semantic map holds class index 5, expected values in \[0, 4\]"):
        generator(torch.full_like(semantic, NUM_CLASSES), panoptic)
    with pytest.raises(ValueError, match="panoptic must be a .* integer tensor.*float32"):
        generator(semantic, panoptic.float())
    with pytest.raises(ValueError, match="must have the same shape"):
        generator(semantic, panoptic[:, :, :32])
    with pytest.raises(ValueError, match="not a one-hot map"):
        generator(semantic_one_hot(semantic, NUM_CLASSES), panoptic)
    with pytest.raises(ValueError, match="upsample must be"):
        Generator(NUM_CLASSES, upsample="bilinear")
    with pytest.raises(ValueError, match=r"multiples of 2\*\*5 = 32"):
        Generator(NUM_CLASSES, size=(16, 16))
    with pytest.raises(ValueError, match=r"multiples of 2\*\*5"):
        Generator(NUM_CLASSES, size=(64, 48))
    with pytest.raises(ValueError, match="1x1 map"):
        Generator(NUM_CLASSES, size=(32, 32))
    with pytest.raises(ValueError, match=r"size must be \(H, W\)"):
        Generator(NUM_CLASSES, size=64)
    with pytest.raises(ValueError, match="num_classes must be an integer"):
        Generator(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_paper_generator_on_cuda_with_autocast(monkeypatch):
    # fp32 on CUDA is compared with the CPU below: TF32 (cuDNN's default) would round at 1e-3.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(5)
    generator = Generator(NUM_CLASSES, ngf=4, spade_hidden=16, size=(SIZE, SIZE)).cuda()
    semantic, panoptic = _maps()
    semantic, panoptic = semantic.cuda(), panoptic.cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        image = generator(semantic, panoptic)
    image.float().mean().backward()
    assert torch.isfinite(image).all()
    assert all(p.grad is not None for p in generator.parameters())
    generator.eval()
    cpu = Generator(NUM_CLASSES, ngf=4, spade_hidden=16, size=(SIZE, SIZE))
    cpu.load_state_dict({k: v.cpu() for k, v in generator.state_dict().items()})
    torch.testing.assert_close(
        generator(semantic, panoptic).cpu(), cpu.eval()(semantic.cpu(), panoptic.cpu()), atol=1e-4, rtol=1e-4
    )


COCO_SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "coco_stuff_samples"


def _coco_maps(count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real COCO-Stuff label/instance maps, nearest-resized; panoptic id = label * 256 + inst."""
    from PIL import Image

    semantic, panoptic = [], []
    for label_path in sorted((COCO_SAMPLES / "train_label").glob("*.png"))[:count]:
        label = Image.open(label_path).resize((size, size), Image.NEAREST)
        inst = Image.open(COCO_SAMPLES / "train_inst" / label_path.name).resize((size, size), Image.NEAREST)
        label_t = torch.from_numpy(np.array(label)).long()
        semantic.append(label_t)
        panoptic.append(label_t * 256 + torch.from_numpy(np.array(inst)).long())
    return torch.stack(semantic), torch.stack(panoptic)


@pytest.mark.skipif(not (COCO_SAMPLES / "train_label").is_dir(), reason="COCO-Stuff samples not present")
def test_paper_generator_on_real_coco_maps_fills_holes_at_every_projected_stage():
    torch.manual_seed(6)
    semantic, panoptic = _coco_maps(2, SIZE)
    generator = Generator(182, ignore_index=255, ngf=4, spade_hidden=16, size=(SIZE, SIZE))
    image = generator(semantic, panoptic)
    image.square().mean().backward()
    for index in (2, 3, 4):  # real maps leave holes at every stage that has a 1x1 projection
        assert generator.upsample_layers[index].proj.weight.grad.abs().sum() > 0


class _LiteralBatchNorm(torch.nn.Module):
    """Batch normalization written out: per channel over (N, H, W), biased variance in training;
    running statistics updated with momentum 0.1 (unbiased variance) and used in eval mode."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels, dtype=torch.float64))
        self.register_buffer("var", torch.ones(channels, dtype=torch.float64))

    def forward(self, x):
        if self.training:
            count = x.shape[0] * x.shape[2] * x.shape[3]
            mean = x.sum(dim=(0, 2, 3)) / count
            var = ((x - mean[None, :, None, None]) ** 2).sum(dim=(0, 2, 3)) / count
            self.mean = 0.9 * self.mean + 0.1 * mean.detach()
            self.var = 0.9 * self.var + 0.1 * var.detach() * count / (count - 1)
        else:
            mean, var = self.mean, self.var
        return (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + 1e-5)


def _with_literal_norms(generator: Generator) -> Generator:
    from pansynth.models.spade import SPADENorm

    reference = copy.deepcopy(generator)
    for module in reference.modules():
        if isinstance(module, SPADENorm):
            module.norm = _LiteralBatchNorm(module.norm_channels)
    return reference


@pytest.mark.parametrize("norm,process_group", [("batch", False), ("syncbatch", False), ("syncbatch", True)])
def test_batch_norm_modes_match_a_literal_batch_norm(norm, process_group, tmp_path):
    """Training mode normalizes with the statistics of the whole batch, eval mode with the running
    statistics those updates left; a CPU process group (the DDP path of sync batch norm) too."""
    import torch.distributed as dist

    torch.manual_seed(7)
    generator = Generator(NUM_CLASSES, ngf=4, spade_hidden=16, size=(32, 32), norm=norm).double()
    reference = _with_literal_norms(generator)
    semantic, panoptic = _maps(n=3, height=32, width=32)
    semantic[1], panoptic[1] = semantic[1].flip(-1), panoptic[1].flip(-1)  # three different maps
    semantic[2], panoptic[2] = semantic[2].flip(-2), panoptic[2].flip(-2)
    if process_group:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        with torch.no_grad():
            trained = generator.train()(semantic, panoptic)
            expected = reference.train()(semantic, panoptic)
            torch.testing.assert_close(trained, expected, rtol=1e-9, atol=1e-9)
            # Batch statistics: a sample's image depends on the other samples of its batch.
            assert not torch.allclose(generator(semantic[:2], panoptic[:2]), trained[:2], atol=1e-4)
            reference(semantic[:2], panoptic[:2])  # the same second update of the running statistics
            evaluated = generator.eval()(semantic, panoptic)
            torch.testing.assert_close(evaluated, reference.eval()(semantic, panoptic), rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(generator(semantic[:1], panoptic[:1]), evaluated[:1], rtol=1e-9, atol=1e-9)
    finally:
        if process_group:
            dist.destroy_process_group()
