"""Decoding and checking the map PNGs a client sends, and encoding the PNGs sent back.

Every check raises :class:`RequestError` with the HTTP status to answer and a message that
names the form field and what was expected, so the server turns it into ``{"error": ...}``.
The maps use the Folder layout of :mod:`pansynth.data.folder`: the semantic map is a
single-channel 8/16-bit PNG of class indices, the panoptic map a single-channel 8/16-bit PNG
of segment ids or an RGB(A) PNG with ``id = R + 256 G + 256**2 B``.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

# Single-channel PIL modes that hold one integer per pixel.
_SINGLE_CHANNEL_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")
# Panoptic ids are stored in at most three bytes (RGB encoding of the Folder layout).
MAX_SEGMENT_ID = 256**3 - 1


class RequestError(ValueError):
    """A request the server refuses: ``status`` is the HTTP status (4xx), the message is for the user."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def decode_map_png(data: bytes, field: str, size: tuple[int, int], kind: str) -> np.ndarray:
    """Decode one map PNG sent by a client.

    The size is checked from the PNG header before the pixels are decompressed, so a small
    file that unpacks into a huge image (a decompression bomb) is refused unread.

    Args:
        data: the file's bytes.
        field: the form field it came in (named in errors).
        size: (H, W) the map must have: the generator's size.
        kind: ``"semantic"`` (single channel) or ``"panoptic"`` (single channel or RGB-encoded ids).

    Returns:
        ndarray[H, W] int64.
    """
    if not data:
        raise RequestError(f"{field}: empty file; expected a PNG image")
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise RequestError(f"{field}: not a PNG file (expected the PNG signature)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=["PNG"])
    except Exception as error:  # Pillow raises many types for corrupt headers
        raise RequestError(f"{field}: unreadable PNG ({error})") from error
    height, width = size
    if image.size != (width, height):
        raise RequestError(
            f"{field}: the map is {image.size[1]}x{image.size[0]} (HxW) but this model takes {height}x{width} maps",
            status=422,
        )
    try:
        image.load()
    except Exception as error:
        raise RequestError(f"{field}: unreadable or truncated PNG ({error})") from error
    if image.mode in _SINGLE_CHANNEL_MODES:
        return np.asarray(image).astype(np.int64)
    if kind == "panoptic" and image.mode in ("RGB", "RGBA"):
        rgb = np.asarray(image)[..., :3].astype(np.int64)
        return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    expected = "a single-channel (8/16-bit grayscale) PNG"
    if kind == "panoptic":
        expected += " or an RGB PNG of ids R + 256 G + 256^2 B"
    raise RequestError(f"{field}: expected {expected}, got PNG mode {image.mode!r}", status=422)


def check_classes(semantic: np.ndarray, num_classes: int, unknown: int | None, field: str = "semantic") -> None:
    """Refuse class values outside ``0..num_classes - 1`` other than the ``unknown`` value (status 422)."""
    valid = (semantic >= 0) & (semantic < num_classes)
    if unknown is not None:
        valid |= semantic == unknown
    if not valid.all():
        y, x = (int(v[0]) for v in np.nonzero(~valid))
        allowed = f"0..{num_classes - 1}" + (f" or the unknown value {unknown}" if unknown is not None else "")
        raise RequestError(
            f"{field}: class {int(semantic[y, x])} at pixel (y={y}, x={x}) is not one of this model's classes "
            f"({allowed})",
            status=422,
        )


def check_ids(panoptic: np.ndarray, field: str = "panoptic") -> None:
    """Refuse segment ids outside ``0..MAX_SEGMENT_ID`` (status 422)."""
    invalid = (panoptic < 0) | (panoptic > MAX_SEGMENT_ID)
    if invalid.any():
        y, x = (int(v[0]) for v in np.nonzero(invalid))
        raise RequestError(
            f"{field}: segment id {int(panoptic[y, x])} at pixel (y={y}, x={x}) is outside 0..{MAX_SEGMENT_ID}",
            status=422,
        )


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a map (ndarray[h, w]) to ``size`` (H, W): source pixel ``floor(i * h / H)``."""
    height, width = size
    rows = np.arange(height) * array.shape[0] // height
    cols = np.arange(width) * array.shape[1] // width
    return array[rows[:, None], cols[None, :]]


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB image (ndarray[H, W, 3] uint8)."""
    buffer = io.BytesIO()
    # Level 1: a 256x256 image costs ~2 ms instead of ~10 ms at the default level, for ~10% more bytes.
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
