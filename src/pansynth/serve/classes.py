"""The class table the page paints with: names, stuff/thing kinds, colours, the eraser's class.

Names come, in this order of preference, from the generator's metadata (``class_names`` and
``thing_classes``, which the trainer records in the export's ``config.json`` and in its
checkpoints), from the dataset given with ``--root``, or are ``class N`` with every class treated
as stuff (one segment per class).
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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


def names_from_metadata(metadata: Mapping[str, Any], num_classes: int) -> tuple[list[str], list[int]] | str | None:
    """``(names, things)`` from a generator's metadata, None when it has none, or a note saying why
    they are unusable."""
    names, things = metadata.get("class_names"), metadata.get("thing_classes", [])
    if names is None:
        return None
    where = "the checkpoint's class names (_class_names in its export/config.json)"
    if not (isinstance(names, list) and len(names) == num_classes and all(isinstance(n, str) for n in names)):
        return f"{where} must be a list of {num_classes} strings; ignored"
    if not (
        isinstance(things, list)
        and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < num_classes for t in things)
    ):
        return f"{where}: the thing classes must be a list of class indices 0..{num_classes - 1}; ignored"
    return list(names), sorted(set(things))


def build_class_table(
    num_classes: int,
    ignore_index: int | None,
    metadata: Mapping[str, Any] | None = None,
    dataset: Any = None,
) -> ClassTable:
    """The class table of a generator (optionally with its dataset).

    Args:
        num_classes: the generator's number of classes K.
        ignore_index: the generator's ignore value (or None).
        metadata: the generator's ``metadata`` (``class_names``, ``thing_classes`` when the trainer recorded them).
        dataset: a dataset with ``class_names`` and ``thing_classes`` (used when the metadata has no names).
    """
    notes: list[str] = []
    found: tuple[list[str], list[int]] | None = None
    source = "none"
    if metadata:
        result = names_from_metadata(metadata, num_classes)
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
