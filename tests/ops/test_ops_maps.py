from __future__ import annotations

import pytest
import torch

from pansynth.ops import boundary_map, downsample_map, label_channels, semantic_one_hot, semantic_to_index


def test_boundary_map_matches_four_neighbour_definition():
    g = torch.Generator().manual_seed(0)
    panoptic = torch.randint(0, 3, (2, 6, 7), generator=g) * 1000 + 7
    edges = boundary_map(panoptic)
    n_batch, height, width = panoptic.shape
    for n in range(n_batch):
        for y in range(height):
            for x in range(width):
                neighbours = [(y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)]
                expected = any(
                    0 <= yy < height and 0 <= xx < width and panoptic[n, yy, xx] != panoptic[n, y, x]
                    for yy, xx in neighbours
                )
                assert edges[n, 0, y, x].item() == float(expected)


def test_one_hot_with_ignore_channel():
    semantic = torch.tensor([[[0, 2, 255], [1, 255, 0]]])
    one_hot = semantic_one_hot(semantic, 3, ignore_index=255)
    assert one_hot.shape == (1, label_channels(3, 255), 2, 3) == (1, 4, 2, 3)
    assert torch.equal(one_hot.argmax(1), torch.tensor([[[0, 2, 3], [1, 3, 0]]]))
    assert torch.equal(one_hot.sum(1), torch.ones(1, 2, 3))


@pytest.mark.parametrize(
    ("semantic", "ignore", "match"),
    [
        (torch.tensor([[[0, 3]]]), None, "class index 3"),
        (torch.tensor([[[0, 254]]]), 255, "class index 254"),
        (torch.tensor([[[-2, 0]]]), None, "class index -2"),
        (torch.zeros(1, 2, 2), None, "integer"),
    ],
)
def test_semantic_range_errors(semantic, ignore, match):
    with pytest.raises(ValueError, match=match):
        semantic_to_index(semantic, 3, ignore)


def test_downsample_map_is_stride_slicing():
    label_map = torch.arange(2 * 8 * 12).view(2, 8, 12)
    assert torch.equal(downsample_map(label_map, (2, 3)), label_map[:, ::4, ::4])
    assert torch.equal(downsample_map(label_map, (8, 6)), label_map[:, :, ::2])
    with pytest.raises(ValueError, match="integer stride"):
        downsample_map(label_map, (3, 3))
