"""Dataset statistics against literal references and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pansynth.data.stats import dataset_stats, format_stats, touching_same_class_pairs


def _touching_reference(semantic: np.ndarray, panoptic: np.ndarray, things: list[int]) -> set[tuple[int, int]]:
    """Slow literal version: visit every pixel and its right and lower neighbour."""
    pairs = set()
    height, width = semantic.shape
    for y in range(height):
        for x in range(width):
            for ny, nx in ((y, x + 1), (y + 1, x)):
                if ny >= height or nx >= width:
                    continue
                if (
                    semantic[y, x] in things
                    and semantic[y, x] == semantic[ny, nx]
                    and panoptic[y, x] != panoptic[ny, nx]
                ):
                    a, b = int(panoptic[y, x]), int(panoptic[ny, nx])
                    pairs.add((min(a, b), max(a, b)))
    return pairs


@pytest.mark.parametrize("seed", range(5))
def test_touching_pairs_match_literal_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    semantic = rng.integers(0, 4, size=(9, 11))
    panoptic = semantic * 10 + rng.integers(0, 3, size=(9, 11))
    things = [1, 3]
    expected = _touching_reference(semantic, panoptic, things)
    assert touching_same_class_pairs(semantic, panoptic, things) == expected
    assert touching_same_class_pairs(torch.from_numpy(semantic), torch.from_numpy(panoptic), things) == expected


def test_touching_pairs_hand_example() -> None:
    semantic = np.array([[1, 1, 1, 0], [1, 1, 2, 2], [0, 1, 2, 2]])
    panoptic = np.array([[5, 5, 6, 0], [7, 7, 8, 9], [0, 7, 8, 9]])
    # Class 1: 5-6 (right), 5-7 (below); 6 and 7 only touch diagonally. Class 2: 8-9.
    assert touching_same_class_pairs(semantic, panoptic, [1, 2]) == {(5, 6), (5, 7), (8, 9)}
    assert touching_same_class_pairs(semantic, panoptic, [2]) == {(8, 9)}
    assert touching_same_class_pairs(semantic, panoptic, []) == set()
    with pytest.raises(ValueError, match="one size"):
        touching_same_class_pairs(semantic, panoptic[:, :2], [1])


class _TinyDataset:
    num_classes = 3
    ignore_index = 255
    class_names = ["grass", "cow", "sheep"]
    thing_classes = [1, 2]

    def __init__(self) -> None:
        self.maps = [
            (np.array([[0, 1, 1], [0, 1, 1]]), np.array([[0, 11, 12], [0, 11, 12]])),  # cows 11|12 touch
            (np.array([[0, 0, 255], [2, 0, 0]]), np.array([[0, 0, 99], [21, 0, 0]])),  # one sheep, one ignored
        ]

    def __len__(self) -> int:
        return len(self.maps)

    def __getitem__(self, index: int) -> dict:
        semantic, panoptic = self.maps[index]
        return {"semantic": torch.from_numpy(semantic), "panoptic": torch.from_numpy(panoptic)}


def test_dataset_stats_hand_computed() -> None:
    stats = dataset_stats(_TinyDataset())
    assert stats["num_images"] == 2 and stats["num_pixels"] == 12
    shares = {entry["name"]: entry["pixel_share"] for entry in stats["classes"]}
    assert shares == pytest.approx({"grass": 6 / 12, "cow": 4 / 12, "sheep": 1 / 12})
    assert [entry["name"] for entry in stats["classes"]] == ["grass", "cow", "sheep"]
    assert stats["ignored_pixel_share"] == pytest.approx(1 / 12)
    assert stats["segments_per_image"] == {"mean": 2.5, "min": 2, "max": 3}
    assert stats["instances_per_image"] == {"mean": 1.5, "min": 1, "max": 2}
    assert stats["touching"] == {"images_with_pair": 1, "images_with_pair_share": 0.5, "pairs_per_image": 0.5}
    limited = dataset_stats(_TinyDataset(), limit=1)
    assert limited["num_images"] == 1 and limited["touching"]["images_with_pair_share"] == 1.0
    text = format_stats(stats, title="tiny")
    assert "images: 2" in text and "in 1/2 images (50.0%)" in text and "cow" in text
