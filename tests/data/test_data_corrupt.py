"""Label-map corruptions against their literal definitions on hand-made maps."""

from __future__ import annotations

import pytest
import torch

from pansynth.data import SyntheticScenes
from pansynth.data.corrupt import (
    CORRUPTIONS,
    CorruptedMaps,
    Corruption,
    corrupt_maps,
    elastic_displacement,
    parse_corruption,
    random_rectangles,
    sample_seed,
)

SKY, ROAD, CAR, PERSON = 0, 1, 2, 3
THINGS = [CAR, PERSON]


def scene() -> tuple[torch.Tensor, torch.Tensor]:
    """10x12: sky over road; cars 201-202-204 in a touching chain, car 203 alone; persons 301, 302 apart."""
    semantic = torch.full((10, 12), SKY)
    semantic[5:] = ROAD
    panoptic = semantic.clone()  # stuff: id = class
    for ident, cls, rows, cols in [
        (201, CAR, (2, 6), (1, 4)),
        (202, CAR, (2, 6), (4, 7)),  # touches 201
        (204, CAR, (6, 8), (5, 7)),  # touches 202 only
        (203, CAR, (8, 10), (0, 2)),
        (301, PERSON, (3, 8), (8, 9)),
        (302, PERSON, (3, 8), (10, 11)),  # one column of sky between the persons
    ]:
        semantic[rows[0] : rows[1], cols[0] : cols[1]] = cls
        panoptic[rows[0] : rows[1], cols[0] : cols[1]] = ident
    return semantic, panoptic


def run(name: str, level: float, seed: int = 0):
    semantic, panoptic = scene()
    return Corruption(name, level)(semantic, panoptic, THINGS, torch.Generator().manual_seed(seed))


def unknown_pixels(semantic: torch.Tensor, panoptic: torch.Tensor) -> set[tuple[int, int]]:
    assert torch.equal(semantic == -1, panoptic == -1)  # unknown in both maps at once
    return {tuple(p) for p in (semantic == -1).nonzero().tolist()}


def test_ds_is_nearest_down_and_up():
    semantic, panoptic = scene()
    out_semantic, out_panoptic = run("ds", 4)
    height, width = semantic.shape
    small = (round(height / 4), round(width / 4))  # 10x12 -> 2x3 (round half to even) -> 10x12

    def source(i, size_in, size_out):  # nearest: floor((i + 0.5) * in / out)
        return (2 * i + 1) * size_in // (2 * size_out)

    changed = 0
    for y in range(height):
        for x in range(width):
            sy = source(source(y, small[0], height), height, small[0])
            sx = source(source(x, small[1], width), width, small[1])
            assert out_semantic[y, x] == semantic[sy, sx] and out_panoptic[y, x] == panoptic[sy, sx]
            changed += bool(out_panoptic[y, x] != panoptic[y, x])
    assert changed == int((out_panoptic != panoptic).sum()) > 0
    assert torch.equal(run("ds", 1)[1], panoptic)


@pytest.mark.parametrize("radius", [1, 2])
def test_edge_sets_the_widened_boundaries_unknown(radius):
    semantic, panoptic = scene()
    out_semantic, out_panoptic = run("edge", radius)
    expected = set()
    for y in range(10):
        for x in range(12):
            for yy in range(y - radius, y + radius + 1):
                for xx in range(x - radius, x + radius + 1):
                    if 0 <= yy < 10 and 0 <= xx < 12 and panoptic[yy, xx] != panoptic[y, x]:
                        expected.add((y, x))
    assert unknown_pixels(out_semantic, out_panoptic) == expected
    known = out_semantic != -1
    assert torch.equal(out_semantic[known], semantic[known]) and torch.equal(out_panoptic[known], panoptic[known])


def test_random_makes_exactly_the_share_unknown():
    semantic, panoptic = scene()
    out = run("random", 0.1, seed=1)
    unknown = unknown_pixels(*out)
    assert len(unknown) == round(0.1 * 120) == 12
    known = out[0] != -1
    assert torch.equal(out[0][known], semantic[known]) and torch.equal(out[1][known], panoptic[known])
    assert unknown != unknown_pixels(*run("random", 0.1, seed=2))
    assert unknown_pixels(*run("random", 0.0)) == set() and len(unknown_pixels(*run("random", 1.0))) == 120


def test_regions_are_the_drawn_rectangles():
    out = run("regions", 2, seed=4)
    expected = set()
    for top, left, h, w in random_rectangles(10, 12, 2, torch.Generator().manual_seed(4)):
        assert 1 <= h <= 10 // 3 and 1 <= w <= 12 // 3
        expected |= {(y, x) for y in range(top, top + h) for x in range(left, left + w)}
    assert unknown_pixels(*out) == expected and expected


def test_drop_makes_a_share_of_the_instances_unknown():
    semantic, panoptic = scene()
    instances = {201, 202, 203, 204, 301, 302}
    for level, count in [(0.5, 3), (0.0, 0), (1.0, 6)]:
        out_semantic, out_panoptic = run("drop", level, seed=5)
        unknown = unknown_pixels(out_semantic, out_panoptic)
        dropped = {i for i in instances if (panoptic == i).any() and bool((out_panoptic[panoptic == i] == -1).all())}
        assert len(dropped) == count
        assert unknown == {tuple(p) for p in torch.isin(panoptic, torch.tensor(sorted(dropped))).nonzero().tolist()}


def test_merge_joins_touching_instances_of_one_class_transitively():
    semantic, panoptic = scene()
    out_semantic, out_panoptic = run("merge", 1.0)
    assert torch.equal(out_semantic, semantic)
    expected = panoptic.clone()
    expected[torch.isin(panoptic, torch.tensor([202, 204]))] = 201  # the chain 201-202-204 takes 201
    assert torch.equal(out_panoptic, expected)
    assert int((out_panoptic != panoptic).sum()) == 12 + 4
    assert torch.equal(run("merge", 0.0)[1], panoptic)


def test_split_cuts_instances_in_two_across_their_longer_side():
    semantic, panoptic = scene()
    out_semantic, out_panoptic = run("split", 1.0)
    assert torch.equal(out_semantic, semantic)
    next_id = 303  # above every id of the map
    changed = 0
    for ident in (201, 202, 203, 204, 301, 302):  # every instance spans >= 2 pixels somewhere: all are cut
        ys, xs = (panoptic == ident).nonzero().unbind(1)
        ymin, ymax, xmin, xmax = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
        if ymax - ymin >= xmax - xmin:
            second = ys >= (ymin + ymax + 1) // 2
        else:
            second = xs >= (xmin + xmax + 1) // 2
        new_ids = out_panoptic[ys, xs]
        assert bool((new_ids[~second] == ident).all()) and int(second.sum()) > 0
        assert len(set(new_ids[second].tolist())) == 1 and int(new_ids[second][0]) >= next_id
        changed += int(second.sum())
    assert int((out_panoptic != panoptic).sum()) == changed
    assert len(out_panoptic.unique()) == len(panoptic.unique()) + 6
    half = run("split", 0.5)[1]
    assert len(half.unique()) == len(panoptic.unique()) + 3


def test_no_instances_gives_each_thing_class_one_id():
    semantic, panoptic = scene()
    out_semantic, out_panoptic = run("no_instances", 1.0)
    assert torch.equal(out_semantic, semantic)
    expected = panoptic.clone()
    expected[semantic == CAR] = 201
    expected[semantic == PERSON] = 301
    assert torch.equal(out_panoptic, expected)
    one_class = run("no_instances", 0.5, seed=3)[1]
    assert len(one_class.unique()) in (len(panoptic.unique()) - 3, len(panoptic.unique()) - 1)


def test_jitter_is_the_literal_warp_by_its_displacement():
    semantic, panoptic = scene()
    out_semantic, out_panoptic = run("jitter", 2.5, seed=6)
    dy, dx = elastic_displacement(10, 12, 2.5, torch.Generator().manual_seed(6))
    assert float(torch.maximum(dy.abs(), dx.abs()).max()) == pytest.approx(2.5)
    for y in range(10):
        for x in range(12):
            sy = min(max(round(y + float(dy[y, x])), 0), 9)
            sx = min(max(round(x + float(dx[y, x])), 0), 11)
            assert out_semantic[y, x] == semantic[sy, sx] and out_panoptic[y, x] == panoptic[sy, sx]
    assert int((out_panoptic != panoptic).sum()) > 0


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_deterministic_and_input_untouched(name):
    semantic, panoptic = scene()
    semantic[0, 0] = panoptic[0, 0] = -1  # already unknown pixels are kept as they are
    before = semantic.clone(), panoptic.clone()
    level = CORRUPTIONS[name].default
    first = corrupt_maps(semantic, panoptic, [Corruption(name, level)], THINGS, seed=7)
    second = corrupt_maps(semantic, panoptic, [Corruption(name, level)], THINGS, seed=7)
    assert torch.equal(semantic, before[0]) and torch.equal(panoptic, before[1])
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert first[0].data_ptr() != semantic.data_ptr() and first[1].data_ptr() != panoptic.data_ptr()


def test_corrupted_dataset_uses_per_sample_seeds_and_keeps_the_images():
    dataset = SyntheticScenes(3, 32, seed=1)
    corruptions = [parse_corruption("drop:0.5"), parse_corruption("jitter")]
    corrupted = CorruptedMaps(dataset, corruptions, seed=11)
    assert corrupted.num_classes == dataset.num_classes and len(corrupted) == 3
    backwards = [corrupted[i] for i in (2, 1, 0)][::-1]
    for index in range(3):
        clean, sample = dataset[index], corrupted[index]
        expected = corrupt_maps(
            clean["semantic"], clean["panoptic"], corruptions, dataset.thing_classes, sample_seed(11, index)
        )
        assert torch.equal(sample["semantic"], expected[0]) and torch.equal(sample["panoptic"], expected[1])
        assert torch.equal(backwards[index]["panoptic"], sample["panoptic"])
        assert torch.equal(sample["image"], clean["image"]) and sample["name"] == clean["name"]
    assert (corrupted[0]["semantic"] == -1).any()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("blur", r"unknown corruption 'blur'; choose NAME\[:LEVEL\] from ds\[:4\], edge\[:2\], random\[:0.1\]"),
        ("random:1.5", r"corruption random: level 1.5 is not valid; expected a number in 0..1 \(share of pixels"),
        ("edge:1.5", r"corruption edge: level 1.5 is not valid; expected an integer in 1..64"),
        ("drop:lots", r"corruption drop: level 'lots' is not a number .* choose NAME\[:LEVEL\] from ds"),
    ],
)
def test_bad_names_and_levels(text, match):
    with pytest.raises(ValueError, match=match) as error:
        parse_corruption(text)
    assert "\n" not in str(error.value)
    assert parse_corruption("edge") == Corruption("edge", 2) and str(parse_corruption("random:0.25")) == "random:0.25"
