"""COCO-Stuff in the layout SPADE-style projects use.

Layout::

    root/{split}_img/<stem>.jpg     the COCO photograph
    root/{split}_label/<stem>.png   8-bit COCO-Stuff class index (0..181), 255 = unlabeled
    root/{split}_inst/<stem>.png    instance counter (0, 1, 2...) on thing-instance pixels, the label
                                     value elsewhere

Class indices are 0-based: index = COCO category id - 1, so indices 0..90 are the thing range
(category ids 1..91, of which the 80 COCO thing categories are used; 11 indices such as 11
"street sign" never occur) and 91..181 the stuff classes (ids 92..182). ``num_classes = 182``,
``ignore_index = 255``. Unlabeled pixels (255) are read as unknown: class and id -1. (The older
1-based encoding, where 0 was unlabeled, is not this layout and is not read.)

The panoptic id is ``label * 65536 + inst``: two pixels share an id exactly when they share
the pair (label, inst), for instance values below 65536 (8- or 16-bit instance PNGs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pansynth.data.base import PanopticDataset, SampleFiles, Transform
from pansynth.data.io import IMAGE_EXTENSIONS, list_files, read_label_png

_NAMES = """
person, bicycle, car, motorcycle, airplane, bus, train, truck, boat, traffic light, fire hydrant,
street sign, stop sign, parking meter, bench, bird, cat, dog, horse, sheep, cow, elephant, bear,
zebra, giraffe, hat, backpack, umbrella, shoe, eye glasses, handbag, tie, suitcase, frisbee, skis,
snowboard, sports ball, kite, baseball bat, baseball glove, skateboard, surfboard, tennis racket,
bottle, plate, wine glass, cup, fork, knife, spoon, bowl, banana, apple, sandwich, orange, broccoli,
carrot, hot dog, pizza, donut, cake, chair, couch, potted plant, bed, mirror, dining table, window,
desk, toilet, door, tv, laptop, mouse, remote, keyboard, cell phone, microwave, oven, toaster, sink,
refrigerator, blender, book, clock, vase, scissors, teddy bear, hair drier, toothbrush, hair brush,
banner, blanket, branch, bridge, building-other, bush, cabinet, cage, cardboard, carpet,
ceiling-other, ceiling-tile, cloth, clothes, clouds, counter, cupboard, curtain, desk-stuff, dirt,
door-stuff, fence, floor-marble, floor-other, floor-stone, floor-tile, floor-wood, flower, fog,
food-other, fruit, furniture-other, grass, gravel, ground-other, hill, house, leaves, light, mat,
metal, mirror-stuff, moss, mountain, mud, napkin, net, paper, pavement, pillow, plant-other,
plastic, platform, playingfield, railing, railroad, river, road, rock, roof, rug, salad, sand, sea,
shelf, sky-other, skyscraper, snow, solid-other, stairs, stone, straw, structural-other, table,
tent, textile-other, towel, tree, vegetable, wall-brick, wall-concrete, wall-other, wall-panel,
wall-stone, wall-tile, wall-wood, water-other, waterdrops, window-blind, window-other, wood
"""

# Index (category id - 1) -> COCO-Stuff class name.
COCO_STUFF_CLASS_NAMES: list[str] = [name.strip() for name in _NAMES.replace("\n", " ").split(",")]

# Category ids 1..91 that COCO does not use for any thing category.
_UNUSED_THING_IDS = frozenset({12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91})

# Indices of the 80 COCO thing categories.
COCO_STUFF_THING_CLASSES: list[int] = [
    category_id - 1 for category_id in range(1, 92) if category_id not in _UNUSED_THING_IDS
]

# Multiplier of the label in the panoptic id (instance values must stay below it).
_LABEL_STRIDE = 65536


class CocoStuff(PanopticDataset):
    """COCO-Stuff images with label and instance maps (``{split}_img/_label/_inst``), see module docstring.

    Args:
        root: folder holding ``{split}_img/``, ``{split}_label/`` and ``{split}_inst/``.
        split: ``train`` or ``val``.
        transform: callable applied to each sample dict.
        skip_bad: skip bad samples with a logged count instead of raising.
    """

    num_classes = 182
    ignore_index = 255
    unknown_values = (255,)
    class_names = COCO_STUFF_CLASS_NAMES
    thing_classes = COCO_STUFF_THING_CLASSES

    def __init__(
        self, root: str | Path, split: str, transform: Transform | None = None, skip_bad: bool = False
    ) -> None:
        root = Path(root)
        self.root = root
        self.split = split
        image_dir, label_dir, inst_dir = (root / f"{split}_{kind}" for kind in ("img", "label", "inst"))
        images = list_files(image_dir, IMAGE_EXTENSIONS)
        labels = list_files(label_dir, (".png",))
        instances = list_files(inst_dir, (".png",))
        samples: list[SampleFiles] = []
        missing: list[str] = []
        for stem, image in images.items():
            lacking = [
                str(directory / f"{stem}.png")
                for directory, files in ((label_dir, labels), (inst_dir, instances))
                if stem not in files
            ]
            if lacking:
                missing.append(f"{image}: missing partner file(s) {', '.join(lacking)}")
                continue
            samples.append(SampleFiles(stem, image, labels[stem], instances[stem]))
        super().__init__(samples, transform, skip_bad, missing, source=str(image_dir))

    def _read_maps(self, files: SampleFiles) -> tuple[np.ndarray, np.ndarray]:
        semantic = read_label_png(files.semantic)
        instance = read_label_png(files.panoptic)
        if instance.shape != semantic.shape:
            raise ValueError(
                f"{files.panoptic}: instance map is {instance.shape[0]}x{instance.shape[1]} (HxW) but label map "
                f"{files.semantic.name} is {semantic.shape[0]}x{semantic.shape[1]}"
            )
        if instance.size and (instance.min() < 0 or instance.max() >= _LABEL_STRIDE):
            raise ValueError(f"{files.panoptic}: instance values must lie in 0..{_LABEL_STRIDE - 1}")
        return semantic, semantic * _LABEL_STRIDE + instance
