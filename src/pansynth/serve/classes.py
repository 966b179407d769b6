"""The class table the page paints with: names, stuff/thing kinds, colours, the eraser's class.

Names come, in this order of preference, from the generator's metadata (``class_names`` and
``thing_classes``, which the trainer records in the export's ``config.json`` and in its
checkpoints), from the dataset given with ``--root``, or are ``class N`` with every class treated
as stuff (one segment per class).

Colours and groups come from the dataset's ``classes.json`` when it gives them (``"color": [r, g, b]``,
``"supercategory": "..."`` per class), else from the conventional palettes of :mod:`pansynth.serve.palettes`
(Cityscapes' label colours, COCO panoptic's category colours) when at least half of the class names are
found there, else they are generated.
"""

from __future__ import annotations

import colorsys
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pansynth.serve.palettes import CITYSCAPES_COLORS, CITYSCAPES_GROUPS, coco_entry

PALETTE_SOURCES = {
    "cityscapes": "Cityscapes label colours (cityscapesScripts labels.py)",
    "coco": "COCO panoptic category colours (panopticapi panoptic_coco_categories.json)",
    "classes.json": "the dataset's classes.json",
    "generated": "generated (no conventional palette for these class names)",
}


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
        given_colors: colours given with the classes (a Folder dataset's ``classes.json``), by class index.
        given_groups: groups (supercategories) given with the classes, by class index.
    """

    names: list[str]
    things: list[int]
    ignore_index: int | None
    background: int
    source: str
    notes: list[str] = field(default_factory=list)
    given_colors: dict[int, list[int]] = field(default_factory=dict)
    given_groups: dict[int, str] = field(default_factory=dict)

    def palette(self) -> tuple[str, list[list[int] | None], list[str | None]]:
        """(source key of :data:`PALETTE_SOURCES`, colour or None per class, group or None per class)."""
        count = len(self.names)
        if self.given_colors:
            colors = [self.given_colors.get(index) for index in range(count)]
            return "classes.json", colors, [self.given_groups.get(index) for index in range(count)]
        cityscapes = [CITYSCAPES_COLORS.get(name) for name in self.names]
        coco = [coco_entry(name) for name in self.names]
        known_cityscapes = sum(color is not None for color in cityscapes)
        known_coco = sum(color is not None for color, _ in coco)
        # the colours when half of the names are the dataset's, its groups only when nearly all are
        if known_cityscapes >= max(known_coco, 1) and 2 * known_cityscapes >= count:
            rgb = [None if color is None else list(color) for color in cityscapes]
            return "cityscapes", rgb, _most([CITYSCAPES_GROUPS.get(name) for name in self.names])
        if known_coco >= 1 and 2 * known_coco >= count:
            return "coco", [None if color is None else list(color) for color, _ in coco], _most([g for _, g in coco])
        return "generated", [None] * count, [self.given_groups.get(index) for index in range(count)]

    def colors(self) -> list[list[int]]:
        """One RGB colour per class: the palette's, else hues spread by the golden ratio so that
        neighbours in the list differ."""
        _, known, _ = self.palette()
        colors = []
        for index in range(len(self.names)):
            if known[index] is not None:
                colors.append(list(known[index]))
                continue
            hue = (0.1 + index * 0.618034) % 1.0
            # Things darker and more saturated than stuff, so objects stand out from the background.
            saturation, value = (0.75, 0.85) if index in self.things else (0.45, 0.92)
            colors.append([round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value)])
        return colors

    @property
    def palette_source(self) -> str:
        """Where the colours come from, in words (shown on the page)."""
        return PALETTE_SOURCES[self.palette()[0]]

    def to_json(self) -> list[dict[str, Any]]:
        """The palette for the page: ``[{"index", "name", "thing", "color", "group"}, ...]`` (+ the ignore value);
        ``group`` is the class's supercategory or None."""
        _, _, groups = self.palette()
        entries = [
            {"index": index, "name": name, "thing": index in self.things, "color": color, "group": group}
            for index, (name, color, group) in enumerate(zip(self.names, self.colors(), groups))
        ]
        if self.ignore_index is not None:
            entries.append(
                {"index": self.ignore_index, "name": "unlabeled", "thing": False, "color": [0, 0, 0], "group": None}
            )
        return entries


def _most(groups: list[str | None]) -> list[str | None]:
    """The groups when nearly all classes have one (a dataset's own names), else none."""
    known = sum(group is not None for group in groups)
    return groups if 10 * known >= 9 * len(groups) else [None] * len(groups)


def colors_from_classes_json(path: Path, num_classes: int) -> tuple[dict[int, list[int]], dict[int, str], list[str]]:
    """(colours, groups, notes) given per class in a Folder dataset's ``classes.json``
    (``"color": [r, g, b]`` and ``"supercategory"`` in the class entries); empty when it gives none."""
    try:
        entries = json.loads(Path(path).read_text()).get("classes", [])
    except (OSError, ValueError, AttributeError):
        return {}, {}, []
    colors: dict[int, list[int]] = {}
    groups: dict[int, str] = {}
    notes: list[str] = []
    for index, entry in enumerate(entries[:num_classes] if isinstance(entries, list) else []):
        if not isinstance(entry, dict):
            continue
        color = entry.get("color")
        if color is not None:
            if (
                isinstance(color, list)
                and len(color) == 3
                and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)
            ):
                colors[index] = list(color)
            else:
                notes.append(f"{path}: classes[{index}].color must be [r, g, b] with values 0..255; ignored")
        if isinstance(entry.get("supercategory"), str):
            groups[index] = entry["supercategory"]
    if colors and len(colors) < num_classes:
        notes.append(f"{path}: colours given for {len(colors)} of {num_classes} classes; the others are generated")
    return colors, groups, notes


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
    given_colors: dict[int, list[int]] = {}
    given_groups: dict[int, str] = {}
    root = getattr(dataset, "root", None)
    if root is not None and (Path(root) / "classes.json").is_file():
        given_colors, given_groups, color_notes = colors_from_classes_json(Path(root) / "classes.json", num_classes)
        notes.extend(color_notes)
    if ignore_index is not None:
        background = ignore_index
    else:
        stuff = [index for index in range(num_classes) if index not in things]
        background = stuff[0] if stuff else 0
    return ClassTable(names, things, ignore_index, background, source, notes, given_colors, given_groups)
