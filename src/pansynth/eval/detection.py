"""Detection AP (detAP): a COCO-trained Faster R-CNN detects the instances on synthesized images.

Ground truth comes from the input panoptic map: every segment of a thing class gives one box
(its tight bounding box, ``x2 = max column + 1``, ``y2 = max row + 1``) labelled with the
detector's category for that class. The dataset class -> detector label mapping is built from
class names (:func:`coco_label_map`): COCO-Stuff / COCO panoptic classes map to the COCO
category of the same name; Cityscapes person and rider map to COCO person, and car, truck,
bus, train, motorcycle, bicycle to the same-named COCO categories (caravan and trailer are
not evaluated). AP is COCO-style (torchmetrics ``MeanAveragePrecision``, pycocotools
backend): AP averaged over IoU 0.50:0.95, plus AP50.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from pansynth.eval.metric import EvalBatch, MetricResult
from pansynth.weights import read_state_dict

# Cityscapes names that map to a COCO category of another name.
_NAME_ALIASES = {"rider": "person", "motorbike": "motorcycle", "bike": "bicycle", "aeroplane": "airplane"}

DETECTOR_HELP = (
    "detAP needs torchvision's COCO Faster R-CNN ResNet-50 FPN weights "
    "(fasterrcnn_resnet50_fpn_coco-258fb6c6.pth, from "
    "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth); "
    "download it once and pass its path with --det-weights PATH"
)


def coco_categories() -> list[str]:
    """torchvision's COCO detection label names (index = detector label; 0 = background)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    return list(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


def coco_label_map(class_names: Sequence[str], thing_classes: Sequence[int]) -> dict[int, int]:
    """Dataset class index -> COCO detector label, for the thing classes whose name has a COCO match."""
    categories = {name: index for index, name in enumerate(coco_categories()) if name not in ("N/A", "__background__")}
    mapping = {}
    for class_index in thing_classes:
        name = str(class_names[class_index]).strip().lower()
        name = _NAME_ALIASES.get(name, name)
        if name in categories:
            mapping[int(class_index)] = categories[name]
    return mapping


def boxes_from_panoptic(panoptic: Tensor, semantic: Tensor, label_map: Mapping[int, int]) -> tuple[Tensor, Tensor]:
    """Ground-truth boxes of the evaluated thing instances of one map.

    Args:
        panoptic (Tensor[H, W] int): segment ids (unique per thing instance).
        semantic (Tensor[H, W] int): class index of every pixel.
        label_map: dataset class index -> detector label; segments of other classes are skipped.
            A segment's class is the most frequent class among its pixels.

    Returns:
        boxes (Tensor[K, 4] float32, xyxy in pixels, exclusive max), labels (Tensor[K] int64).
    """
    if panoptic.shape != semantic.shape or panoptic.ndim != 2:
        raise ValueError(
            f"panoptic and semantic must both be (H, W), got {tuple(panoptic.shape)}, {tuple(semantic.shape)}"
        )
    ids, inverse = torch.unique(panoptic.reshape(-1), return_inverse=True)
    if ids.numel() == 0 or not label_map:
        return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    height, width = panoptic.shape
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    count = ids.numel()

    def reduce(values: Tensor, how: str, init: int) -> Tensor:
        out = torch.full((count,), init, dtype=torch.long)
        return out.scatter_reduce(0, inverse, values, reduce=how, include_self=True)

    x1, y1 = reduce(cols, "amin", width), reduce(rows, "amin", height)
    x2, y2 = reduce(cols, "amax", -1) + 1, reduce(rows, "amax", -1) + 1
    # majority class of each segment
    classes = semantic.reshape(-1).long()
    num_classes = int(classes.max()) + 1 if classes.numel() else 1
    shifted = classes.clamp(min=0)
    votes = torch.zeros(count * num_classes, dtype=torch.long)
    votes.index_add_(0, inverse * num_classes + shifted, (classes >= 0).long())
    segment_class = votes.reshape(count, num_classes).argmax(1)
    table = torch.full((max(num_classes, max(label_map) + 1),), -1, dtype=torch.long)
    for source, target in label_map.items():
        table[int(source)] = int(target)
    labels = table[segment_class]
    keep = labels >= 0
    boxes = torch.stack([x1, y1, x2, y2], 1)[keep].float()
    return boxes, labels[keep]


class DetectionAP:
    """COCO-style box AP over a set of images (torchmetrics ``MeanAveragePrecision``).

    ``update(predictions, targets)`` takes lists of dicts (``boxes`` xyxy, ``scores``,
    ``labels`` / ``boxes``, ``labels``); ``compute()`` returns ``{"detAP", "detAP50"}`` as
    fractions in [0, 1] (-1 when no ground-truth box was seen). Predictions whose label is not
    an evaluated category (``labels`` argument) are dropped first.
    """

    def __init__(self, labels: Sequence[int] | None = None) -> None:
        from torchmetrics.detection import MeanAveragePrecision

        self.metric = MeanAveragePrecision(iou_type="bbox", box_format="xyxy", backend="pycocotools")
        self.labels = None if labels is None else torch.tensor(sorted(set(int(v) for v in labels)))
        self.num_boxes = 0

    def update(self, predictions: Sequence[Mapping[str, Tensor]], targets: Sequence[Mapping[str, Tensor]]) -> None:
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        preds, gts = [], []
        for prediction, target in zip(predictions, targets):
            boxes = prediction["boxes"].detach().float().cpu().reshape(-1, 4)
            scores = prediction["scores"].detach().float().cpu().reshape(-1)
            labels = prediction["labels"].detach().long().cpu().reshape(-1)
            if self.labels is not None:
                keep = torch.isin(labels, self.labels)
                boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            preds.append({"boxes": boxes, "scores": scores, "labels": labels})
            gts.append(
                {
                    "boxes": target["boxes"].float().cpu().reshape(-1, 4),
                    "labels": target["labels"].long().cpu(),
                }
            )
            self.num_boxes += gts[-1]["boxes"].shape[0]
        self.metric.update(preds, gts)

    def compute(self) -> dict[str, float]:
        result = self.metric.compute()
        return {"detAP": float(result["map"]), "detAP50": float(result["map_50"]), "gt_boxes": self.num_boxes}


class Detector(nn.Module):
    """Wraps a torchvision detection model: images in [-1, 1] -> list of prediction dicts."""

    def __init__(self, network: nn.Module | Callable[[list[Tensor]], list[dict]]) -> None:
        super().__init__()
        self.network = network

    @torch.no_grad()
    def forward(self, images: Tensor) -> list[dict[str, Tensor]]:
        return self.network([(image + 1) / 2 for image in images])


def load_detector(weights_path: str | Path | None, num_classes: int = 91, min_size: int = 800) -> Detector:
    """Faster R-CNN ResNet-50 FPN (torchvision) with weights read from a local file (weights_only=True)."""
    if weights_path is None:
        raise FileNotFoundError(DETECTOR_HELP)
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"detector weights {path} not found. {DETECTOR_HELP}")
    state = read_state_dict(path, "detector weights file")  # before building: a bad file fails fast
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    network = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes, min_size=min_size)
    try:
        network.load_state_dict(state)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"--det-weights {path} does not fit Faster R-CNN R50-FPN with {num_classes} classes: {error}"
        ) from None
    return Detector(network.eval()).eval()


class DetectionMetric:
    """detAP and detAP50 (in %): a detector's boxes on the generated images against the boxes of
    the thing instances of the panoptic maps.

    Args:
        detector: images in [-1, 1] -> prediction dicts (e.g. :func:`load_detector`).
        label_map: dataset thing class -> detector label (see :func:`coco_label_map`).
    """

    names = ("detAP", "detAP50")

    def __init__(self, detector: Detector, label_map: Mapping[int, int]) -> None:
        self.detector = detector
        self.label_map = dict(label_map)
        self.ap = DetectionAP(labels=sorted(set(self.label_map.values())))

    def update(self, batch: EvalBatch) -> None:
        predictions = self.detector(batch.fake)
        targets = []
        for panoptic, semantic in zip(batch.panoptic, batch.semantic):
            boxes, labels = boxes_from_panoptic(panoptic, semantic, self.label_map)
            targets.append({"boxes": boxes, "labels": labels})
        self.ap.update(predictions, targets)

    def compute(self) -> MetricResult:
        if self.ap.num_boxes == 0:
            reason = "no ground-truth thing instance of a detector category in the maps"
            return MetricResult(details={"gt_boxes": 0}, skipped={"detAP": reason, "detAP50": reason})
        scores = self.ap.compute()
        return MetricResult(
            {"detAP": 100 * scores["detAP"], "detAP50": 100 * scores["detAP50"]}, {"gt_boxes": scores["gt_boxes"]}
        )
