"""Styles meet unknown pixels: a style generator synthesizes maps with unknown pixels, the codes of the
known segments do not depend on the photograph at unknown pixels when the encoder's layers are panoptic
(and do with plain layers), and style transfer by class takes no code from the reference's unknown pixels."""

from __future__ import annotations

import pytest
import torch

from pansynth.inference import encode_style, style_by_class, synthesize
from pansynth.models import Generator
from pansynth.ops.maps import UNKNOWN

SIZE = (32, 64)


def _maps() -> tuple[torch.Tensor, torch.Tensor]:
    """Sky over road, two touching cars, a person; an unknown block across the sky, both cars and the person."""
    semantic = torch.zeros(SIZE, dtype=torch.long)
    semantic[16:] = 1
    panoptic = semantic * 100 + 7
    semantic[10:25, 8:30] = 2
    panoptic[10:25, 8:19] = 2001
    panoptic[10:25, 19:30] = 2002
    semantic[5:28, 40:47] = 3
    panoptic[5:28, 40:47] = 3001
    semantic[8:20, 20:44] = UNKNOWN
    panoptic[8:20, 20:44] = UNKNOWN
    return semantic, panoptic


def _generator(conv: str, upsample: str) -> Generator:
    torch.manual_seed(0)
    return (
        Generator(5, size=SIZE, ngf=2, spade_hidden=8, style="instance", style_dim=3, conv=conv, upsample=upsample)
        .double()
        .eval()
    )


@pytest.mark.parametrize(("conv", "upsample"), [("panoptic", "panoptic"), ("standard", "nearest")])
def test_known_codes_ignore_the_photo_at_unknown_pixels_only_with_panoptic_layers(conv, upsample):
    generator = _generator(conv, upsample)
    semantic, panoptic = _maps()
    unknown = semantic == UNKNOWN
    torch.manual_seed(1)
    photo = torch.rand(3, *SIZE, dtype=torch.float64) * 2 - 1
    other = photo.clone()
    other[:, unknown] = torch.rand(3, int(unknown.sum()), dtype=torch.float64) * 2 - 1
    codes, other_codes = (
        encode_style(generator, photo, semantic, panoptic),
        encode_style(generator, other, semantic, panoptic),
    )
    assert sorted(codes) == [UNKNOWN, 7, 107, 2001, 2002, 3001]  # the unknown pixels are one segment of their own
    assert not torch.equal(codes[UNKNOWN], other_codes[UNKNOWN])
    changed = [ident for ident in codes if ident != UNKNOWN and not torch.equal(codes[ident], other_codes[ident])]
    if conv == "panoptic":
        assert changed == []  # bit for bit, in float64
    else:
        assert len(changed) >= 3  # plain layers mix the unknown pixels into the known segments' codes


def test_style_synthesis_with_unknown_pixels_and_transfer_by_class():
    generator = _generator("panoptic", "panoptic")
    semantic, panoptic = _maps()
    image = synthesize(generator, semantic, panoptic, seed=3)
    again = synthesize(generator, semantic, panoptic, seed=3)
    other = synthesize(generator, semantic, panoptic, seed=4)
    assert image.shape == (3, *SIZE) and torch.isfinite(image).all() and torch.equal(image, again)
    assert not torch.equal(image, other)
    # restyling the unknown segment redraws its code only: the code map elsewhere is unchanged
    style = generator.style_map(panoptic[None], seed=3)
    restyled = generator.style_map(panoptic[None], seed=3, restyle={UNKNOWN: 9})
    moved = (style != restyled).any(dim=1)[0]
    assert torch.equal(moved, semantic == UNKNOWN)
    # the reference's unknown pixels give no class code; the target's unknown segment is drawn from (seed, id)
    torch.manual_seed(2)
    photo = torch.rand(3, *SIZE, dtype=torch.float64) * 2 - 1
    by_class = style_by_class(generator, photo, semantic, panoptic)
    assert sorted(by_class) == [0, 1, 2, 3]
    transferred = synthesize(generator, semantic, panoptic, class_codes=by_class, seed=3)
    known = {7: 0, 107: 1, 2001: 2, 2002: 2, 3001: 3}  # segment id -> class
    codes = {ident: by_class[cls] for ident, cls in known.items()}
    expected = generator(semantic[None], panoptic[None], generator.style_map(panoptic[None], seed=3, codes=codes))
    torch.testing.assert_close(transferred, expected[0].float(), rtol=0, atol=0)
    assert not torch.equal(transferred, image)
