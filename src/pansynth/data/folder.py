"""A plain folder layout for custom data (and for the procedural scenes of :mod:`.synthetic`).

Layout::

    root/classes.json                 {"classes": [{"name": "sky", "isthing": false}, ...],
                                       "ignore_index": null, "unknown": 255}
    root[/split]/images/<stem>.png|jpg
    root[/split]/semantic/<stem>.png  8/16-bit class index per pixel
    root[/split]/panoptic/<stem>.png  16-bit grayscale id, or RGB-encoded id = R + 256 G + 256^2 B

Unknown pixels: semantic pixels holding the ``"unknown"`` value of ``classes.json`` (or its
``"ignore_index"``, which also gives trained generators SPADE's don't-care channel) are read as
class and id -1, whatever their panoptic id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pansynth.data.base import PanopticDataset, SampleFiles, Transform
from pansynth.data.io import IMAGE_EXTENSIONS, list_files, read_id_png, read_label_png


def read_classes_json(path: Path) -> tuple[list[str], list[int], int | None]:
    """Parse ``classes.json`` into (class_names, thing_classes, ignore_index); see :func:`read_unknown_value`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: file not found; a Folder dataset needs classes.json at its root, e.g. "
            '{"classes": [{"name": "sky", "isthing": false}, {"name": "car", "isthing": true}], '
            '"ignore_index": null}'
        )
    try:
        content: Any = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    classes = content.get("classes") if isinstance(content, dict) else None
    if not isinstance(classes, list) or not classes:
        raise ValueError(f"{path}: expected an object with a non-empty list 'classes'")
    names: list[str] = []
    things: list[int] = []
    for index, entry in enumerate(classes):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f"{path}: classes[{index}] must be an object with a string 'name'")
        isthing = entry.get("isthing", False)
        if not isinstance(isthing, bool):
            raise ValueError(f"{path}: classes[{index}].isthing must be true or false, got {isthing!r}")
        names.append(entry["name"])
        if isthing:
            things.append(index)
    ignore_index = content.get("ignore_index")
    if ignore_index is not None and (
        not isinstance(ignore_index, int) or isinstance(ignore_index, bool) or ignore_index < len(names)
    ):
        raise ValueError(
            f"{path}: ignore_index must be null or an integer >= the number of classes ({len(names)}), "
            f"got {ignore_index!r}"
        )
    return names, things, ignore_index


def read_unknown_value(path: Path) -> int | None:
    """The ``"unknown"`` value of a ``classes.json`` (checked by :func:`read_classes_json` first), or None."""
    names, _, ignore_index = read_classes_json(path)
    content = json.loads(Path(path).read_text())
    unknown = content.get("unknown")
    if unknown is not None and (not isinstance(unknown, int) or isinstance(unknown, bool) or unknown < len(names)):
        raise ValueError(
            f"{path}: unknown must be null or an integer >= the number of classes ({len(names)}), got {unknown!r}"
        )
    return unknown


def write_classes_json(
    path: Path,
    class_names: list[str],
    thing_classes: list[int],
    ignore_index: int | None = None,
    unknown: int | None = None,
) -> None:
    """Write ``classes.json`` in the format :func:`read_classes_json` reads."""
    classes = [{"name": name, "isthing": index in thing_classes} for index, name in enumerate(class_names)]
    content = {"classes": classes, "ignore_index": ignore_index}
    if unknown is not None:
        content["unknown"] = unknown
    Path(path).write_text(json.dumps(content, indent=1) + "\n")


class Folder(PanopticDataset):
    """Custom data in the plain ``images/ semantic/ panoptic/`` layout (see module docstring).

    Args:
        root: dataset root holding ``classes.json``.
        split: sub-folder (``train``, ``val``...) holding the three map folders; None reads the root
            itself when it holds ``images/``, else its only split (several splits: name one).
        transform: callable applied to each sample dict (e.g. :class:`~pansynth.data.transforms.PairedTransform`).
        skip_bad: skip bad samples with a logged count instead of raising.

    Example:
        >>> dataset = Folder("data/scenes", split="train")  # doctest: +SKIP
        >>> sample = dataset[0]; sample["panoptic"].shape  # doctest: +SKIP
        torch.Size([128, 128])
    """

    def __init__(
        self, root: str | Path, split: str | None = None, transform: Transform | None = None, skip_bad: bool = False
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: dataset folder not found")
        self.root = root
        self.split = split
        self.class_names, self.thing_classes, self.ignore_index = read_classes_json(root / "classes.json")
        unknown = read_unknown_value(root / "classes.json")
        self.unknown_values = tuple(sorted({v for v in (self.ignore_index, unknown) if v is not None}))
        self.num_classes = len(self.class_names)
        if split is None and not (root / "images").is_dir():
            splits = sorted(p.name for p in root.iterdir() if (p / "images").is_dir())
            if len(splits) == 1:
                split = self.split = splits[0]
            elif splits:
                raise FileNotFoundError(
                    f"{root / 'images'}: directory not found; this dataset has the splits "
                    f"{', '.join(splits)}: choose one (--split NAME)"
                )
        base = root / split if split else root
        if not base.is_dir():
            splits = sorted(p.name for p in root.iterdir() if (p / "images").is_dir())
            raise FileNotFoundError(
                f"{base}: split folder {split!r} not found"
                + (f" (the splits are {', '.join(splits)})" if splits else "")
            )
        images = list_files(base / "images", IMAGE_EXTENSIONS)
        semantics = list_files(base / "semantic", (".png",))
        panoptics = list_files(base / "panoptic", (".png",))
        samples: list[SampleFiles] = []
        missing: list[str] = []
        for stem, image in images.items():
            lacking = [kind for kind, files in (("semantic", semantics), ("panoptic", panoptics)) if stem not in files]
            if lacking:
                missing.append(
                    f"{image}: missing partner file(s) "
                    + ", ".join(str(base / kind / f"{stem}.png") for kind in lacking)
                )
                continue
            samples.append(SampleFiles(stem, image, semantics[stem], panoptics[stem]))
        for kind, files in (("semantic", semantics), ("panoptic", panoptics)):
            for stem, path in files.items():
                if stem not in images:
                    missing.append(f"{path}: no image {base / 'images' / stem}.png|jpg for this {kind} map")
        super().__init__(samples, transform, skip_bad, missing, source=str(base))

    def _read_maps(self, files: SampleFiles) -> tuple[np.ndarray, np.ndarray]:
        return read_label_png(files.semantic), read_id_png(files.panoptic)
