"""The generator with unknown pixels: one segment without class, whatever ids they arrive with."""

from __future__ import annotations

import pytest
import torch

from pansynth.models import Generator
from pansynth.models.generator import build_label_map

NUM_CLASSES = 4


def _maps(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, NUM_CLASSES, (2, 8, 8), generator=g)
    semantic = coarse.repeat_interleave(8, 1).repeat_interleave(8, 2)
    panoptic = semantic * 100 + (torch.arange(64) >= 35).long()
    unknown = torch.zeros(2, 64, 64, dtype=torch.bool)
    unknown[:, 20:41, 13:50] = True  # across several segments, at odd offsets (holes in the upsampling)
    unknown[1, 50:, :9] = True
    return semantic, panoptic, unknown


@pytest.mark.parametrize("ignore_index", [None, 255])
def test_unknown_pixels_whatever_their_ids_and_value(ignore_index):
    torch.manual_seed(0)
    generator = Generator(NUM_CLASSES, size=(64, 64), ignore_index=ignore_index, ngf=4, spade_hidden=16).eval()
    semantic, panoptic, unknown = _maps()
    canonical = semantic.masked_fill(unknown, -1), panoptic.masked_fill(unknown, -1)
    with torch.no_grad():
        expected = generator(*canonical)
        # The painter's id 0, or the ids of the segments underneath: the same image.
        for ids in (panoptic.masked_fill(unknown, 0), panoptic):
            torch.testing.assert_close(generator(canonical[0], ids), expected, rtol=0, atol=0)
        if ignore_index is not None:  # the ignore value is unknown too (old inputs still work)
            torch.testing.assert_close(
                generator(semantic.masked_fill(unknown, 255), panoptic), expected, rtol=0, atol=0
            )
        # Unknown is not a class in disguise: painting the region as class 0 changes the image.
        assert not torch.allclose(
            generator(semantic.masked_fill(unknown, 0), panoptic.masked_fill(unknown, 7)), expected
        )
    label = generator.label_map(*canonical)
    if ignore_index is None:
        assert label.shape[1] == NUM_CLASSES and torch.equal(label.sum(1), (~unknown).float())
    else:
        assert label.shape[1] == NUM_CLASSES + 1 and torch.equal(label[:, NUM_CLASSES], unknown.float())


@pytest.mark.parametrize("ignore_index", [None, 255])
def test_the_label_map_of_unknown_pixels_compiles_in_one_graph(ignore_index):
    semantic, panoptic, unknown = _maps(1)
    semantic, panoptic = semantic.masked_fill(unknown, -1), panoptic.masked_fill(unknown, 0)
    torch._dynamo.reset()
    compiled = torch.compile(build_label_map, backend="aot_eager", fullgraph=True)
    expected = build_label_map(semantic, panoptic, NUM_CLASSES, ignore_index, True)
    torch.testing.assert_close(compiled(semantic, panoptic, NUM_CLASSES, ignore_index, True), expected, rtol=0, atol=0)
