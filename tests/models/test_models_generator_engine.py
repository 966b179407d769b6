"""The generator and the ops' engines: per-scale plans, edited maps, inference mode, half precision,
torch.compile."""

from __future__ import annotations

import pytest
import torch

import pansynth.models.spade as spade
from pansynth.models import Generator
from pansynth.ops import conv_plan

NUM_CLASSES = 5


def _maps(n: int = 2, size: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, NUM_CLASSES, (n, size // 8, size // 8), generator=g)
    semantic = coarse.repeat_interleave(8, 1).repeat_interleave(8, 2)
    panoptic = semantic * 1000 + (torch.arange(size) >= size // 2 + 3).long()  # instances split at an odd column
    return semantic, panoptic


def test_one_plan_per_scale_and_the_same_images(monkeypatch):
    torch.manual_seed(0)
    generator = Generator(NUM_CLASSES, size=(64, 64), ngf=4, spade_hidden=16).eval()
    semantic, panoptic = _maps()
    built = []
    monkeypatch.setattr(spade, "conv_plan", lambda p, k: built.append((tuple(p.shape), k)) or conv_plan(p, k))
    with torch.no_grad():
        planned = generator(semantic, panoptic)
    # Every scale's map (2x2 ... 64x64) is analysed once for the 3x3 convolutions, not once per layer.
    assert sorted(built) == [((2, 2**e, 2**e), 3) for e in range(1, 7)]
    monkeypatch.setattr(generator, "_plans", lambda panoptic, features: None)
    with torch.no_grad():
        unplanned = generator(semantic, panoptic)
    torch.testing.assert_close(planned, unplanned, rtol=0, atol=0)


def test_a_map_edited_in_place_between_calls_is_seen():
    torch.manual_seed(1)
    generator = Generator(NUM_CLASSES, size=(64, 64), ngf=4, spade_hidden=16).eval()
    semantic, panoptic = _maps()
    array = panoptic.numpy().copy()
    shared = torch.from_numpy(array)  # shares memory with the numpy array
    with torch.no_grad():
        first = generator(semantic, shared)
        array[:, 10:30, 5:40] += 7  # a new instance, edited through numpy
        edited = generator(semantic, shared)
        expected = generator(semantic, torch.from_numpy(array.copy()))
        shared.data[:, :, :] = panoptic  # and back, through .data
        again = generator(semantic, shared)
    torch.testing.assert_close(edited, expected, rtol=0, atol=0)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert not torch.allclose(first, edited)


def test_inference_mode():
    torch.manual_seed(2)
    generator = Generator(NUM_CLASSES, size=(64, 64), ngf=4, spade_hidden=16).eval()
    semantic, panoptic = _maps()
    with torch.no_grad():
        expected = generator(semantic, panoptic)
    with torch.inference_mode():
        got = generator(semantic, panoptic)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_bf16_autocast_on_cpu_forward_and_backward_at_a_size_with_sparse_corrections():
    torch.manual_seed(3)
    generator = Generator(NUM_CLASSES, size=(128, 128), ngf=4, spade_hidden=16)
    semantic, panoptic = _maps(1, 128)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image = generator(semantic, panoptic)
    assert image.dtype == torch.bfloat16 and torch.isfinite(image).all()
    image.float().square().mean().backward()
    # (the 1x1 projections of stages without holes in this map get no gradient)
    grads = {name: p.grad for name, p in generator.named_parameters() if ".proj." not in name}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # The reference for bf16 rounding: the same weights in the plain network (standard 3x3
    # convolutions, nearest upsampling), whose layers autocast runs in bf16 with float32 sums.
    plain = Generator(
        NUM_CLASSES, size=(128, 128), ngf=4, spade_hidden=16, conv="standard", upsample="nearest", boundary=False
    )
    missing, unexpected = plain.load_state_dict(generator.state_dict(), strict=False)
    assert missing == [] and all(".proj." in name for name in unexpected)  # only hole filling's projections

    def bf16_error(model):
        with torch.no_grad():
            full = model.eval()(semantic, panoptic)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                half = model(semantic, panoptic).float()
        return (half - full).square().mean().sqrt(), (half - full).abs().max()

    rms, largest = bf16_error(generator)
    plain_rms, plain_largest = bf16_error(plain)
    # The panoptic layers hold their sums and k²/sum(M) in float32 as the plain layers do, so they
    # may add no more than bf16's own rounding. Measured: 1.0x the plain network's RMS error and
    # 2.5x its largest error (at the few boundary pixels). A bf16 path that rescales by the square
    # root of k²/sum(M) gives 10x and 43x, which the former bound of 0.1 absolute let through
    # (the outputs of this untrained generator have a standard deviation of 0.012).
    assert rms <= 2 * plain_rms, (rms, plain_rms)
    assert largest <= 8 * plain_largest, (largest, plain_largest)


def test_torch_compile_matches_eager_and_keeps_the_panoptic_layers_in_the_graph():
    torch.manual_seed(4)
    generator = Generator(NUM_CLASSES, size=(64, 64), ngf=4, spade_hidden=16, upsample="nearest").eval()
    semantic, panoptic = _maps()
    with torch.no_grad():
        expected = generator(semantic, panoptic)
    torch._dynamo.reset()
    compiled = torch.compile(generator, backend="aot_eager", fullgraph=True)  # no graph break at all
    with torch.no_grad():
        torch.testing.assert_close(compiled(semantic, panoptic), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spectral", [False])
def test_torch_compile_of_the_paper_generator_is_one_graph_with_the_same_values_and_gradients(spectral):
    torch.manual_seed(5)
    # Without spectral norm, whose power iteration changes the weights at every training-mode call.
    generator = Generator(NUM_CLASSES, size=(64, 64), ngf=4, spade_hidden=16, spectral=spectral)
    semantic, panoptic = _maps()
    torch._dynamo.reset()
    # fullgraph: the panoptic convolutions, Algorithm 1 and hole filling are ops inside the graph.
    compiled = torch.compile(generator, backend="aot_eager", fullgraph=True)
    out = compiled(semantic, panoptic)
    out.square().mean().backward()
    compiled_grads = {name: p.grad.clone() for name, p in generator.named_parameters()}
    generator.zero_grad()
    expected = generator(semantic, panoptic)
    expected.square().mean().backward()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for name, parameter in generator.named_parameters():
        # (a stage without holes leaves its projection unused: no gradient in eager mode, zeros compiled)
        expected_grad = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
        torch.testing.assert_close(compiled_grads[name], expected_grad, rtol=1e-4, atol=1e-6, msg=name)
    assert any(".proj." in name and g.abs().sum() > 0 for name, g in compiled_grads.items())  # holes were filled
