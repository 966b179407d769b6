"""The class table the page paints with: names, stuff/thing kinds, colours, the eraser's class.

Names come, in this order of preference, from the exported generator's ``config.json``
(keys ``_class_names`` and ``_thing_classes``, written by the trainer), from the dataset given
with ``--root``, or are ``class N`` with every class treated as stuff (one segment per class).
"""

from __future__ import annotations

import colorsys
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.json"


@dataclass(frozen=True)
class ClassTable:
    """What the page needs to know about the classes of a model.

    Attributes:
        names: one name per class index ``0..K-1``.
        things: the thing classes (painted as separate instances); the others are stuff.
        ignore_index: the "unlabeled" class value the model accepts, or None.
        background: the class the eraser and "clear" paint: the ignore value when the model has one,
            else the first stuff class, else class 0.
        source: where the names came from: ``"checkpoint"``, ``"dataset"`` or ``"none"``.
        notes: remarks shown on the page and printed at start (e.g. why names are missing).
    """

    names: list[str]
    things: list[int]
    ignore_index: int | None
    background: int
    source: str
    notes: list[str] = field(default_factory=list)

    def colors(self) -> list[list[int]]:
        """One RGB colour per class: hues spread by the golden ratio so that neighbours in the list differ."""
        colors = []
        for index in range(len(self.names)):
            hue = (0.1 + index * 0.618034) % 1.0
            # Things darker and more saturated than stuff, so objects stand out from the background.
            saturation, value = (0.75, 0.85) if index in self.things else (0.45, 0.92)
            colors.append([round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value)])
        return colors

    def to_json(self) -> list[dict[str, Any]]:
        """The palette for the page: ``[{"index", "name", "thing", "color"}, ...]`` (+ the ignore value)."""
        entries = [
            {"index": index, "name": name, "thing": index in self.things, "color": color}
            for index, (name, color) in enumerate(zip(self.names, self.colors()))
        ]
        if self.ignore_index is not None:
            entries.append({"index": self.ignore_index, "name": "unlabeled", "thing": False, "color": [0, 0, 0]})
        return entries


def export_config_path(checkpoint: str | os.PathLike) -> Path | None:
    """The exported ``config.json`` that ``load_generator(checkpoint)`` reads, when there is one."""
    path = Path(checkpoint)
    if path.is_file():
        path = path.parent if path.suffix == ".safetensors" else None  # a step_*.pt checkpoint has no names
        if path is None:
            return None
    for candidate in (path / CONFIG_NAME, path / "export" / CONFIG_NAME):
        if candidate.is_file():
            return candidate
    return None


def names_from_export(config_path: Path, num_classes: int) -> tuple[list[str], list[int]] | str | None:
    """``(names, things)`` from an exported config.json, None when it has none, or a note saying why
    they are unusable."""
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"{config_path}: unreadable ({error})"
    names, things = config.get("_class_names"), config.get("_thing_classes", [])
    if names is None:
        return None
    if not (isinstance(names, list) and len(names) == num_classes and all(isinstance(n, str) for n in names)):
        return f"{config_path}: _class_names must be a list of {num_classes} strings; ignored"
    if not (
        isinstance(things, list)
        and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < num_classes for t in things)
    ):
        return f"{config_path}: _thing_classes must be a list of class indices 0..{num_classes - 1}; ignored"
    return list(names), sorted(set(things))


def build_class_table(
    num_classes: int,
    ignore_index: int | None,
    checkpoint: str | os.PathLike | None = None,
    dataset: Any = None,
) -> ClassTable:
    """The class table of a model loaded from ``checkpoint`` (optionally with its dataset).

    Args:
        num_classes: the generator's number of classes K.
        ignore_index: the generator's ignore value (or None).
        checkpoint: the path given to ``load_generator`` (its export's config.json is read for names).
        dataset: a dataset with ``class_names`` and ``thing_classes`` (used when the export has no names).
    """
    notes: list[str] = []
    found: tuple[list[str], list[int]] | None = None
    source = "none"
    config_path = export_config_path(checkpoint) if checkpoint is not None else None
    if config_path is not None:
        result = names_from_export(config_path, num_classes)
        if isinstance(result, str):
            notes.append(result)
        elif result is not None:
            found, source = result, "checkpoint"
    if found is None and dataset is not None:
        names = list(getattr(dataset, "class_names", []) or [])
        things = sorted({int(t) for t in getattr(dataset, "thing_classes", []) or []})
        if len(names) == num_classes and all(0 <= t < num_classes for t in things):
            found, source = (names, things), "dataset"
        else:
            notes.append(f"the dataset has {len(names)} class names but the model has {num_classes} classes")
    if found is None:
        notes.append(
            "class names and stuff/thing kinds are unknown: classes are shown as 'class N' and all paint as "
            "stuff (one segment per class); start with --root DATASET to get names and instances"
        )
        found = ([f"class {index}" for index in range(num_classes)], [])
    names, things = found
    if ignore_index is not None:
        background = ignore_index
    else:
        stuff = [index for index in range(num_classes) if index not in things]
        background = stuff[0] if stuff else 0
    return ClassTable(names, things, ignore_index, background, source, notes)
