"""Inference: load a trained generator and synthesize images from semantic + panoptic maps.

Example::

    >>> from pansynth.inference import load_generator, synthesize
    >>> generator = load_generator("runs/demo")  # run dir, its export/ dir, or a checkpoint file  # doctest: +SKIP
    >>> images = synthesize(generator, semantic, panoptic)  # (N, 3, H, W) in [-1, 1]  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Load a generator for inference, in eval mode on ``device``.

    Args:
        path: one of
            - an exported weights directory (``config.json`` + ``model.safetensors``);
            - a run directory (uses its ``export/``, i.e. the EMA generator when the run kept one,
              else the newest loadable checkpoint's EMA / plain generator);
            - a checkpoint file ``step_XXXXXXXX.pt`` (loaded with ``weights_only=True``).
        device: ``cpu``, ``cuda``, ``cuda:1``... (``auto``: CUDA when available).

    Raises:
        FileNotFoundError: nothing loadable at ``path`` (the message says what was expected).
    """
    from pansynth.models import Generator
    from pansynth.train import checkpoint as ckpt
    from pansynth.train.distributed import resolve_device

    path = Path(path)
    device = resolve_device(device) if isinstance(device, str) and device in ("auto", "cuda", "cpu") else device
    if path.is_file() and path.name == WEIGHTS_NAME:
        path = path.parent
    if path.is_dir():
        for candidate in (path, path / "export"):
            if (candidate / CONFIG_NAME).is_file() and (candidate / WEIGHTS_NAME).is_file():
                return Generator.from_pretrained(candidate, device=device).eval()
        found = ckpt.load_latest_checkpoint(path / "checkpoints")
        if found is None:
            raise FileNotFoundError(
                f"{path}: no generator found; expected an exported weights folder ({CONFIG_NAME} + {WEIGHTS_NAME}), "
                "or a run directory with export/ or checkpoints/step_*.pt"
            )
        state, _ = found
    elif path.is_file():
        try:
            state = ckpt.load_checkpoint(path)
        except ValueError:
            raise
        except Exception as error:
            raise ValueError(f"{path}: not a loadable pansynth checkpoint ({type(error).__name__}: {error})") from error
    else:
        raise FileNotFoundError(f"{path} does not exist (expected a run directory, export directory or checkpoint)")
    generator = Generator(**state["generator_config"])
    weights = state["G_ema"] if state.get("G_ema") is not None else state["G"]
    generator.load_state_dict(weights)
    return generator.to(device).eval()


def _model_size(generator: nn.Module) -> tuple[int, int]:
    return tuple(int(v) for v in generator.output_size)  # type: ignore[return-value]


def check_semantic(semantic: Tensor, num_classes: int, ignore_index: int | None, name: str = "semantic") -> None:
    """Raise a ValueError when ``semantic`` holds classes the generator does not know."""
    valid = (semantic >= 0) & (semantic < num_classes)
    if ignore_index is not None:
        valid |= semantic == ignore_index
    if not bool(valid.all()):
        bad = sorted(set(semantic[~valid].unique().tolist()))[:5]
        allowed = f"0..{num_classes - 1}" + (f" or {ignore_index}" if ignore_index is not None else "")
        raise ValueError(f"{name} holds class values {bad} but the generator knows classes {allowed}")


@torch.no_grad()
def synthesize(generator: nn.Module, semantic: Tensor, panoptic: Tensor) -> Tensor:
    """Generate images for semantic + panoptic maps of any resolution.

    The maps are resized to the generator's size by nearest neighbour, the image is generated
    and resized back (antialiased bilinear) to the maps' resolution.

    Args:
        generator: a :class:`~pansynth.models.Generator` (put in eval mode here).
        semantic (Tensor[N, H, W] or Tensor[H, W]): class indices.
        panoptic (Tensor[N, H, W] or Tensor[H, W]): segment ids.

    Returns:
        Tensor[N, 3, H, W] (or Tensor[3, H, W] for unbatched maps) float32 in [-1, 1], on the CPU.
    """
    from pansynth.data.transforms import resize_image, resize_map

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
    generator.eval()
    device = next(generator.parameters()).device
    size = tuple(semantic.shape[-2:])
    model_size = _model_size(generator)
    semantic_in = resize_map(semantic.long(), model_size).to(device)
    panoptic_in = resize_map(panoptic.long(), model_size).to(device)
    images = generator(semantic_in, panoptic_in).float().cpu()
    images = resize_image(images, size)
    return images[0] if unbatched else images


def to_uint8(image: Tensor) -> np.ndarray:
    """Tensor[3, H, W] in [-1, 1] -> uint8 ndarray (H, W, 3)."""
    return ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


class MapFolder(Dataset):
    """Semantic + panoptic maps without images: ``root/semantic/*.png`` and ``root/panoptic/*.png``.

    Reads a :class:`~pansynth.data.folder.Folder` layout (the ``images/`` folder is not needed)
    or any folder holding those two sub-folders with the same file stems.

    Args:
        root: folder holding ``semantic/`` and ``panoptic/`` (or ``root/split/...`` with ``split``).
        split: optional split sub-folder.
    """

    def __init__(self, root: str | os.PathLike, split: str | None = None) -> None:
        from pansynth.data.io import list_files

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


def read_map_pair(semantic_path: str | os.PathLike, panoptic_path: str | os.PathLike) -> dict[str, Any]:
    """Read one semantic PNG (class indices) + panoptic PNG (16-bit or RGB-encoded ids) as a sample dict."""
    from pansynth.data.io import read_id_png, read_label_png

    semantic = torch.from_numpy(read_label_png(Path(semantic_path)))
    panoptic = torch.from_numpy(read_id_png(Path(panoptic_path)))
    if semantic.shape != panoptic.shape:
        raise ValueError(
            f"{semantic_path} is {tuple(semantic.shape)} but {panoptic_path} is {tuple(panoptic.shape)}: "
            "the maps must have the same size"
        )
    return {"semantic": semantic, "panoptic": panoptic, "name": Path(semantic_path).stem}


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
    generator: nn.Module,
    dataset: Dataset,
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write ``out_dir/<name>.png`` for every sample of ``dataset``, at the map's resolution.

    Args:
        generator: the generator (moved to ``device``).
        dataset: samples with ``semantic``, ``panoptic`` and ``name`` (any :mod:`pansynth.data`
            dataset, or :class:`MapFolder`).
        out_dir: output folder (created).
        batch_size: maps per forward pass (maps of different sizes go in different batches).
        overwrite: replace existing output files; otherwise an existing file is an error and
            nothing is written over it.

    Returns:
        the written paths, in dataset order.
    """
    from PIL import Image
    from tqdm import tqdm

    from pansynth.train.distributed import resolve_device

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(device, str) and device in ("auto", "cuda", "cpu"):
        device = resolve_device(device)
    generator = generator.to(device).eval()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} exists and is not a directory")
    names = getattr(dataset, "names", None)
    if names is not None and not overwrite:
        existing = [out_dir / f"{n}.png" for n in names if (out_dir / f"{n}.png").exists()]
        if existing:
            raise FileExistsError(
                f"{existing[0]} already exists ({len(existing)} output files would be overwritten); "
                "use another output folder or --overwrite"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    seen: set[str] = set()
    with tqdm(total=len(dataset), desc="synthesize", unit="img", disable=not progress) as bar:
        for batch in _batches(dataset, batch_size):
            targets = []
            for sample in batch:
                name = str(sample["name"])
                if name in seen:
                    raise ValueError(f"two inputs are named {name!r}; output file names must be unique")
                seen.add(name)
                target = out_dir / f"{name}.png"
                if target.exists() and not overwrite:
                    raise FileExistsError(f"{target} already exists; use another output folder or --overwrite")
                targets.append(target)
            semantic = torch.stack([s["semantic"] for s in batch])
            panoptic = torch.stack([s["panoptic"] for s in batch])
            images = synthesize(generator, semantic, panoptic)
            for image, target in zip(images, targets):
                tmp = target.with_name(f".{target.name}.tmp")
                Image.fromarray(to_uint8(image)).save(tmp, format="PNG")
                os.replace(tmp, target)
                written.append(target)
            bar.update(len(batch))
    return written
