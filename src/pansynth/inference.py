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

With a style generator (``model.style=instance``) every panoptic segment has a code: drawn from
(seed, segment id) by default, read from a real image with :func:`encode_style`, or taken by class
from a reference image with :func:`style_by_class`::

    >>> codes = encode_style(generator, image, semantic, panoptic)              # doctest: +SKIP
    >>> synthesize(generator, semantic, panoptic, codes=codes)                  # doctest: +SKIP
    >>> synthesize(generator, semantic, panoptic, seed=3, restyle={1001: 7})   # doctest: +SKIP
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
from pansynth.models.style import codes_for_ids
from pansynth.ops.maps import UNKNOWN, unknown_value
from pansynth.run_files import CHECKPOINT_DIR, EXPORT_DIR, list_checkpoints
from pansynth.viz import image_to_uint8, save_png

__all__ = [
    "MapFolder",
    "check_semantic",
    "encode_style",
    "load_generator",
    "read_map_pair",
    "sample_style",
    "segment_classes",
    "style_by_class",
    "synthesize",
    "synthesize_dataset",
]


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


def _batched_maps(semantic: Tensor, panoptic: Tensor) -> tuple[Tensor, Tensor, bool]:
    if semantic.shape != panoptic.shape or semantic.dim() not in (2, 3):
        raise ValueError(
            f"semantic and panoptic must both be (N, H, W) or (H, W) maps of one shape, got "
            f"{tuple(semantic.shape)} and {tuple(panoptic.shape)}"
        )
    if semantic.is_floating_point() or panoptic.is_floating_point():
        raise ValueError("semantic and panoptic maps must be integer tensors")
    unbatched = semantic.dim() == 2
    if unbatched:
        semantic, panoptic = semantic.unsqueeze(0), panoptic.unsqueeze(0)
    return semantic.long(), panoptic.long(), unbatched


def _check_style(generator: Generator, what: str) -> None:
    if getattr(generator, "style_encoder", None) is None:
        raise ValueError(f"{what} needs a generator with styles (trained with model.style=instance); this one has none")


@torch.no_grad()
def synthesize(
    generator: Generator,
    semantic: Tensor,
    panoptic: Tensor,
    *,
    codes: dict[int, Tensor] | None = None,
    class_codes: dict[int, Tensor] | None = None,
    seed: int | None = None,
    restyle: dict[int, int] | None = None,
) -> Tensor:
    """Generate images for semantic + panoptic maps of any resolution.

    The maps are resized to the generator's size by nearest neighbour, the image is generated
    and resized back (antialiased bilinear) to the maps' resolution.

    Args:
        generator: a :class:`~pansynth.models.Generator` (put in eval mode here).
        semantic (Tensor[N, H, W] or Tensor[H, W]): class indices; -1 or the model's unknown file value
            (:func:`~pansynth.ops.maps.unknown_value`) where unknown.
        panoptic (Tensor[N, H, W] or Tensor[H, W]): segment ids (any value at unknown pixels).
        codes: style generators only: ``{segment id: Tensor[style_dim]}`` (e.g. from :func:`encode_style`).
        class_codes: style generators only: ``{class: Tensor[style_dim]}`` for the segments without a
            code of their own (e.g. from :func:`style_by_class`).
        seed: style generators only: the other segments' codes are drawn from (seed, id) (default 0).
        restyle: style generators only: ``{segment id: seed}``, those segments drawn with their own seed.

    Returns:
        Tensor[N, 3, H, W] (or Tensor[3, H, W] for unbatched maps) float32 in [-1, 1], on the CPU.
    """
    semantic, panoptic, unbatched = _batched_maps(semantic, panoptic)
    check_semantic(semantic, generator.num_classes, generator.ignore_index)
    semantic, panoptic = read_unknown(semantic, panoptic, generator.num_classes, generator.ignore_index)
    styled = codes is not None or class_codes is not None or seed is not None or restyle is not None
    if styled:
        _check_style(generator, "codes, class_codes, seed or restyle")
    generator.eval()
    device = next(generator.parameters()).device
    size = tuple(semantic.shape[-2:])
    model_size = generator.output_size
    semantic_in = resize_map(semantic, model_size).to(device)
    panoptic_in = resize_map(panoptic, model_size).to(device)
    style = None
    if getattr(generator, "style_encoder", None) is not None:
        merged = {}
        if class_codes:
            ids, classes = segment_classes(semantic_in, panoptic_in)
            merged = {i: class_codes[c] for i, c in zip(ids.tolist(), classes.tolist()) if c in class_codes}
        merged.update(codes or {})
        style = generator.style_map(panoptic_in, seed=seed or 0, codes=merged, restyle=restyle)
    images = generator(semantic_in, panoptic_in) if style is None else generator(semantic_in, panoptic_in, style)
    images = images.float().cpu()
    images = resize_image(images, size)
    return images[0] if unbatched else images


def segment_classes(semantic: Tensor, panoptic: Tensor) -> tuple[Tensor, Tensor]:
    """The segment ids of a map and the class of each (that of its first pixel in raster order).

    Args:
        semantic, panoptic (Tensor[N, H, W] or Tensor[H, W]): integer maps.

    Returns:
        ``(ids, classes)``: Tensor[S] each, ids sorted.
    """
    ids, inverse = torch.unique(panoptic.long(), return_inverse=True)
    positions = torch.arange(inverse.numel(), device=inverse.device)
    first = torch.full((len(ids),), inverse.numel(), dtype=torch.long, device=inverse.device)
    first = first.scatter_reduce(0, inverse.reshape(-1), positions, reduce="amin")
    return ids, semantic.reshape(-1).long()[first]


def _reference(
    generator: Generator, image: Tensor, semantic: Tensor, panoptic: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A reference image and its maps, checked and resized to the generator's size, on its device."""
    semantic, panoptic, _ = _batched_maps(semantic, panoptic)
    if semantic.shape[0] != 1:
        raise ValueError(f"a style reference is one image with its maps, got a batch of {semantic.shape[0]} maps")
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
        raise ValueError(f"the reference image must be a (3, H, W) float tensor in [-1, 1], got {tuple(image.shape)}")
    if tuple(image.shape[-2:]) != tuple(semantic.shape[-2:]):
        raise ValueError(
            f"the reference image is {image.shape[-2]}x{image.shape[-1]} but its maps are "
            f"{semantic.shape[-2]}x{semantic.shape[-1]}: they must have the same size"
        )
    check_semantic(semantic, generator.num_classes, generator.ignore_index, name="the reference's semantic map")
    device = next(generator.parameters()).device
    size = generator.output_size
    image = resize_image(image.float(), size).unsqueeze(0).to(device)
    return image, resize_map(semantic, size).to(device), resize_map(panoptic, size).to(device), panoptic


@torch.no_grad()
def encode_style(generator: Generator, image: Tensor, semantic: Tensor, panoptic: Tensor) -> dict[int, Tensor]:
    """The style code of every segment of a real image: ``{segment id: Tensor[style_dim]}`` (the encoder's means).

    Args:
        image (Tensor[3, H, W]) in [-1, 1]; semantic, panoptic (Tensor[H, W]) its maps, the same size.
    """
    _check_style(generator, "encode_style")
    generator.eval()
    image, _, panoptic_in, _ = _reference(generator, image, semantic, panoptic)
    mu, _, _, keys = generator.encode(image, panoptic_in)
    return {int(identifier): code.float().cpu() for identifier, code in zip(keys[:, 1].tolist(), mu)}


@torch.no_grad()
def style_by_class(generator: Generator, image: Tensor, semantic: Tensor, panoptic: Tensor) -> dict[int, Tensor]:
    """Each class's mean code over the reference image's segments of that class: ``{class: Tensor[style_dim]}``.

    Pass it as ``class_codes`` to :func:`synthesize` for style transfer by class: every segment takes its
    class's code, and the classes the reference lacks are drawn from (seed, id). Unknown pixels of the
    reference are no class: they give no code (a target's unknown segment is drawn from (seed, id)).
    """
    _check_style(generator, "style_by_class")
    generator.eval()
    image, semantic_in, panoptic_in, _ = _reference(generator, image, semantic, panoptic)
    mu, _, _, keys = generator.encode(image, panoptic_in)
    ids, classes = segment_classes(semantic_in, panoptic_in)  # ids sorted, as keys[:, 1]
    assert torch.equal(ids.cpu(), keys[:, 1].cpu())
    unique_classes, which = torch.unique(classes, return_inverse=True)
    sums = mu.float().new_zeros(len(unique_classes), mu.shape[1]).index_add_(0, which, mu.float())
    counts = torch.bincount(which, minlength=len(unique_classes)).unsqueeze(1).to(sums.dtype)
    return {int(c): code.cpu() for c, code in zip(unique_classes.tolist(), sums / counts) if c != UNKNOWN}


def sample_style(
    generator: Generator,
    panoptic: Tensor,
    seed: int | torch.Generator = 0,
    restyle: dict[int, int] | None = None,
) -> dict[int, Tensor]:
    """Codes drawn for the segments of a map: ``{segment id: Tensor[style_dim]}``.

    Each code is a function of (seed, id) alone (:func:`pansynth.models.style.sample_codes`). With a
    ``torch.Generator`` the seed is drawn from it; ``restyle`` gives some ids their own seeds.
    """
    _check_style(generator, "sample_style")
    if isinstance(seed, torch.Generator):
        seed = int(torch.randint(0, 2**62, (), generator=seed))
    ids = torch.unique(panoptic.long()).cpu()
    table = codes_for_ids(ids, generator.style_dim, seed, None, restyle)
    return dict(zip(ids.tolist(), table))


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
    *,
    samples: int = 1,
    seed: int | None = None,
    restyle: dict[int, int | None] | None = None,
    class_codes: dict[int, Tensor] | None = None,
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
        samples: style generators: images per map, ``<name>_<k>.png`` for k = 0..samples-1 (with
            ``samples=1``: ``<name>.png``); image k draws its codes with seed ``seed + k``.
        seed, restyle, class_codes: style generators: see :func:`synthesize`. Every id of ``restyle``
            must be in every map; an id whose seed is None is drawn with the image's seed + 1.

    Returns:
        the written paths, in dataset order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    if samples > 1 or seed is not None or restyle or class_codes is not None:
        _check_style(generator, "--samples, --seed, --restyle or a style reference")
    names = [""] if samples == 1 else [f"_{k}" for k in range(samples)]
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
        for suffix in names:
            if not overwrite and (out_dir / f"{name}{suffix}.png").exists():
                raise FileExistsError(
                    f"{out_dir / (name + suffix + '.png')} already exists; use another output folder or --overwrite"
                )
        check_semantic(
            sample["semantic"], generator.num_classes, generator.ignore_index, name=_source(dataset, index, sample)
        )
        if restyle:
            present = set(torch.unique(torch.as_tensor(sample["panoptic"])).tolist())
            missing = sorted(set(restyle) - present)
            if missing:
                raise ValueError(
                    f"--restyle {missing[0]}: no segment with this id in {_source(dataset, index, sample)} "
                    f"(its ids: {sorted(present)[:10]}{' ...' if len(present) > 10 else ''})"
                )
    generator = generator.to(device).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tqdm(total=len(dataset), desc="synthesize", unit="img", disable=not progress) as bar:
        for batch in _batches(dataset, batch_size):
            semantic = torch.stack([s["semantic"] for s in batch])
            panoptic = torch.stack([s["panoptic"] for s in batch])
            for k, suffix in enumerate(names):
                style = {}
                if getattr(generator, "style_encoder", None) is not None:
                    image_seed = (seed or 0) + k
                    own = {i: image_seed + 1 if s is None else s for i, s in (restyle or {}).items()}
                    style = {"seed": image_seed, "restyle": own, "class_codes": class_codes}
                images = synthesize(generator, semantic, panoptic, **style)
                for image, sample in zip(images, batch):
                    written.append(save_png(image_to_uint8(image), out_dir / f"{sample['name']}{suffix}.png"))
            bar.update(len(batch))
    return written
