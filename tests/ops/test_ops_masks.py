"""The neighbour mask (eq. 1 packed in bits) against a literal loop over pixels and window positions."""

from __future__ import annotations

import pytest
import torch

from pansynth.ops import neighbour_mask

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Ids that differ only in the lowest bit or only above bit 31, at both ends of int64.
IDS = torch.tensor([INT64_MAX, INT64_MAX - 1, INT64_MIN, INT64_MIN + 1, 2**32 + 3, 3, 0])


def literal_mask(ids, kernel_size):
    """bit i*k + j of (n, y, x): (y + i - r, x + j - r) inside the map with the id of (y, x); and k²/sum."""
    radius = kernel_size // 2
    n_batch, height, width = ids.shape
    mask = torch.zeros(ids.shape, dtype=torch.int64)
    scale = torch.zeros(ids.shape, dtype=torch.float64)
    for n in range(n_batch):
        for y in range(height):
            for x in range(width):
                bits = count = 0
                for i in range(kernel_size):
                    for j in range(kernel_size):
                        yy, xx = y + i - radius, x + j - radius
                        if 0 <= yy < height and 0 <= xx < width and int(ids[n, yy, xx]) == int(ids[n, y, x]):
                            bits |= 1 << (i * kernel_size + j)
                            count += 1
                mask[n, y, x] = bits
                scale[n, y, x] = kernel_size * kernel_size / count
    return mask, scale


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("shape", [(2, 5, 7), (1, 1, 6), (3, 4, 1)], ids=lambda s: "x".join(map(str, s)))
def test_mask_and_scale_equal_the_literal_eq1(shape, kernel_size):
    g = torch.Generator().manual_seed(kernel_size + sum(shape))
    blocky = IDS[torch.randint(0, len(IDS), (shape[0], -(-shape[1] // 2), -(-shape[2] // 2)), generator=g)]
    ids = blocky.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, : shape[1], : shape[2]]
    single = torch.rand(shape, generator=g) < 0.2  # one-pixel segments
    ids = torch.where(single, IDS[torch.randint(0, len(IDS), shape, generator=g)], ids)
    mask, scale = neighbour_mask(ids, kernel_size)
    expected_mask, expected_scale = literal_mask(ids, kernel_size)
    assert mask.dtype == torch.int32 and scale.dtype == torch.float32 and mask.is_contiguous()
    torch.testing.assert_close(mask.long(), expected_mask, rtol=0, atol=0)
    torch.testing.assert_close(scale.double(), expected_scale, rtol=1e-7, atol=0)
    # the centre bit is always set; a 32-bit int holds a 5x5 window
    centre = 1 << (kernel_size * kernel_size // 2)
    assert bool(((mask & centre) != 0).all())


def test_int32_and_strided_maps_give_the_same_mask():
    ids = torch.randint(-3, 3, (2, 6, 8))
    expected = neighbour_mask(ids, 3)
    for variant in (ids.int(), ids.transpose(1, 2).contiguous().transpose(1, 2)):
        for got, want in zip(neighbour_mask(variant, 3), expected):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="kernel_size must be 1, 3 or 5"):
        neighbour_mask(torch.zeros(1, 4, 4, dtype=torch.long), 7)
    with pytest.raises(ValueError, match="panoptic must be a .* integer tensor"):
        neighbour_mask(torch.zeros(1, 4, 4), 3)
