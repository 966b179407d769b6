"""Paired transforms: nearest resize of maps, identical crop/flip for image and maps, presets."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pansynth.data.transforms import PairedTransform, preset, resize_image, resize_map


def _nearest_reference(label_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Slow literal nearest resize: each output pixel centre maps back to the input pixel it falls in."""
    height, width = label_map.shape
    out = torch.empty(size, dtype=label_map.dtype)
    for i in range(size[0]):
        for j in range(size[1]):
            y = int((i + Fraction(1, 2)) * height / size[0])
            x = int((j + Fraction(1, 2)) * width / size[1])
            out[i, j] = label_map[y, x]
    return out


@pytest.mark.parametrize("size", [(5, 7), (13, 11), (24, 36), (12, 18)])
def test_resize_map_matches_reference_and_adds_no_values(size: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(0)
    label_map = torch.randint(0, 2**40, (12, 18), generator=generator)  # ids beyond float32 precision
    resized = resize_map(label_map, size)
    torch.testing.assert_close(resized, _nearest_reference(label_map, size), rtol=0, atol=0)
    assert set(resized.unique().tolist()) <= set(label_map.unique().tolist())
    if size == (24, 36):  # integer upscale: every value is kept
        assert set(resized.unique().tolist()) == set(label_map.unique().tolist())
    if size == (12, 18):
        assert torch.equal(resized, label_map)


def _crafted_sample(height: int = 10, width: int = 14) -> dict:
    """A sample whose image encodes its maps: channel 0 = semantic, channel 1 = panoptic, channel 2 = column."""
    semantic = torch.arange(height * width).reshape(height, width) % 7
    panoptic = torch.arange(height * width).reshape(height, width)
    column = torch.arange(width).expand(height, width)
    image = torch.stack([semantic, panoptic, column]).to(torch.float32) / 1000.0
    return {"image": image, "semantic": semantic, "panoptic": panoptic, "name": "crafted"}


def test_crop_and_flip_are_identical_for_image_and_maps() -> None:
    torch.manual_seed(0)
    transform = PairedTransform(crop=(6, 9), flip=True)
    sample = _crafted_sample()
    seen_flips, seen_corners = set(), set()
    for _ in range(40):
        out = transform(sample)
        assert out["image"].shape == (3, 6, 9) and out["semantic"].shape == (6, 9)
        assert out["name"] == "crafted"
        torch.testing.assert_close(out["image"][0] * 1000, out["semantic"].float())
        torch.testing.assert_close(out["image"][1] * 1000, out["panoptic"].float())
        columns = (out["image"][2] * 1000).round().long()[0]
        flipped = bool(columns[0] > columns[-1])
        seen_flips.add(flipped)
        top, left = int(out["panoptic"].min()) // 14, int(columns.min())
        seen_corners.add((top, left))
        # The crop is a contiguous window of the original (after undoing the flip).
        window = out["panoptic"].flip(-1) if flipped else out["panoptic"]
        assert torch.equal(window, sample["panoptic"][top : top + 6, left : left + 9])
    assert seen_flips == {False, True}
    assert len(seen_corners) > 5
    assert sample["panoptic"].shape == (10, 14)  # the input sample is not modified


def test_resize_keeps_maps_consistent_and_image_antialiased() -> None:
    sample = _crafted_sample(16, 16)
    sample["panoptic"] = sample["semantic"] * 10 + 3
    out = PairedTransform(size=(8, 12))(sample)
    assert out["image"].shape == (3, 8, 12)
    assert torch.equal(out["panoptic"], out["semantic"] * 10 + 3)
    constant = torch.full((3, 9, 9), 0.25)
    torch.testing.assert_close(resize_image(constant, (4, 5)), torch.full((3, 4, 5), 0.25))
    # Antialiasing averages a fine checkerboard to grey instead of picking one colour.
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2).float() * 2 - 1
    small = resize_image(checker.expand(3, 16, 16), (4, 4))
    assert small.abs().max() < 0.1


def test_transform_arguments_and_presets() -> None:
    with pytest.raises(ValueError, match="crop .* must not be larger than size"):
        PairedTransform(size=(8, 8), crop=(9, 8))
    with pytest.raises(ValueError, match="size must be a pair of positive integers"):
        PairedTransform(size=(0, 8))
    with pytest.raises(ValueError, match="crop \\(12, 12\\) is larger than the image \\(10, 14\\)"):
        PairedTransform(crop=(12, 12))(_crafted_sample())
    assert PairedTransform(size=32).size == (32, 32)
    cityscapes = preset("cityscapes", train=True)
    assert (cityscapes.size, cityscapes.crop, cityscapes.flip) == ((256, 512), None, True)
    coco_train, coco_eval = preset("coco-stuff", train=True), preset("coco-stuff", train=False)
    assert coco_train.crop == (256, 256) and coco_eval.size == (256, 256) and not coco_eval.flip
    assert preset("demo", train=False).size is None
    with pytest.raises(ValueError, match="unknown transform preset 'ade20k'"):
        preset("ade20k", train=True)


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(2, 12),
    width=st.integers(2, 12),
    data=st.data(),
)
def test_paired_transform_property(height: int, width: int, data: st.DataObject) -> None:
    """Any crop/flip keeps image and maps aligned; any resize moves semantic and panoptic identically."""
    crop = (data.draw(st.integers(1, height)), data.draw(st.integers(1, width)))
    torch.manual_seed(data.draw(st.integers(0, 1000)))
    out = PairedTransform(crop=crop, flip=True)(_crafted_sample(height, width))
    assert out["semantic"].shape == crop and out["image"].shape == (3, *crop)
    torch.testing.assert_close(out["image"][1] * 1000, out["panoptic"].float())
    size = (data.draw(st.integers(1, 20)), data.draw(st.integers(1, 20)))
    sample = _crafted_sample(height, width)
    resized = PairedTransform(size=size)(sample)
    torch.testing.assert_close(resized["panoptic"], _nearest_reference(sample["panoptic"], size), rtol=0, atol=0)
    # panoptic holds each pixel's flat index, so the semantic map must come from the same source pixels.
    expected_semantic = sample["semantic"].flatten()[resized["panoptic"].flatten()].reshape(size)
    torch.testing.assert_close(resized["semantic"], expected_semantic, rtol=0, atol=0)
