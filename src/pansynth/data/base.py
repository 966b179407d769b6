"""Common machinery of the dataset readers: sample records, validation, bad-sample skipping."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pansynth.data.io import read_image
from pansynth.ops.maps import UNKNOWN

logger = logging.getLogger("pansynth.data")

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]

# Errors that make a sample bad (as opposed to programming errors).
_BAD_SAMPLE_ERRORS = (ValueError, FileNotFoundError, OSError)


@dataclass(frozen=True)
class SampleFiles:
    """The files of one sample; ``extra`` holds per-format data (e.g. COCO segments_info)."""

    name: str
    image: Path
    semantic: Path
    panoptic: Path
    extra: Any = field(default=None, compare=False)


class PanopticDataset(Dataset):
    """Base class of the readers: a list of :class:`SampleFiles` plus a format-specific map decoder.

    Subclasses set ``num_classes``, ``ignore_index``, ``unknown_values``, ``class_names``,
    ``thing_classes`` and implement :meth:`_read_maps`. A sample is a dict with ``image``
    (Tensor[3, H, W] float32 in [-1, 1]), ``semantic`` (Tensor[H, W] int64), ``panoptic``
    (Tensor[H, W] int64) and ``name``. Pixels whose file value is one of ``unknown_values``
    (the dataset's unlabeled/void value) come out unknown: class and id
    :data:`~pansynth.ops.maps.UNKNOWN` (-1) in both maps.

    With ``skip_bad=False`` (default) the first problem raises a ValueError/FileNotFoundError that
    names the file. With ``skip_bad=True`` samples whose partner files are missing are dropped at
    construction, and a sample that fails to load (unreadable, size mismatch, bad class index) is
    replaced by the next good one; each skip is logged and recorded in :attr:`skipped`.
    """

    num_classes: int
    # A class value the generator encodes in SPADE's don't-care channel (None: no such channel).
    ignore_index: int | None
    # Semantic file values that mean "unknown" (read as -1 in both maps).
    unknown_values: tuple[int, ...] = ()
    class_names: list[str]
    thing_classes: list[int]

    def __init__(
        self,
        samples: Sequence[SampleFiles],
        transform: Transform | None = None,
        skip_bad: bool = False,
        missing: Sequence[str] = (),
        source: str = "",
    ) -> None:
        self.transform = transform
        self.skip_bad = skip_bad
        self.source = source
        # (sample name or file, reason) of every sample skipped so far (in this process).
        self.skipped: list[tuple[str, str]] = []
        self._bad_indices: set[int] = set()
        if missing:
            if not skip_bad:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise FileNotFoundError(f"{missing[0]}{more}")
            for reason in missing:
                self.skipped.append(("", reason))
            logger.warning("%s: skipped %d sample(s) with missing partner files", source, len(missing))
        if not samples:
            raise FileNotFoundError(f"{source}: no samples found (empty dataset folder?)")
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    # -- format-specific ---------------------------------------------------------------------
    def _read_maps(self, files: SampleFiles) -> tuple[np.ndarray, np.ndarray]:
        """Return (semantic, panoptic) as int64 (H, W) arrays at native resolution."""
        raise NotImplementedError

    def _read_image(self, files: SampleFiles) -> torch.Tensor:
        return read_image(files.image)

    # -- loading -----------------------------------------------------------------------------
    def _check_classes(self, semantic: np.ndarray, files: SampleFiles) -> None:
        invalid = ((semantic < 0) | (semantic >= self.num_classes)) & (semantic != UNKNOWN)
        if invalid.any():
            y, x = (int(v[0]) for v in np.nonzero(invalid))
            unknown = ", ".join(str(v) for v in self.unknown_values)
            unknown = f" or the unknown value {unknown}" if unknown else " (this dataset names no unknown value)"
            raise ValueError(
                f"{files.semantic}: class index {int(semantic[y, x])} at pixel (y={y}, x={x}) is outside "
                f"0..{self.num_classes - 1}{unknown}"
            )

    def _load_maps_checked(self, files: SampleFiles) -> tuple[np.ndarray, np.ndarray]:
        semantic, panoptic = self._read_maps(files)
        if semantic.shape != panoptic.shape:
            raise ValueError(
                f"{files.panoptic}: panoptic map is {panoptic.shape[0]}x{panoptic.shape[1]} (HxW) but "
                f"semantic map {files.semantic.name} is {semantic.shape[0]}x{semantic.shape[1]}"
            )
        if self.unknown_values:
            unknown = np.isin(semantic, np.asarray(self.unknown_values, dtype=semantic.dtype))
            semantic = np.where(unknown, UNKNOWN, semantic)
            panoptic = np.where(unknown, UNKNOWN, panoptic)
        self._check_classes(semantic, files)
        return semantic, panoptic

    def _load(self, index: int) -> Sample:
        files = self.samples[index]
        semantic, panoptic = self._load_maps_checked(files)
        image = self._read_image(files)
        if tuple(image.shape[1:]) != semantic.shape:
            raise ValueError(
                f"{files.image}: image is {image.shape[1]}x{image.shape[2]} (HxW) but its maps "
                f"({files.semantic.name}) are {semantic.shape[0]}x{semantic.shape[1]}"
            )
        return {
            "image": image,
            "semantic": torch.from_numpy(semantic),
            "panoptic": torch.from_numpy(panoptic),
            "name": files.name,
        }

    def _next_good(self, index: int, load: Callable[[int], Any]) -> Any:
        """Call ``load(index)``; with skip_bad, move on to the following samples on failure."""
        for offset in range(len(self.samples)):
            current = (index + offset) % len(self.samples)
            if self.skip_bad and current in self._bad_indices:
                continue
            try:
                return load(current)
            except _BAD_SAMPLE_ERRORS as error:
                if not self.skip_bad:
                    raise
                self._bad_indices.add(current)
                self.skipped.append((self.samples[current].name, str(error)))
                logger.warning(
                    "%s: skipping bad sample %s (%d skipped so far): %s",
                    self.source,
                    self.samples[current].name,
                    len(self.skipped),
                    error,
                )
        raise ValueError(f"{self.source}: every sample is bad ({len(self._bad_indices)} skipped)")

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += len(self.samples)
        if not 0 <= index < len(self.samples):
            raise IndexError(f"sample index {index} out of range for {len(self.samples)} samples")
        sample = self._next_good(index, self._load)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def load_maps(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(semantic, panoptic) int64 (H, W) arrays of a sample at native resolution, without the image.

        Cheaper than ``dataset[index]`` (no photograph decoding); used by the statistics.
        """
        return self._next_good(index, lambda i: self._load_maps_checked(self.samples[i]))

    def check_sample(self, index: int) -> None:
        """Fully load sample ``index`` (without transform); raise on any problem, even with skip_bad."""
        self._load(index)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.source!r}, samples={len(self)}, num_classes={self.num_classes}, "
            f"ignore_index={self.ignore_index}, unknown_values={self.unknown_values}, things={len(self.thing_classes)})"
        )
