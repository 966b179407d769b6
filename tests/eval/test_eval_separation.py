import math

import pytest
import torch
import torch.nn.functional as F

from pansynth.eval.separation import SeparationScore, pair_contrasts, touching_pairs

THINGS = [1, 2]


def _two_instances(size=8):
    """Two touching instances of thing class 1 (ids 10 | 11), split at the middle column."""
    semantic = torch.ones(size, size, dtype=torch.long)
    panoptic = torch.full((size, size), 10, dtype=torch.long)
    panoptic[:, size // 2 :] = 11
    return panoptic, semantic


def test_touching_pairs_only_same_thing_class():
    panoptic = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 5], [6, 6, 6, 6]])
    semantic = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 2, 2], [0, 0, 0, 0]])
    # same-class touching pairs: 1-2 and 1-3 (class 1), 4-5 (class 2); 2-4 and 3-4 touch across
    # classes, 2-3 only diagonally, and 6 is stuff.
    pairs = touching_pairs(panoptic, semantic, THINGS).tolist()
    assert pairs == [[1, 2], [1, 3], [4, 5]]
    # with class 2 treated as stuff the 4-5 pair disappears; stuff class 0 never pairs
    assert touching_pairs(panoptic, semantic, [1]).tolist() == [[1, 2], [1, 3]]


def test_constant_colours_give_colour_distance():
    panoptic, semantic = _two_instances()
    image = torch.empty(3, 8, 8)
    image[:, :, :4] = torch.tensor([0.5, 0.0, -0.5]).view(3, 1, 1)
    image[:, :, 4:] = torch.tensor([-0.5, 0.0, 0.5]).view(3, 1, 1)
    contrasts = pair_contrasts(image, panoptic, semantic, THINGS, width=2)
    assert contrasts.tolist() == pytest.approx([math.sqrt(2.0)])


def test_texture_difference_by_hand():
    panoptic, semantic = _two_instances()
    a = 0.4
    image = torch.zeros(3, 8, 8)
    rows = torch.arange(8).view(8, 1)
    image[:, :, :4] = torch.where(rows % 2 == 0, a, -a).expand(8, 4)  # stripes on the left instance
    # band of width 1 on the left = column 3: luma alternates +-a (std a); the vertical gradient is 2a
    # on 7 of the 8 rows (the last row has no lower neighbour), the step to column 4 crosses the
    # boundary and does not count -> mean gradient 1.75a. The right side is flat.
    contrasts = pair_contrasts(image, panoptic, semantic, THINGS, width=1)
    assert contrasts.item() == pytest.approx(a * math.sqrt(1 + 1.75**2))


def test_blended_image_scores_lower_than_separated():
    torch.manual_seed(0)
    panoptic, semantic = _two_instances(16)
    separated = torch.rand(3, 16, 16) * 0.2
    separated[0, :, :8] += 0.6  # red-ish left instance
    separated[2, :, 8:] += 0.6  # blue-ish right instance
    separated = separated * 2 - 1
    blurred = F.avg_pool2d(F.pad(separated[None], (3, 3, 3, 3), mode="replicate"), 7, stride=1)[0]
    same_near_boundary = separated.clone()
    same_near_boundary[:, :, 5:11] = separated[:, :, 5:11].mean((1, 2), keepdim=True)

    def score(image):
        metric = SeparationScore(THINGS, width=3)
        metric.update(image, separated, panoptic, semantic)
        return metric.compute()

    reference = score(separated)
    assert reference["separation_ratio"] == pytest.approx(1.0)
    assert reference["separation_pairs"] == 1
    for blended in (blurred, same_near_boundary):
        result = score(blended)
        assert result["separation"] < 0.5 * reference["separation"]
        assert result["separation_ratio"] < 0.5


def test_no_pairs_and_bad_inputs():
    panoptic = torch.zeros(4, 4, dtype=torch.long)
    metric = SeparationScore(THINGS)
    metric.update(torch.zeros(3, 4, 4), None, panoptic, torch.ones(4, 4, dtype=torch.long))
    assert metric.compute()["separation"] is None
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        pair_contrasts(torch.zeros(3, 5, 4), panoptic, panoptic, THINGS)
