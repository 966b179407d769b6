import numpy as np
import pytest
import torch

from pansynth.eval import upsampling_stats
from pansynth.eval.upsampling import dataset_upsampling_stats, format_table, write_analysis


def _reference(panoptic: np.ndarray, levels: int) -> list[dict]:
    """Literal loops over every high-resolution pixel; shares of the new pixels (the paper's Figure 4)
    and of all pixels."""
    out = []
    for level in range(levels, 0, -1):
        s = 2**level
        low, high = panoptic[::s, ::s], panoptic[:: s // 2, :: s // 2]
        misaligned = holes = new = 0
        for y in range(high.shape[0]):
            for x in range(high.shape[1]):
                new += (y % 2, x % 2) != (0, 0)  # every pixel but the top-left one of its 2x2 block
                r, c = y // 2, x // 2
                if high[y, x] != low[r, c]:
                    misaligned += 1
                found = False
                for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
                    if r + dr < low.shape[0] and c + dc < low.shape[1] and low[r + dr, c + dc] == high[y, x]:
                        found = True
                if not found:
                    holes += 1
        out.append(
            {
                "stride": s,
                "misaligned": misaligned / new,
                "holes": holes / new,
                "misaligned_all": misaligned / high.size,
                "holes_all": holes / high.size,
            }
        )
    return out


@pytest.mark.parametrize("shape,levels,seed", [((16, 16), 3, 0), ((20, 36), 2, 1), ((33, 17), 4, 2), ((8, 8), 1, 3)])
def test_matches_literal_loops_on_random_maps(shape, levels, seed):
    rng = np.random.default_rng(seed)
    # blocky random maps so that some pixels match and some do not
    coarse = rng.integers(0, 4, size=(shape[0] // 3 + 1, shape[1] // 3 + 1))
    panoptic = np.kron(coarse, np.ones((3, 3), dtype=np.int64))[: shape[0], : shape[1]]
    panoptic = panoptic + (rng.random(shape) < 0.1) * 7
    got = upsampling_stats(torch.from_numpy(panoptic), levels)
    expected = _reference(panoptic, levels)
    assert [g["stride"] for g in got] == [e["stride"] for e in expected]
    for g, e in zip(got, expected):
        assert g == pytest.approx(e)
    assert upsampling_stats(panoptic, levels) == got  # numpy input works too


def test_hand_made_holes():
    panoptic = np.array([[0, 0, 0, 1], [0, 0, 0, 1], [2, 2, 0, 0], [2, 2, 0, 3]])
    # low = [[0, 0], [2, 0]]: the three pixels of ids 1 and 3 are copied from id 0 and no candidate has them.
    # 12 of the 16 pixels are new (all but the four top-left pixels of the 2x2 blocks).
    assert upsampling_stats(panoptic, 1) == [
        {"stride": 2, "misaligned": 3 / 12, "holes": 3 / 12, "misaligned_all": 3 / 16, "holes_all": 3 / 16}
    ]


def test_hand_made_misalignment_without_hole():
    panoptic = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    # pixel (1, 1) gets low[0, 0] = 0 but its id 1 is at the right neighbour low[0, 1]: misaligned, no hole
    assert upsampling_stats(panoptic, 1) == [
        {"stride": 2, "misaligned": 1 / 12, "holes": 0.0, "misaligned_all": 1 / 16, "holes_all": 0.0}
    ]


def test_odd_sized_map_counts_new_pixels_by_hand():
    # 3x3 high map from a 2x2 low map: the new pixels are all but (0, 0), (0, 2), (2, 0), (2, 2).
    panoptic = np.array([[5, 5, 5], [5, 7, 5], [5, 5, 5]])
    # Only the centre pixel (1, 1) has another id than its nearest source low[0, 0] = 5, and no candidate has 7.
    assert upsampling_stats(panoptic, 1) == [
        {"stride": 2, "misaligned": 1 / 5, "holes": 1 / 5, "misaligned_all": 1 / 9, "holes_all": 1 / 9}
    ]


def test_single_segment_and_order_of_steps():
    stats = upsampling_stats(torch.full((32, 64), 4), 5)
    assert [s["stride"] for s in stats] == [32, 16, 8, 4, 2]
    assert all(s["misaligned"] == 0 and s["holes"] == 0 for s in stats)


def test_bad_inputs():
    with pytest.raises(ValueError, match="too small"):
        upsampling_stats(torch.zeros(8, 8, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="integer map"):
        upsampling_stats(torch.zeros(8, 8), 1)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        upsampling_stats(torch.zeros(1, 8, 8, dtype=torch.long), 1)


def test_dataset_average_pools_pixels_and_writes_chart(tmp_path):
    a = np.array([[0, 0, 0, 1], [0, 0, 0, 1], [2, 2, 0, 0], [2, 2, 0, 3]])
    b = np.zeros((4, 4), dtype=np.int64)
    stats = dataset_upsampling_stats([torch.from_numpy(a), torch.from_numpy(b)], levels=1)
    assert stats[0]["misaligned"] == pytest.approx(3 / 24)  # 3 of the 2 x 12 new pixels
    assert stats[0]["misaligned_all"] == pytest.approx(3 / 32)
    assert stats[0]["holes_mean_image"] == pytest.approx((3 / 12 + 0) / 2)
    assert stats[0]["images"] == 2
    table = format_table(stats)
    assert "12.50" in table and "9.38" in table  # 3/24 and 3/32 in percent
    paths = write_analysis(stats, tmp_path, {"dataset": "toy", "split": "val", "images": 2})
    assert paths["png"].stat().st_size > 1000
    from PIL import Image

    with Image.open(paths["png"]) as image:
        assert image.size[0] > 200


def test_dataset_statistics_match_literal_loops_per_image_and_pooled():
    # Maps of different sizes and boundary densities, so that pooling the pixels, averaging the
    # images' shares, and dividing by the new or by all pixels all give different numbers.
    rng = np.random.default_rng(5)
    maps = []
    for shape, block, noise in (((16, 16), 2, 0.05), ((24, 40), 4, 0.0), ((17, 33), 3, 0.2)):
        coarse = rng.integers(0, 5, size=(shape[0] // block + 1, shape[1] // block + 1))
        panoptic = np.kron(coarse, np.ones((block, block), dtype=np.int64))[: shape[0], : shape[1]]
        maps.append(panoptic + (rng.random(shape) < noise) * 11)
    levels = 3
    got = dataset_upsampling_stats([torch.from_numpy(m) for m in maps], levels)
    per_image = [_reference(m, levels) for m in maps]
    assert len(got) == levels
    for step, row in enumerate(got):
        shares = [image[step] for image in per_image]
        s = row["stride"]
        assert s == shares[0]["stride"]
        # pooled: counts recovered from each image's shares (share * its number of new / all pixels)
        highs = [m[:: s // 2, :: s // 2] for m in maps]
        new = [h.size - ((h.shape[0] + 1) // 2) * ((h.shape[1] + 1) // 2) for h in highs]
        for key in ("misaligned", "holes"):
            count = sum(share[key] * n for share, n in zip(shares, new))
            assert row[key] == pytest.approx(count / sum(new))
            assert row[f"{key}_all"] == pytest.approx(count / sum(h.size for h in highs))
            # the per-image mean of the paper's share (of the new pixels), not of all pixels
            assert row[f"{key}_mean_image"] == pytest.approx(sum(share[key] for share in shares) / len(maps))
        assert row["images"] == len(maps)
    # The maps are varied enough that each of these would catch a mixed-up denominator or average.
    assert got[-1]["misaligned_mean_image"] != pytest.approx(got[-1]["misaligned"])
    assert got[-1]["misaligned_mean_image"] != pytest.approx(got[-1]["holes_mean_image"])
    assert all(row["misaligned_all"] < row["misaligned"] for row in got)
