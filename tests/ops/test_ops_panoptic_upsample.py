"""panoptic_upsample against a literal transcription of the paper's Algorithm 1."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pansynth.ops import panoptic_conv2d, panoptic_upsample

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ID_VALUES = torch.tensor([-3, 11, 5_000_017, 2**41, 26003, 26004])


def reference_algorithm_1(features, panoptic_low, panoptic_high):
    """Algorithm 1: four passes; i is the column index, j the row index, as in the paper."""
    n_batch, channels, low_h, low_w = features.shape
    out = torch.zeros(n_batch, channels, 2 * low_h, 2 * low_w, dtype=features.dtype)
    correction = torch.zeros(n_batch, 1, 2 * low_h, 2 * low_w, dtype=features.dtype)
    for d_i, d_j in [(0, 0), (1, 0), (0, 1), (1, 1)]:  # loop k compares P^d[i//2 + d_i, j//2 + d_j]
        for n in range(n_batch):
            for i in range(2 * low_w):
                for j in range(2 * low_h):
                    col, row = i // 2 + d_i, j // 2 + d_j
                    if col >= low_w or row >= low_h:  # the candidate lies outside the map
                        continue
                    if panoptic_high[n, j, i] == panoptic_low[n, row, col] and correction[n, 0, j, i] != 1:
                        out[n, :, j, i] = features[n, :, row, col]
                        correction[n, 0, j, i] = 1
    return out, correction


def random_maps(n, low_h, low_w, generator, num_ids=6):
    high = ID_VALUES[torch.randint(0, num_ids, (n, 2 * low_h, 2 * low_w), generator=generator)]
    # Keep some structure: the low-resolution map is a subsampling of the high one, as in the generator.
    return high[:, ::2, ::2].clone(), high


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num_ids", [2, 6])
def test_matches_literal_algorithm(device, num_ids):
    g = torch.Generator().manual_seed(num_ids)
    low, high = random_maps(2, 5, 4, g, num_ids)
    features = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    expected, expected_matched = reference_algorithm_1(features, low, high)
    out, matched = panoptic_upsample(features.to(device), low.to(device), high.to(device))
    torch.testing.assert_close(out.cpu(), expected)
    torch.testing.assert_close(matched.cpu(), expected_matched)
    assert 0 < matched.mean() < 1  # both matched pixels and holes are exercised


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), low_h=st.integers(1, 4), low_w=st.integers(1, 4), independent=st.booleans())
def test_property_random_maps(seed, low_h, low_w, independent):
    g = torch.Generator().manual_seed(seed)
    low, high = random_maps(1, low_h, low_w, g, 3)
    if independent:  # the low map need not be a subsampling of the high one
        low = ID_VALUES[torch.randint(0, 3, (1, low_h, low_w), generator=g)]
    features = torch.randn(1, 2, low_h, low_w, generator=g, dtype=torch.float64)
    out, matched = panoptic_upsample(features, low, high)
    expected, expected_matched = reference_algorithm_1(features, low, high)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(matched, expected_matched)


def test_single_segment_equals_nearest():
    features = torch.randn(2, 4, 3, 5)
    ids = torch.full((2, 6, 10), 9)
    out, matched = panoptic_upsample(features, ids[:, ::2, ::2], ids)
    torch.testing.assert_close(out, F.interpolate(features, scale_factor=2, mode="nearest"))
    assert bool(matched.all())


def test_alignment_takes_the_right_neighbour():
    """A segment boundary on an odd column: nearest copies the wrong segment, Algorithm 1 the right one."""
    high = torch.zeros(1, 2, 4, dtype=torch.long)
    high[:, :, 1:] = 5  # column 1 already belongs to segment 5
    low = high[:, ::2, ::2]  # [[0, 5]]
    features = torch.tensor([[[[1.0, 2.0]]]])
    out, matched = panoptic_upsample(features, low, high)
    assert out[0, 0, 0].tolist() == [1.0, 2.0, 2.0, 2.0]  # nearest would give [1, 1, 2, 2]
    assert bool(matched.all())


def test_gradcheck():
    g = torch.Generator().manual_seed(0)
    low, high = random_maps(2, 3, 4, g, 3)
    features = torch.randn(2, 3, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: panoptic_upsample(f, low, high)[0], (features,))


def test_batch_size_zero():
    out, matched = panoptic_upsample(
        torch.randn(0, 3, 2, 2), torch.zeros(0, 2, 2, dtype=torch.long), torch.zeros(0, 4, 4, dtype=torch.long)
    )
    assert out.shape == (0, 3, 4, 4) and matched.shape == (0, 1, 4, 4)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2), torch.zeros(1, 4, 4, dtype=torch.long)), "integer"),
        (
            (torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long)),
            "2h, 2w",
        ),
        (
            (torch.randn(1, 3, 2, 2), torch.zeros(1, 3, 2, dtype=torch.long), torch.zeros(1, 6, 4, dtype=torch.long)),
            "match the features",
        ),
        (
            (torch.randn(3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long)),
            r"\(N, C, h, w\)",
        ),
    ],
)
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        panoptic_upsample(*args)


def test_gradients_match_literal_autograd():
    g = torch.Generator().manual_seed(2)
    low, high = random_maps(2, 4, 5, g, 4)
    features = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(2, 3, 8, 10, generator=g, dtype=torch.float64)
    (fast,) = torch.autograd.grad(panoptic_upsample(features, low, high)[0], features, grad_out)
    (slow,) = torch.autograd.grad(reference_algorithm_1(features, low, high)[0], features, grad_out)
    torch.testing.assert_close(fast, slow)


def test_inference_mode():
    g = torch.Generator().manual_seed(3)
    low, high = random_maps(2, 4, 5, g, 4)
    features = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    expected, expected_matched = reference_algorithm_1(features, low, high)
    with torch.inference_mode():
        out, matched = panoptic_upsample(features.clone(), low.clone(), high.clone())
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(matched, expected_matched)


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_in_channels_last_out(device):
    g = torch.Generator().manual_seed(4)
    low, high = random_maps(2, 4, 5, g, 4)
    features = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    expected, _ = reference_algorithm_1(features, low, high)
    grad_out = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    features_last = features.to(device).contiguous(memory_format=torch.channels_last).requires_grad_()
    out, _ = panoptic_upsample(features_last, low.to(device), high.to(device), backend="torch")
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.cpu(), expected)
    out.backward(grad_out.to(device).contiguous(memory_format=torch.channels_last))
    (expected_grad,) = torch.autograd.grad(
        reference_algorithm_1(features.requires_grad_(), low, high)[0], features, grad_out
    )
    torch.testing.assert_close(features_last.grad.cpu(), expected_grad)


AUTOCAST = [("cpu", torch.bfloat16)]
if "cuda" in DEVICES:
    AUTOCAST += [("cuda", torch.float16), ("cuda", torch.bfloat16)]


@pytest.mark.parametrize(("device", "dtype"), AUTOCAST)
def test_autocast_conv_upsample_conv(device, dtype):
    """Half-precision features from a panoptic convolution go through the upsampling and the next
    convolution under autocast, forward and backward, close to float64."""
    g = torch.Generator().manual_seed(5)
    low, high = random_maps(2, 6, 7, g, 4)
    x = torch.randn(2, 4, 6, 7, generator=g)
    weights = [torch.randn(4, 4, 3, 3, generator=g) for _ in range(2)]

    def run(x, w0, w1, panoptic_low, panoptic_high):
        features = panoptic_conv2d(x, panoptic_low, w0)
        upsampled, matched = panoptic_upsample(features, panoptic_low, panoptic_high)
        return panoptic_conv2d(upsampled, panoptic_high, w1), matched

    leaves = [t.to(device).requires_grad_() for t in (x, *weights)]
    with torch.autocast(device, dtype=dtype):
        out, matched = run(*leaves, low.to(device), high.to(device))
    assert out.dtype == matched.dtype == dtype
    leaves64 = [t.detach().double().requires_grad_() for t in (x, *weights)]
    expected, _ = run(*leaves64, low, high)
    assert ((out.cpu().double() - expected).norm() / expected.norm()).item() < 2e-2
    out.float().square().sum().backward()
    expected.square().sum().backward()
    for leaf, leaf64 in zip(leaves, leaves64):
        assert leaf.grad.dtype == torch.float32
        assert ((leaf.grad.cpu().double() - leaf64.grad).norm() / leaf64.grad.norm()).item() < 3e-2
