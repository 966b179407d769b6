"""Colours of panoptic maps, image <-> uint8 conversions, grids."""

import numpy as np
import pytest
import torch

from pansynth.viz import colorize_panoptic, image_to_uint8, images_to_uint8, tile, uint8_to_image
from pansynth.viz import images_to_uint8 as to_uint8


def test_colorize_distinct_and_deterministic():
    panoptic = torch.arange(300).reshape(15, 20) * 1000 + 7
    colors = colorize_panoptic(panoptic)
    assert colors.dtype == np.uint8 and colors.shape == (15, 20, 3)
    assert len({tuple(c) for c in colors.reshape(-1, 3)}) == 300  # one colour per id
    assert np.array_equal(colors, colorize_panoptic(panoptic.numpy()))
    # an id's colour does not depend on the other ids in the map
    small = colorize_panoptic(torch.tensor([[7, 1007]]))
    assert np.array_equal(small[0, 0], colors[0, 0]) and np.array_equal(small[0, 1], colors[0, 1])
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        colorize_panoptic(torch.zeros(1, 2, 2))


def test_to_uint8_maps_range_endpoints():
    values = to_uint8(torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 4, 1, 1))
    assert values.flatten().tolist() == [0, 128, 255, 255]


def test_uint8_round_trip_and_layout():
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = uint8_to_image(array)
    assert image.shape == (3, 5, 7) and image.dtype == torch.float32
    assert float(image.min()) >= -1 and float(image.max()) <= 1
    assert np.array_equal(image_to_uint8(image), array)
    assert torch.equal(images_to_uint8(image[None])[0].permute(1, 2, 0), torch.from_numpy(array))


def test_tile_places_images_with_gaps_and_scale():
    red = np.zeros((2, 3, 3), np.uint8)
    red[..., 0] = 255
    grid = tile([[red, red], [red]], gap=1, scale=2)
    assert grid.shape == (2 * 4 + 1, 2 * 6 + 1, 3)
    assert (grid[:4, :6, 0] == 255).all() and (grid[:4, 6] == 255).all()  # white gap column
    assert (grid[5:, 7:] == 255).all()  # the missing cell of the short row stays white
    with pytest.raises(ValueError, match="no images"):
        tile([])
