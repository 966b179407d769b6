"""Inference: exported generator weights -> images. Knows nothing of training runs but their file names.

The weights are those that ``pansynth train`` exports into ``RUN/export`` (``config.json`` +
``model.safetensors``, written by :meth:`pansynth.models.Generator.save_pretrained`); a training
checkpoint is read by :func:`pansynth.train.checkpoint.load_generator_from_checkpoint` instead.

Example:
    >>> import torch
    >>> from pansynth.inference import load_generator, synthesize
    >>> generator = load_generator("runs/demo")                  # doctest: +SKIP
    >>> semantic = torch.zeros(1, 64, 64, dtype=torch.long)      # class indices
    >>> panoptic = torch.zeros(1, 64, 64, dtype=torch.long)      # segment ids
    >>> images = synthesize(generator, semantic, panoptic)       # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from pansynth.data.io import list_files, read_id_png, read_label_png
from pansynth.data.transforms import resize_image, resize_map
from pansynth.devices import resolve_device
from pansynth.models import Generator
from pansynth.models.generator import CONFIG_NAME, WEIGHTS_NAME
from pansynth.ops.maps import UNKNOWN, unknown_value
from pansynth.run_files import CHECKPOINT_DIR, EXPORT_DIR, list_checkpoints
from pansynth.viz import image_to_uint8, save_png

__all__ = ["MapFolder", "check_semantic", "load_generator", "read_map_pair", "synthesize", "synthesize_dataset"]


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Generator:
    """Load exported generator weights for inference, in eval mode on ``device``.

    Args:
        path: an exported weights folder (``config.json`` + ``model.safetensors``), its
            ``model.safetensors`` file, or a run directory (its ``export/``: the EMA generator
            when the run kept one). A run whose export is older than its newest checkpoint (a
            training killed between the two saves) gets a warning naming both steps.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.

    Raises:
        FileNotFoundError: nothing loadable at ``path`` (the message says what was expected).
        ValueError: the files are there but unreadable or inconsistent.
    """
    path = Path(path)
    device = resolve_device(device)
    if path.is_file() and path.name == WEIGHTS_NAME:
        path = path.parent
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a run directory or an exported weights folder)")
    if path.is_file():
        raise ValueError(
            f"{path} is a file: give a run directory or its export/ folder ({CONFIG_NAME} + {WEIGHTS_NAME}); "
            "a training checkpoint step_*.pt is read by `pansynth synthesize --checkpoint FILE`"
        )
    if (path / CONFIG_NAME).is_file():
        return Generator.from_pretrained(path, device=device)
    export = path / EXPORT_DIR
    if not (export / CONFIG_NAME).is_file():
        checkpoints = list_checkpoints(path / CHECKPOINT_DIR)
        hint = (
            f"; the run has checkpoints: re-run its training command to export them, or pass "
            f"{checkpoints[-1][1]} to `pansynth synthesize --checkpoint`"
            if checkpoints
            else ""
        )
        raise FileNotFoundError(
            f"{path}: no generator found; expected an exported weights folder ({CONFIG_NAME} + {WEIGHTS_NAME}) "
            f"or a run directory with {EXPORT_DIR}/{hint}"
        )
    generator = Generator.from_pretrained(export, device=device)
    _warn_if_stale(path, generator.metadata.get("step"))
    return generator


def _warn_if_stale(run: Path, export_step: Any) -> None:
    checkpoints = list_checkpoints(run / CHECKPOINT_DIR)
    if checkpoints and isinstance(export_step, int) and checkpoints[-1][0] > export_step:
        step, newest = checkpoints[-1]
        print(
            f"warning: {run / EXPORT_DIR} holds the generator of step {export_step} but the run has a checkpoint "
            f"of step {step}; re-run the training command to refresh the export, or use --checkpoint {newest}",
            file=sys.stderr,
        )


def check_semantic(semantic: Tensor, num_classes: int, ignore_index: int | None, name: str = "semantic") -> None:
    """Raise a ValueError naming ``name`` when ``semantic`` holds values that are neither classes nor unknown.

    Unknown is -1 (the in-library value) or the model's file value for it
    (:func:`~pansynth.ops.maps.unknown_value`: its ``ignore_index``, else 255 or 65535).
    """
    unknown = unknown_value(num_classes, ignore_index)
    valid = ((semantic >= 0) & (semantic < num_classes)) | (semantic == UNKNOWN) | (semantic == unknown)
    if not bool(valid.all()):
        bad = sorted(set(semantic[~valid].unique().tolist()))[:5]
        raise ValueError(
            f"{name} holds class values {bad} but the generator knows classes 0..{num_classes - 1} "
            f"and the unknown value {unknown} (or -1)"
        )


def read_unknown(
    semantic: Tensor, panoptic: Tensor, num_classes: int, ignore_index: int | None
) -> tuple[Tensor, Tensor]:
    """Maps as read from files -> in-library maps: the model's unknown file value becomes class and id -1."""
    unknown = (semantic == unknown_value(num_classes, ignore_index)) | (semantic == UNKNOWN)
    return semantic.long().masked_fill(unknown, UNKNOWN), panoptic.long().masked_fill(unknown, UNKNOWN)


@torch.no_grad()
def synthesize(generator: Generator, semantic: Tensor, panoptic: Tensor) -> Tensor:
    """Generate images for semantic + panoptic maps of any resolution.

    The maps are resized to the generator's size by nearest neighbour, the image is generated
    and resized back (antialiased bilinear) to the maps' resolution.

    Args:
        generator: a :class:`~pansynth.models.Generator` (put in eval mode here).
        semantic (Tensor[N, H, W] or Tensor[H, W]): class indices; -1 or the model's unknown file value
            (:func:`~pansynth.ops.maps.unknown_value`) where unknown.
        panoptic (Tensor[N, H, W] or Tensor[H, W]): segment ids (any value at unknown pixels).

    Returns:
        Tensor[N, 3, H, W] (or Tensor[3, H, W] for unbatched maps) float32 in [-1, 1], on the CPU.
    """
    if semantic.shape != panoptic.shape or semantic.dim() not in (2, 3):
        raise ValueError(
            f"semantic and panoptic must both be (N, H, W) or (H, W) maps of one shape, got "
            f"{tuple(semantic.shape)} and {tuple(panoptic.shape)}"
        )
    unbatched = semantic.dim() == 2
    if unbatched:
        semantic, panoptic = semantic.unsqueeze(0), panoptic.unsqueeze(0)
    if semantic.is_floating_point() or panoptic.is_floating_point():
        raise ValueError("semantic and panoptic maps must be integer tensors")
    check_semantic(semantic, generator.num_classes, generator.ignore_index)
    semantic, panoptic = read_unknown(semantic, panoptic, generator.num_classes, generator.ignore_index)
    generator.eval()
    device = next(generator.parameters()).device
    size = tuple(semantic.shape[-2:])
    model_size = generator.output_size
    semantic_in = resize_map(semantic.long(), model_size).to(device)
    panoptic_in = resize_map(panoptic.long(), model_size).to(device)
    images = generator(semantic_in, panoptic_in).float().cpu()
    images = resize_image(images, size)
    return images[0] if unbatched else images


class MapFolder(Dataset):
    """Semantic + panoptic maps without images: ``root/semantic/*.png`` and ``root/panoptic/*.png``.

    Reads a :class:`~pansynth.data.folder.Folder` layout (the ``images/`` folder is not needed)
    or any folder holding those two sub-folders with the same file stems.

    Args:
        root: folder holding ``semantic/`` and ``panoptic/`` (or ``root/split/...`` with ``split``).
        split: optional split sub-folder.
    """

    def __init__(self, root: str | os.PathLike, split: str | None = None) -> None:
        base = Path(root) / split if split else Path(root)
        if not (base / "semantic").is_dir() or not (base / "panoptic").is_dir():
            splits = sorted(p.name for p in base.iterdir() if (p / "semantic").is_dir()) if base.is_dir() else []
            hint = f" (it has splits {', '.join(splits)}: add --split NAME)" if splits else ""
            raise FileNotFoundError(
                f"{base}: expected the folders semantic/ and panoptic/ with PNG maps of the same names{hint}"
            )
        semantic = list_files(base / "semantic", (".png",))
        panoptic = list_files(base / "panoptic", (".png",))
        missing = sorted(set(semantic) ^ set(panoptic))
        if missing:
            raise ValueError(
                f"{base}: semantic/ and panoptic/ must hold the same file names; unmatched: {', '.join(missing[:5])}"
            )
        if not semantic:
            raise FileNotFoundError(f"{base}/semantic: no PNG maps found")
        self.base = base
        self.names = sorted(semantic)
        self.files = [(semantic[n], panoptic[n]) for n in self.names]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        semantic_path, panoptic_path = self.files[index]
        return read_map_pair(semantic_path, panoptic_path)

    def sample_source(self, index: int) -> str:
        """The semantic map's file of sample ``index`` (for error messages)."""
        return str(self.files[index][0])


def read_map_pair(semantic_path: str | os.PathLike, panoptic_path: str | os.PathLike) -> dict[str, Any]:
    """Read one semantic PNG (class indices) + panoptic PNG (16-bit or RGB-encoded ids) as a sample dict."""
    semantic = torch.from_numpy(read_label_png(Path(semantic_path)))
    panoptic = torch.from_numpy(read_id_png(Path(panoptic_path)))
    if semantic.shape != panoptic.shape:
        raise ValueError(
            f"{semantic_path} is {tuple(semantic.shape)} but {panoptic_path} is {tuple(panoptic.shape)}: "
            "the maps must have the same size"
        )
    return {"semantic": semantic, "panoptic": panoptic, "name": Path(semantic_path).stem, "source": str(semantic_path)}


def _source(dataset: Dataset, index: int, sample: dict[str, Any]) -> str:
    """Where sample ``index`` comes from, for error messages: its semantic map's file when known."""
    if "source" in sample:
        return str(sample["source"])
    if isinstance(dataset, Subset):
        return _source(dataset.dataset, dataset.indices[index], sample)
    if hasattr(dataset, "sample_source"):
        return dataset.sample_source(index)
    samples = getattr(dataset, "samples", None)
    if samples is not None and hasattr(samples[index], "semantic"):
        return str(samples[index].semantic)
    return f"sample {sample.get('name', index)!r}"


def _batches(dataset: Dataset, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Consecutive samples grouped into batches of one map size."""
    batch: list[dict[str, Any]] = []
    for index in range(len(dataset)):
        sample = dataset[index]
        if batch and (len(batch) == batch_size or batch[0]["semantic"].shape != sample["semantic"].shape):
            yield batch
            batch = []
        batch.append(sample)
    if batch:
        yield batch


def synthesize_dataset(
    generator: Generator,
    dataset: Dataset,
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write ``out_dir/<name>.png`` for every sample of ``dataset``, at the map's resolution.

    Every map is read and checked (classes the generator knows, unique names, no existing output
    unless ``overwrite``) before the first image is written, so a bad map stops the command with
    its file named and nothing written.

    Args:
        generator: the generator (moved to ``device``).
        dataset: samples with ``semantic``, ``panoptic`` and ``name`` (any :mod:`pansynth.data`
            dataset, or :class:`MapFolder`).
        out_dir: output folder (created).
        batch_size: maps per forward pass (maps of different sizes go in different batches).
        overwrite: replace existing output files; otherwise an existing file is an error.

    Returns:
        the written paths, in dataset order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = resolve_device(device)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} exists and is not a directory")
    seen: set[str] = set()
    for index in range(len(dataset)):
        sample = dataset[index]
        name = str(sample["name"])
        if name in seen:
            raise ValueError(f"two inputs are named {name!r}; output file names must be unique")
        seen.add(name)
        if not overwrite and (out_dir / f"{name}.png").exists():
            raise FileExistsError(
                f"{out_dir / (name + '.png')} already exists; use another output folder or --overwrite"
            )
        check_semantic(
            sample["semantic"], generator.num_classes, generator.ignore_index, name=_source(dataset, index, sample)
        )
    generator = generator.to(device).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tqdm(total=len(dataset), desc="synthesize", unit="img", disable=not progress) as bar:
        for batch in _batches(dataset, batch_size):
            semantic = torch.stack([s["semantic"] for s in batch])
            panoptic = torch.stack([s["panoptic"] for s in batch])
            images = synthesize(generator, semantic, panoptic)
            for image, sample in zip(images, batch):
                written.append(save_png(image_to_uint8(image), out_dir / f"{sample['name']}.png"))
            bar.update(len(batch))
    return written
