"""Metrics on the real COCO-Stuff samples of the shared data folder (skipped when absent)."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pansynth.eval import upsampling_stats
from pansynth.eval.separation import SeparationScore

SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "coco_stuff_samples"

pytestmark = pytest.mark.skipif(not (SAMPLES / "train_img").is_dir(), reason="COCO-Stuff samples not available")


@pytest.fixture(scope="module")
def coco():
    from pansynth.data import build_dataset
    from pansynth.data.transforms import preset

    return build_dataset("coco-stuff", SAMPLES, split="train", transform=preset("coco-stuff", train=False))


def _literal(panoptic, levels):
    out = []
    for level in range(levels, 0, -1):
        s = 2**level
        low, high = panoptic[::s, ::s].tolist(), panoptic[:: s // 2, :: s // 2].tolist()
        mis = holes = new = 0
        for y, row in enumerate(high):
            for x, value in enumerate(row):
                if value == -1:  # unknown (unlabeled) pixels are left out of every count
                    continue
                new += (y % 2, x % 2) != (0, 0)  # the pixels the upsampling creates
                r, c = y // 2, x // 2
                mis += value != low[r][c]
                candidates = [
                    low[r + dr][c + dc] for dr in (0, 1) for dc in (0, 1) if r + dr < len(low) and c + dc < len(low[0])
                ]
                holes += value not in candidates
        out.append((s, mis / new, holes / new))  # the paper's Figure 4: shares of the new pixels
    return out


def test_upsampling_stats_on_a_real_map(coco):
    panoptic = coco[0]["panoptic"]
    assert (panoptic == -1).any()  # unlabeled pixels: unknown
    got = [(row["stride"], row["misaligned"], row["holes"]) for row in upsampling_stats(panoptic, 5)]
    expected = _literal(panoptic, 5)
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert [v for g in got for v in g[1:]] == pytest.approx([v for e in expected for v in e[1:]])
    # coarse steps misplace more of the features than fine ones (the trend of Figure 4)
    assert got[0][1] > got[-1][1]


def test_blurring_real_images_lowers_instance_separation(coco):
    real_score, blurred_score = SeparationScore(coco.thing_classes), SeparationScore(coco.thing_classes)
    for index in range(min(6, len(coco))):
        sample = coco[index]
        image = sample["image"]
        blurred = F.avg_pool2d(F.pad(image[None], (4, 4, 4, 4), mode="replicate"), 9, stride=1)[0]
        real_score.update(image, image, sample["panoptic"], sample["semantic"])
        blurred_score.update(blurred, image, sample["panoptic"], sample["semantic"])
    if real_score.compute()["separation_pairs"] == 0:
        pytest.skip("no touching same-class instances in these samples")
    assert real_score.compute()["separation_ratio"] == pytest.approx(1.0)
    assert blurred_score.compute()["separation_ratio"] < 0.9
    assert torch.isfinite(torch.tensor(blurred_score.compute()["separation"]))
