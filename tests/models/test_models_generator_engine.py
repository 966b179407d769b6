"""The generator and the ops' engines: per-scale plans, edited maps, inference mode, half precision,
torch.compile."""

from __future__ import annotations

import contextlib
import copy
import sys

import pytest
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

import pansynth.models.spade as spade
from pansynth.models import Generator, MultiscaleDiscriminator
from pansynth.models.losses import feature_matching_loss, hinge_loss_d, hinge_loss_g
from pansynth.models.style import StyleEncoder
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


# --- the paper's generator trained on the Triton engine ------------------------------------------

TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _triton_runs() -> bool:
    from pansynth.ops.backend import triton_available

    return triton_available(torch.device(TRITON_DEVICE))


@pytest.fixture
def wide_interpreter_blocks(monkeypatch):
    """Under the interpreter every program costs Python time: wide blocks keep a whole generator's
    training step to seconds (the kernel tests in tests/ops cover the small, ragged blocks)."""
    if TRITON_DEVICE == "cpu":
        from pansynth.ops._triton import _kernels

        wide = {"conv": {"BLOCK_M": 512}, "weight_grad": {"BLOCK_P": 512}, "upsample": {"BLOCK_P": 512}}
        for name, blocks in wide.items():
            monkeypatch.setitem(_kernels.INTERPRETER_CONFIGS, name, {**_kernels.INTERPRETER_CONFIGS[name], **blocks})


# Ops that make the host wait for the device: reads of values, and ops whose output size depends on them.
HOST_SYNCS = {"_local_scalar_dense", "item", "nonzero", "masked_select", "masked_scatter", "unique", "_unique",
              "_unique2", "unique_dim", "unique_consecutive", "bincount", "is_nonzero", "equal", "allclose",
              "repeat_interleave"}  # fmt: skip


class HostSyncCounter(TorchDispatchMode):
    """Records every host-synchronising op (and boolean-mask indexing) dispatched inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.allowed = False  # set while the inputs are validated (the one place allowed to read values)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        indices = args[1] if name.startswith(("index", "_index_put")) and len(args) > 1 else ()
        mask_index = any(isinstance(i, Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())
        if (name in HOST_SYNCS or mask_index) and not self.allowed:
            self.found.append(name)
        return func(*args, **(kwargs or {}))


def _gan_step_gradients(
    backend: str, compile: bool = False, syncs: HostSyncCounter | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """One discriminator and one generator step of the paper's model (hinge + feature matching):
    the generated images and every parameter's gradient, G's and D's. With ``syncs``, the
    generator's forward pass and both backward passes run inside that counter."""
    torch.manual_seed(6)
    generator = Generator(NUM_CLASSES, size=(32, 64), ngf=1, spade_hidden=4, spectral=False, backend=backend)
    discriminator = MultiscaleDiscriminator(NUM_CLASSES, ndf=4, num_scales=2, num_layers=2, spectral=False)
    generator.to(TRITON_DEVICE), discriminator.to(TRITON_DEVICE)
    semantic, panoptic = (m.to(TRITON_DEVICE) for m in _maps(1, 64))
    semantic, panoptic = semantic[:, 16:48], panoptic[:, 16:48]
    real = torch.rand(1, 3, 32, 64, generator=torch.Generator().manual_seed(7)).to(TRITON_DEVICE) * 2 - 1
    if compile:
        torch._dynamo.reset()
    run = torch.compile(generator, backend="aot_eager", fullgraph=True) if compile else generator
    counted = syncs if syncs is not None else contextlib.nullcontext()
    if syncs is not None:
        check_inputs = generator.check_inputs

        def allowed_check(*args):
            syncs.allowed = True
            check_inputs(*args)
            syncs.allowed = False

        generator.check_inputs = allowed_check
    with counted:
        fake = run(semantic, panoptic)
    d_loss = hinge_loss_d(discriminator(real, semantic, panoptic), discriminator(fake.detach(), semantic, panoptic))
    with counted:
        d_loss.backward()
    grads = {f"D.{name}": p.grad.clone() for name, p in discriminator.named_parameters()}
    discriminator.zero_grad()
    fake_outputs, real_outputs = discriminator(fake, semantic, panoptic), discriminator(real, semantic, panoptic)
    g_loss = hinge_loss_g(fake_outputs) + 10 * feature_matching_loss(real_outputs, fake_outputs)
    with counted:
        g_loss.backward()
    for name, parameter in generator.named_parameters():
        # (a stage without holes leaves its projection unused: None in eager mode, zeros compiled)
        grads[f"G.{name}"] = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
    return fake.detach(), grads


@pytest.mark.skipif(not _triton_runs(), reason="Triton kernels need CUDA, or TRITON_INTERPRET=1 and triton")
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_the_paper_generator_trains_on_the_triton_engine_with_the_torch_engines_gradients(
    compile, wide_interpreter_blocks
):
    """Training steps on the Triton engine: the same images and gradients as the PyTorch engine's.

    The hole filling writes into Algorithm 1's output, which on this engine is a custom op's
    output: it must be the op's own tensor, not a view (autograd forbids writing into those).
    And nothing in the eager forward or backward pass waits for the device (no nonzero, item,
    boolean-mask indexing...) but the one check of the class indices at the input."""
    expected_fake, expected = _gan_step_gradients("torch")
    syncs = HostSyncCounter() if not compile else None
    fake, grads = _gan_step_gradients("triton", compile=compile, syncs=syncs)
    if syncs is not None:
        assert syncs.found == []
    torch.testing.assert_close(fake, expected_fake, rtol=1e-5, atol=1e-5)
    assert grads.keys() == expected.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)
    holes = [name for name in grads if ".proj." in name and grads[name].abs().sum() > 0]
    assert holes  # some stage filled holes, and its projection learned from them


@pytest.mark.skipif(not _triton_runs(), reason="Triton kernels need CUDA, or TRITON_INTERPRET=1 and triton")
def test_the_triton_engine_reads_one_neighbour_mask_per_scale_in_forward_and_backward(
    monkeypatch, wide_interpreter_blocks
):
    """The mask of eq. 1 is derived once per scale and shared by every panoptic convolution of that
    scale, forward and backward (not recomputed per layer or by the kernels' launchers)."""
    from pansynth.ops import PanopticConv2d, mask_plan
    from pansynth.ops._triton import _launch

    torch.manual_seed(8)
    generator = Generator(NUM_CLASSES, size=(32, 64), ngf=1, spade_hidden=4, spectral=False, backend="triton")
    generator.to(TRITON_DEVICE)
    semantic, panoptic = (m.to(TRITON_DEVICE)[:, 16:48] for m in _maps(1, 64))
    built, fed = [], []
    monkeypatch.setattr(spade, "mask_plan", lambda p, k: built.append((tuple(p.shape), k)) or mask_plan(p, k))

    def launcher_computes(*args):
        raise AssertionError("a launcher computed its own mask")

    monkeypatch.setattr(_launch, "_neighbour_mask", launcher_computes)
    for module in generator.modules():
        if isinstance(module, PanopticConv2d) and module.kernel_size > 1:
            module.register_forward_pre_hook(lambda m, args: fed.append(((1, *args[0].shape[-2:]), m.kernel_size)))
    generator(semantic, panoptic).square().mean().backward()
    assert len(fed) > len(set(fed)) > 1  # several layers per scale, several scales
    assert sorted(built) == sorted(set(fed))
    assert all(p.grad is not None for p in generator.parameters() if p.requires_grad and p.dim() == 4)


# --- NHWC end to end: no layout copies around the Triton kernels ---------------------------------


class LayoutCopies:
    """Counts the layout copies made around the Triton kernels: the launchers' and custom ops' layout
    helpers (calls that return a new tensor), and channels_last clones of activations and gradients
    (the ops' autograd formulas); records whether the forward convolution kernel reads its weight in place."""

    def __init__(self, monkeypatch) -> None:
        from pansynth.ops import _triton_ops
        from pansynth.ops._triton import _launch

        self.copies: list[tuple[str, str, tuple[int, ...]]] = []
        self.phase = "forward"
        self.forward_convs = 0
        self.weights_read_in_place = 0
        helpers = ((_launch, "_nhwc_contiguous"), (_launch, "_channels_inner"), (_triton_ops, "_as_channels_last"))
        for module, name in helpers:
            monkeypatch.setattr(module, name, self._counting(name, getattr(module, name)))
        triton_package = sys.modules[_launch.__name__.rpartition(".")[0]]
        conv2d_forward, launch = triton_package.conv2d_forward, _launch._launch
        weights: list[Tensor] = []

        def recording_conv2d_forward(input, panoptic, weight, *args, **kwargs):
            weights.append(weight)
            return conv2d_forward(input, panoptic, weight, *args, **kwargs)

        def recording_launch(kernel_name, config_name, device, grid, *args, **meta):
            if kernel_name == "conv" and meta.get("FORWARD"):
                self.forward_convs += 1
                # The (O, k²C) weight operand: the layer's weight (the parameter, or spectral norm's
                # W / sigma) read in its own storage, not a re-laid-out copy.
                weight = weights.pop()
                self.weights_read_in_place += any(
                    isinstance(a, Tensor) and a.dim() == 2 and a.numel() == weight.numel()
                    and a.untyped_storage().data_ptr() == weight.untyped_storage().data_ptr()
                    for a in args
                )  # fmt: skip
            return launch(kernel_name, config_name, device, grid, *args, **meta)

        monkeypatch.setattr(triton_package, "conv2d_forward", recording_conv2d_forward)
        monkeypatch.setattr(_launch, "_launch", recording_launch)

    def _counting(self, name, helper):
        def counted(tensor, *args, **kwargs):
            out = helper(tensor, *args, **kwargs)
            # a copy: new memory (a view of the same memory with other strides on size-1 dims is none)
            if out.untyped_storage().data_ptr() != tensor.untyped_storage().data_ptr():
                self.copies.append((self.phase, name, tuple(tensor.shape)))
            return out

        return counted

    def mode(self) -> TorchDispatchMode:
        copies = self

        class ChannelsLastClones(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func.overloadpacket.__name__ == "clone" and kwargs.get("memory_format") == torch.channels_last:
                    # (the forward pass's own conversions of the label map, which needs no gradient, are fine)
                    if copies.phase == "backward" or args[0].requires_grad:
                        copies.copies.append((copies.phase, "clone(channels_last)", tuple(args[0].shape)))
                return func(*args, **kwargs)

        return ChannelsLastClones()


@pytest.mark.skipif(not _triton_runs(), reason="Triton kernels need CUDA, or TRITON_INTERPRET=1 and triton")
@pytest.mark.parametrize("style", ["none", "instance"])
def test_a_channels_last_generator_trains_on_the_triton_engine_without_layout_copies(
    style, monkeypatch, wide_interpreter_blocks
):
    """With its weights stored channels_last (``model.to(memory_format=torch.channels_last)``), the
    paper's generator runs its forward and backward passes NHWC end to end on the Triton engine:
    norms, modulations, residual adds, upsampling and hole filling keep the layout, so neither the
    kernels' launchers nor the custom ops copy an activation or a gradient, and the forward
    convolutions read their weights in place (a view of the (O, k, k, C) storage). The images and
    gradients equal the NCHW model's on the PyTorch engine. With styles, the code map joins the label
    map and the first layer's input."""
    torch.manual_seed(8)
    # ngf=2: every feature map has more than one channel (see the report of the launchers' stride checks)
    kwargs = dict(size=(32, 64), ngf=2, spade_hidden=4, style=style)
    reference = Generator(NUM_CLASSES, backend="torch", **kwargs)
    generator = Generator(NUM_CLASSES, backend="triton", **kwargs)
    generator.load_state_dict(reference.state_dict())
    generator.to(TRITON_DEVICE).to(memory_format=torch.channels_last)
    semantic, panoptic = (m.to(TRITON_DEVICE) for m in _maps(1, 64, seed=3))
    semantic, panoptic = semantic[:, 16:48], panoptic[:, 16:48]
    target = torch.rand(1, 3, 32, 64, generator=torch.Generator().manual_seed(9)).to(TRITON_DEVICE)

    copies = LayoutCopies(monkeypatch)
    with copies.mode():
        fake = generator(semantic, panoptic)
    copies.phase = "backward"
    with copies.mode():
        (fake - target).square().mean().backward()
    assert copies.copies == [], copies.copies
    assert copies.forward_convs >= 10 and copies.weights_read_in_place == copies.forward_convs
    assert fake.is_contiguous(memory_format=torch.channels_last)

    expected = reference(semantic.cpu(), panoptic.cpu())
    (expected - target.cpu()).square().mean().backward()
    torch.testing.assert_close(fake.cpu(), expected, rtol=1e-5, atol=1e-5)
    for (name, parameter), expected_parameter in zip(generator.named_parameters(), reference.parameters()):
        expected_grad = expected_parameter.grad
        if expected_grad is None:  # (a stage without holes leaves its projection unused)
            assert parameter.grad is None or not parameter.grad.any(), name
            continue
        torch.testing.assert_close(parameter.grad.cpu(), expected_grad, rtol=1e-4, atol=1e-6, msg=name)
    assert any(".proj." in name and p.grad is not None and p.grad.any() for name, p in generator.named_parameters())


@pytest.mark.skipif(not _triton_runs(), reason="Triton kernels need CUDA, or TRITON_INTERPRET=1 and triton")
def test_the_style_encoder_runs_nhwc_on_the_triton_engine_without_layout_copies(monkeypatch, wide_interpreter_blocks):
    """The style encoder's stride-2 stages, skips and upsampling keep a channels_last input NHWC, forward
    and backward: no layout copy around the convolutions' kernels, and the PyTorch engine's NCHW values
    and gradients."""
    torch.manual_seed(11)
    reference = StyleEncoder(4, channels=4, num_down=2, backend="torch")
    encoder = StyleEncoder(4, channels=4, num_down=2, backend="triton")
    encoder.load_state_dict(reference.state_dict())
    encoder.to(TRITON_DEVICE).to(memory_format=torch.channels_last)
    _, panoptic = _maps(1, 32, seed=5)
    panoptic = panoptic[:, :16, 8:24]
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(12)) * 2 - 1
    copies = LayoutCopies(monkeypatch)
    with copies.mode():
        mu, logvar, _, _ = encoder(image.to(TRITON_DEVICE).contiguous(memory_format=torch.channels_last), panoptic)
    copies.phase = "backward"
    with copies.mode():
        (mu.square().sum() + logvar.sum()).backward()
    # Each upsampling's gradient is a channel slice of the skip concatenation's gradient (NHWC, not
    # dense): the kernel reads it in place.
    assert copies.copies == []
    assert copies.forward_convs == 6 and copies.weights_read_in_place == 6
    expected_mu, expected_logvar, _, _ = reference(image, panoptic)
    (expected_mu.square().sum() + expected_logvar.sum()).backward()
    torch.testing.assert_close(mu.cpu(), expected_mu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logvar.cpu(), expected_logvar, rtol=1e-5, atol=1e-6)
    for (name, parameter), expected_parameter in zip(encoder.named_parameters(), reference.parameters()):
        torch.testing.assert_close(parameter.grad.cpu(), expected_parameter.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_channels_last_weights_give_the_same_images_and_gradients_on_the_pytorch_engine(norm):
    """``model.to(memory_format=torch.channels_last)`` (the trainer's ``channels_last``) changes the
    layout, not the numbers: G (spectral norm, panoptic layers, hole filling) and D, forward and backward."""
    torch.manual_seed(10)
    generator = Generator(NUM_CLASSES, size=(32, 64), ngf=2, spade_hidden=4, norm=norm, backend="torch")
    discriminator = MultiscaleDiscriminator(NUM_CLASSES, ndf=4, num_scales=2, num_layers=2)
    nhwc_generator, nhwc_discriminator = copy.deepcopy(generator), copy.deepcopy(discriminator)
    nhwc_generator.to(memory_format=torch.channels_last)
    nhwc_discriminator.to(memory_format=torch.channels_last)
    semantic, panoptic = (m[:, 16:48] for m in _maps(2, 64, seed=4))
    results = []
    for g, d in ((generator, discriminator), (nhwc_generator, nhwc_discriminator)):
        fake = g(semantic, panoptic)
        hinge_loss_g(d(fake, semantic, panoptic)).backward()
        grads = {f"G.{n}": p.grad for n, p in g.named_parameters() if p.grad is not None}
        grads.update({f"D.{n}": p.grad for n, p in d.named_parameters()})
        results.append((fake, grads))
    (fake, grads), (nhwc_fake, nhwc_grads) = results
    assert nhwc_fake.is_contiguous(memory_format=torch.channels_last) and fake.is_contiguous()
    torch.testing.assert_close(nhwc_fake, fake, rtol=1e-5, atol=1e-5)
    assert nhwc_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(nhwc_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
