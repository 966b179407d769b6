"""The GPU check (``python -m pansynth.ops._triton.check``): its error-measuring part run on CPU tensors
with the kernels in Triton's interpreter (``TRITON_INTERPRET=1``, conftest.py), on tiny maps.

What runs on a GPU only is the timing; here the check's references, its replay of the custom op's
backward (g~ once, both gradients, the bias gradient) and its precision modes are checked."""

from __future__ import annotations

import pytest
import torch

from pansynth.ops import _triton, panoptic_conv2d
from pansynth.ops._triton import check

pytestmark = pytest.mark.skipif(
    not _triton.is_available(torch.device("cpu")), reason="needs TRITON_INTERPRET=1 and an importable triton"
)

SHAPE = (2, 5, 6, 5, 6, 3)  # (N, C, O, H, W, k): ragged, several segments per window, batch > 1


def test_precision_modes_cover_fp32_with_and_without_tf32_bf16_and_fp16():
    names = [mode.name for mode in check.PRECISION_MODES]
    assert names == ["fp32 TF32", "fp32 TF32 off", "bf16", "fp16"]
    assert check.upsample_dtypes() == [torch.float32, torch.bfloat16, torch.float16]
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    for mode in check.PRECISION_MODES:
        with check.precision(mode):
            assert torch.backends.cudnn.allow_tf32 is mode.tf32 and torch.backends.cuda.matmul.allow_tf32 is mode.tf32
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == saved


def test_references_in_batch_chunks_match_the_pytorch_engine():
    torch.manual_seed(0)
    x, ids, w, b, g = check.conv_inputs(SHAPE, "cpu")
    out, grad_x, grad_w = check.conv_references(x, ids, w, b, g, chunk=1)
    # The PyTorch engine (pinned to literal loops in test_ops_panoptic_conv.py), float64, autograd.
    x_ref, w_ref = x.clone().requires_grad_(), w.clone().requires_grad_()
    expected = panoptic_conv2d(x_ref, ids, w_ref, b, backend="torch")
    expected.backward(g)
    torch.testing.assert_close(out, expected.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_x, x_ref.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_w, w_ref.grad, rtol=1e-12, atol=1e-12)
    whole = check.conv_references(x, ids, w, b, g, chunk=SHAPE[0])
    for chunked, at_once in zip((out, grad_x, grad_w), whole):
        torch.testing.assert_close(chunked, at_once, rtol=1e-12, atol=1e-12)


def test_conv_errors_in_every_mode_and_a_wrong_kernel_is_caught(monkeypatch, capsys):
    torch.manual_seed(1)
    results = check.check_conv(SHAPE, check.PRECISION_MODES, bench=False, device="cpu")
    errors = {result["mode"]: result["errors"] for result in results}
    assert set(errors) == {mode.name for mode in check.PRECISION_MODES}
    assert all(set(e) == {"forward", "input grad", "weight grad"} for e in errors.values())
    # fp32 (the interpreter has no TF32): exact to rounding; fp16 / bf16: the inputs' rounding.
    assert max(errors["fp32 TF32 off"].values()) < 1e-6 and max(errors["fp32 TF32"].values()) < 1e-6
    assert max(errors["fp16"].values()) < 5e-3 and max(errors["bf16"].values()) < 3e-2
    assert "fp32 TF32 off" in capsys.readouterr().out

    real = _triton.conv2d_weight_grad
    monkeypatch.setattr(check._triton, "conv2d_weight_grad", lambda *args, **kwargs: real(*args, **kwargs) * 1.01)
    torch.manual_seed(1)
    (wrong,) = check.check_conv(SHAPE, check.PRECISION_MODES[1:2], bench=False, device="cpu")
    assert wrong["errors"]["weight grad"] > 5e-3 and wrong["errors"]["forward"] < 1e-6


def test_upsample_errors_per_dtype():
    torch.manual_seed(2)
    results = check.check_upsample((2, 5, 4, 6), [torch.float32, torch.float16], bench=False, device="cpu")
    assert [result["dtype"] for result in results] == ["float32", "float16"]
    assert max(results[0]["errors"].values()) < 1e-7 and max(results[1]["errors"].values()) < 2e-3
