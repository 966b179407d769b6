"""Unknown pixels (class and id -1) in the panoptic ops, against float64 literal references.

The chosen semantics (docs/data.md): every unknown pixel belongs to ONE segment of its own, id -1,
and has no class (an all-zero one-hot vector). So in the partial convolution (eq. 1-2) a known
pixel's window masks out every unknown neighbour and an unknown pixel's window sees only unknown
neighbours; in Algorithm 1 a known high-resolution pixel takes only the feature of a low-resolution
pixel of its own id. Consequence tested below: a known pixel's output does not depend on the
features at unknown pixels (nor an unknown pixel's on known features), on both engines.
"""

from __future__ import annotations

import pytest
import torch

from pansynth.ops import _triton, panoptic_conv2d, panoptic_conv2d_labels, panoptic_upsample
from pansynth.ops.maps import UNKNOWN, mark_unknown, semantic_one_hot, semantic_to_index

TRITON = _triton.is_available(torch.device("cpu")) or torch.cuda.is_available()
ENGINES = ["torch", pytest.param("triton", marks=pytest.mark.skipif(not TRITON, reason="no Triton (interpreter)"))]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def unknown_scene(n: int = 2, height: int = 7, width: int = 9, seed: int = 0) -> torch.Tensor:
    """Blocky known segments, an unknown rectangle across several of them and a few unknown pixels."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 4, (n, -(-height // 2), -(-width // 2)), generator=g) * 7 + 3
    ids = coarse.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :height, :width].clone()
    ids[:, 2:5, 3:7] = UNKNOWN
    ids[torch.rand(n, height, width, generator=g) < 0.08] = UNKNOWN
    return ids


def reference_conv(x, ids, weight, bias):
    """Eq. 1-2 pixel by pixel with the unknown semantics spelled out."""
    n_batch, _, height, width = x.shape
    out_channels, _, k, _ = weight.shape
    radius = k // 2
    out = torch.zeros(n_batch, out_channels, height, width, dtype=torch.float64)
    for n in range(n_batch):
        for y in range(height):
            for x_ in range(width):
                centre_unknown = bool(ids[n, y, x_] == UNKNOWN)
                acc = torch.zeros(out_channels, dtype=torch.float64)
                mask_sum = 0
                for i in range(k):
                    for j in range(k):
                        yy, xx = y + i - radius, x_ + j - radius
                        if not (0 <= yy < height and 0 <= xx < width):
                            continue
                        other_unknown = bool(ids[n, yy, xx] == UNKNOWN)
                        if centre_unknown:  # an unknown pixel sees the unknown segment only
                            seen = other_unknown
                        else:  # a known pixel sees its own segment, never an unknown pixel
                            seen = not other_unknown and bool(ids[n, yy, xx] == ids[n, y, x_])
                        if seen:
                            acc += weight[:, :, i, j].double() @ x[n, :, yy, xx].double()
                            mask_sum += 1
                out[n, :, y, x_] = acc * (k * k) / mask_sum + bias.double()
    return out


def reference_upsample(features, low, high):
    """Algorithm 1 with the unknown semantics: candidates in the paper's order, first match wins."""
    n_batch, channels, low_h, low_w = features.shape
    out = torch.zeros(n_batch, channels, 2 * low_h, 2 * low_w, dtype=torch.float64)
    matched = torch.zeros(n_batch, 1, 2 * low_h, 2 * low_w, dtype=torch.float64)
    for n in range(n_batch):
        for row in range(2 * low_h):
            for col in range(2 * low_w):
                for d_col, d_row in [(0, 0), (1, 0), (0, 1), (1, 1)]:
                    r, c = row // 2 + d_row, col // 2 + d_col
                    if r >= low_h or c >= low_w:
                        continue
                    pixel_unknown, candidate_unknown = bool(high[n, row, col] == UNKNOWN), bool(low[n, r, c] == UNKNOWN)
                    same = (
                        candidate_unknown
                        if pixel_unknown
                        else (not candidate_unknown and high[n, row, col] == low[n, r, c])
                    )
                    if same:
                        out[n, :, row, col] = features[n, :, r, c].double()
                        matched[n, 0, row, col] = 1
                        break
    return out, matched


def _dtype(engine):
    return torch.float64 if engine == "torch" else torch.float32  # the kernels compute in fp32


@pytest.mark.parametrize("engine", ENGINES)
def test_conv_with_unknown_pixels_equals_the_literal_reference(engine):
    g = torch.Generator().manual_seed(1)
    ids = unknown_scene()
    x = torch.randn(2, 3, 7, 9, generator=g, dtype=torch.float64)
    weight, bias = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    expected = reference_conv(x, ids, weight, bias)
    dtype = _dtype(engine)
    got = panoptic_conv2d(
        x.to(DEVICE, dtype), ids.to(DEVICE), weight.to(DEVICE, dtype), bias.to(DEVICE, dtype), backend=engine
    )
    tolerance = {} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(got.double().cpu(), expected, **tolerance)
    # Known pixels ignore the features at unknown pixels and unknown pixels ignore the known ones.
    unknown = (ids == UNKNOWN)[:, None].to(DEVICE)
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64).to(DEVICE, dtype) * 100
    for changed in (unknown, ~unknown):
        perturbed = panoptic_conv2d(
            torch.where(changed, x.to(DEVICE, dtype) + noise, x.to(DEVICE, dtype)),
            ids.to(DEVICE), weight.to(DEVICE, dtype), bias.to(DEVICE, dtype), backend=engine,
        )  # fmt: skip
        kept = (~changed).expand_as(got)
        torch.testing.assert_close(perturbed[kept], got[kept], rtol=0, atol=0)
        assert not torch.allclose(perturbed[~kept], got[~kept])


@pytest.mark.parametrize("engine", ENGINES)
def test_upsample_with_unknown_pixels_equals_the_literal_reference(engine):
    g = torch.Generator().manual_seed(2)
    high = unknown_scene(2, 8, 10, seed=3)
    low = high[:, ::2, ::2].clone()
    low[0, 0, 0] = UNKNOWN  # an unknown low-resolution pixel over known high-resolution ones
    features = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    expected, expected_matched = reference_upsample(features, low, high)
    dtype = _dtype(engine)
    out, matched = panoptic_upsample(features.to(DEVICE, dtype), low.to(DEVICE), high.to(DEVICE), backend=engine)
    torch.testing.assert_close(out.double().cpu(), expected)
    torch.testing.assert_close(matched.double().cpu(), expected_matched)
    assert 0 < expected_matched.mean() < 1
    low_unknown = (low == UNKNOWN)[:, None].to(DEVICE)
    perturbed, _ = panoptic_upsample(
        torch.where(low_unknown, features.to(DEVICE, dtype) + 100, features.to(DEVICE, dtype)),
        low.to(DEVICE), high.to(DEVICE), backend=engine,
    )  # fmt: skip
    known = (high != UNKNOWN)[:, None].expand_as(out).to(DEVICE)
    torch.testing.assert_close(perturbed[known], out[known], rtol=0, atol=0)
    assert not torch.equal(perturbed[~known], out[~known])


def test_label_lookup_with_unknown_labels_is_the_zero_one_hot_convolution():
    g = torch.Generator().manual_seed(4)
    ids = unknown_scene(1, 6, 8, seed=5)
    semantic = (ids % 3).masked_fill(ids == UNKNOWN, UNKNOWN)
    weight = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    labels = semantic_to_index(semantic, 3)
    assert torch.equal(labels == -1, ids == UNKNOWN)
    one_hot = semantic_one_hot(semantic, 3).double()
    assert torch.equal(one_hot.sum(1), (ids != UNKNOWN).double())  # all zeros where unknown
    expected = reference_conv(one_hot, ids, weight, torch.zeros(5))
    torch.testing.assert_close(panoptic_conv2d_labels(labels, ids, weight), expected)
    positions = (ids == UNKNOWN).nonzero()
    torch.testing.assert_close(
        panoptic_conv2d_labels(labels, ids, weight, positions=positions), expected.permute(0, 2, 3, 1)[ids == UNKNOWN]
    )
    # With a don't-care channel (ignore_index), unknown pixels (-1 or the ignore value) are one-hot in it.
    with_channel = semantic_one_hot(semantic.masked_fill(semantic == 2, 255), 3, ignore_index=255)
    assert with_channel.shape[1] == 4
    assert torch.equal(with_channel[:, 3], ((ids == UNKNOWN) | (semantic == 2)).float())


def test_mark_unknown_gives_every_unknown_pixel_the_id_minus_one_and_leaves_its_input():
    semantic = torch.tensor([[[0, 255, -1, 2]]])
    panoptic = torch.tensor([[[5, 0, 5, 9]]])
    before = semantic.clone(), panoptic.clone()
    marked_semantic, marked_panoptic = mark_unknown(semantic, panoptic, ignore_index=255)
    assert marked_semantic.tolist() == [[[0, -1, -1, 2]]] and marked_panoptic.tolist() == [[[5, -1, -1, 9]]]
    assert mark_unknown(semantic, panoptic)[1].tolist() == [[[5, 0, -1, 9]]]  # 255 is no unknown value here
    assert torch.equal(semantic, before[0]) and torch.equal(panoptic, before[1])
    with pytest.raises(ValueError, match=r"class index -2, expected values in \[0, 2\] or -1 \(unknown\)"):
        semantic_to_index(torch.tensor([[[-2, 0]]]), 3)
