"""The class table's colours and groups: the datasets' conventional palettes, a Folder classes.json's own."""

from __future__ import annotations

import json
from types import SimpleNamespace

from pansynth.data.cityscapes import CITYSCAPES_CLASS_NAMES, CITYSCAPES_THING_CLASSES
from pansynth.data.coco_stuff import COCO_STUFF_CLASS_NAMES, COCO_STUFF_THING_CLASSES
from pansynth.serve.classes import build_class_table
from pansynth.serve.palettes import COCO_MERGED, COCO_PANOPTIC


def _entries(table) -> dict[str, dict]:
    return {entry["name"]: entry for entry in table.to_json()}


def test_cityscapes_names_get_the_official_label_colours():
    table = build_class_table(
        35, None, {"class_names": CITYSCAPES_CLASS_NAMES, "thing_classes": CITYSCAPES_THING_CLASSES}
    )
    entries = _entries(table)
    assert "Cityscapes" in table.palette_source
    assert entries["road"]["color"] == [128, 64, 128] and entries["road"]["group"] == "flat"
    assert entries["sky"]["color"] == [70, 130, 180] and entries["car"]["color"] == [0, 0, 142]
    assert entries["person"]["group"] == "human" and entries["person"]["thing"]


def test_coco_stuff_names_get_coco_panoptic_colours_merged_categories_and_supercategories():
    table = build_class_table(
        182, 255, {"class_names": COCO_STUFF_CLASS_NAMES, "thing_classes": COCO_STUFF_THING_CLASSES}
    )
    entries = _entries(table)
    assert "COCO panoptic" in table.palette_source
    assert entries["car"]["color"] == [0, 0, 142] and entries["car"]["group"] == "vehicle"
    # classes merged into one COCO panoptic category share its colour
    for name, merged in COCO_MERGED.items():
        assert entries[name]["color"] == list(COCO_PANOPTIC[merged][0]), name
    assert entries["clouds"]["color"] == entries["sky-other"]["color"] == [70, 130, 180]
    # every class has a group; the ids COCO never annotates get a generated colour, not a missing one
    assert all(entries[name]["group"] for name in COCO_STUFF_CLASS_NAMES)
    assert all(len(entries[name]["color"]) == 3 for name in ("street sign", "hat", "hair brush"))
    assert entries["unlabeled"]["color"] == [0, 0, 0]


def test_half_known_names_take_the_colours_but_not_the_groups():
    table = build_class_table(4, None, {"class_names": ["sky", "road", "disc", "cone"], "thing_classes": [2, 3]})
    entries = _entries(table)
    assert entries["sky"]["color"] == [70, 130, 180] and entries["road"]["color"] == [128, 64, 128]
    assert all(entry["group"] is None for entry in entries.values())


def test_unknown_names_keep_generated_colours_and_a_folder_classes_json_gives_its_own(tmp_path):
    names = ["lava", "moss field", "robot"]
    generated = build_class_table(3, None, {"class_names": names, "thing_classes": [2]})
    assert "generated" in generated.palette_source
    colors = [entry["color"] for entry in generated.to_json()]
    assert len({tuple(c) for c in colors}) == 3

    classes = [
        {"name": "lava", "isthing": False, "color": [255, 80, 0], "supercategory": "ground"},
        {"name": "moss field", "isthing": False, "color": "green"},
        {"name": "robot", "isthing": True, "color": [10, 20, 30]},
    ]
    (tmp_path / "classes.json").write_text(json.dumps({"classes": classes, "ignore_index": None}))
    dataset = SimpleNamespace(root=tmp_path, class_names=names, thing_classes=[2])
    table = build_class_table(3, None, None, dataset)
    entries = _entries(table)
    assert table.palette_source == "the dataset's classes.json"
    assert entries["lava"]["color"] == [255, 80, 0] and entries["lava"]["group"] == "ground"
    assert entries["robot"]["color"] == [10, 20, 30]
    assert entries["moss field"]["color"] == colors[1]  # malformed: the generated one, with a note
    assert any("classes[1].color" in note for note in table.notes)
