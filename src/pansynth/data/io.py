"""Reading and writing the PNG/JPEG files of the dataset formats.

Every reader decodes whole arrays with numpy (no per-pixel Python loops) and turns
any decoding problem into a ``ValueError`` / ``FileNotFoundError`` that names the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pansynth.viz import uint8_to_image

# Single-channel PIL modes that hold one integer per pixel.
_SINGLE_CHANNEL_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def _open(path: Path) -> Image.Image:
    """Open and fully decode ``path``, reporting missing/unreadable/truncated/oversized files by name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that: both are refused here,
            # from the header, before a small file unpacks into gigabytes (a decompression bomb).
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ValueError(
            f"{path}: image too large to decode safely ({error}); a map or photo of this size is not a dataset "
            "image (a decompression bomb?)"
        ) from None
    except UnidentifiedImageError as error:
        raise ValueError(f"{path}: not a readable image file ({error})") from error
    except (OSError, SyntaxError) as error:
        # Pillow reports truncated or corrupt data as OSError ("image file is truncated").
        raise ValueError(f"{path}: unreadable or truncated image file ({error})") from error
    return image


def read_image(path: Path) -> torch.Tensor:
    """Read an RGB photograph.

    Returns:
        image (Tensor[3, H, W] float32): values in [-1, 1].
    """
    image = _open(path)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return uint8_to_image(np.asarray(image, dtype=np.uint8))


def read_label_png(path: Path) -> np.ndarray:
    """Read a single-channel (8/16-bit or palette) map of integers.

    Returns:
        labels (ndarray[H, W] int64): the stored value of each pixel (palette index for mode "P").
    """
    image = _open(path)
    if image.mode not in _SINGLE_CHANNEL_MODES:
        raise ValueError(
            f"{path}: expected a single-channel (8/16-bit grayscale or palette) label PNG, got mode {image.mode!r}"
        )
    return np.asarray(image).astype(np.int64)


def decode_rgb_ids(rgb: np.ndarray) -> np.ndarray:
    """Decode ids stored as colours: ``id = R + 256 * G + 256**2 * B`` (COCO panoptic convention).

    Args:
        rgb (ndarray[H, W, 3] uint8)
    Returns:
        ids (ndarray[H, W] int64)
    """
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def encode_rgb_ids(ids: np.ndarray) -> np.ndarray:
    """Inverse of :func:`decode_rgb_ids`; ids must lie in [0, 256**3).

    Args:
        ids (ndarray[H, W] integer)
    Returns:
        rgb (ndarray[H, W, 3] uint8)
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError(f"ids must lie in [0, {256**3}) to be stored as RGB, got {ids.min()}..{ids.max()}")
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)


def read_id_png(path: Path) -> np.ndarray:
    """Read a panoptic id map: single-channel (8/16-bit) values, or RGB/RGBA-encoded ids.

    Returns:
        ids (ndarray[H, W] int64)
    """
    image = _open(path)
    if image.mode in _SINGLE_CHANNEL_MODES:
        return np.asarray(image).astype(np.int64)
    if image.mode in ("RGB", "RGBA"):
        return decode_rgb_ids(np.asarray(image)[..., :3])
    raise ValueError(f"{path}: expected a 16-bit grayscale or RGB-encoded id PNG, got mode {image.mode!r}")


def write_label_png(path: Path, labels: np.ndarray) -> None:
    """Write a map of non-negative integers as an 8-bit (max < 256) or 16-bit PNG."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{path}: label map must be (H, W), got shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{path}: label values must be >= 0, got {labels.min()}")
    if labels.size == 0 or labels.max() < 256:
        Image.fromarray(labels.astype(np.uint8)).save(path)
    elif labels.max() < 65536:
        Image.fromarray(labels.astype(np.uint16)).save(path)
    else:
        raise ValueError(f"{path}: label values must be < 65536 for a 16-bit PNG, got {labels.max()}")


def write_id_png(path: Path, ids: np.ndarray) -> None:
    """Write a panoptic id map: 16-bit grayscale when ids < 65536, RGB-encoded otherwise."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and ids.max() >= 65536:
        Image.fromarray(encode_rgb_ids(ids)).save(path)
    else:
        if ids.size and ids.min() < 0:
            raise ValueError(f"{path}: panoptic ids must be >= 0, got {ids.min()}")
        Image.fromarray(ids.astype(np.uint16)).save(path)


def list_files(directory: Path, extensions: tuple[str, ...], suffix: str = "") -> dict[str, Path]:
    """Map stem (without ``suffix``) -> path for the files of ``directory`` with the given extensions.

    Raises FileNotFoundError when the directory is missing, ValueError when two files share a stem.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: directory not found")
    files: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        # Hidden files (".DS_Store", "._x.png" of macOS) are not samples.
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in extensions:
            continue
        stem = path.stem
        if suffix:
            if not stem.endswith(suffix):
                continue
            stem = stem[: -len(suffix)]
        if stem in files:
            raise ValueError(f"{directory}: two files share the name {stem!r}: {files[stem].name}, {path.name}")
        files[stem] = path
    return files
