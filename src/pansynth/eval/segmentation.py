"""Segmentation-based metrics: mIoU and pixel accuracy of a segmentation network on synthesized images.

Protocol of the paper (following SPADE): a segmentation network trained on the real dataset
runs on the synthesized images, and its prediction is compared with the input semantic map.
The paper uses DRN-D-105 for Cityscapes (19 evaluation classes) and DeepLabV2 for COCO-Stuff.
The network is pluggable here (:func:`load_segmentation_model`): a TorchScript file, or a
torchvision segmentation architecture with a local weights file.

Convention: the mIoU averages the IoU over the classes whose union (prediction or ground
truth) is non-empty over the whole evaluated set; classes absent from both are excluded.
Pixels whose ground truth is the ignore label are not counted anywhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.models.segmentation as segmentation
from torch import Tensor, nn

from pansynth.data.cityscapes import CITYSCAPES_TRAIN_IDS
from pansynth.eval.metric import EvalBatch, MetricResult
from pansynth.files import atomic_write
from pansynth.models.losses import IMAGENET_MEAN, IMAGENET_STD
from pansynth.weights import read_state_dict

TORCHVISION_SEGMENTATION_ARCHS = (
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large",
    "fcn_resnet50",
    "fcn_resnet101",
    "lraspp_mobilenet_v3_large",
)


def cityscapes_train_ids() -> dict[int, int]:
    """Cityscapes label id -> train id (the 19 evaluation classes), from
    :data:`pansynth.data.cityscapes.CITYSCAPES_TRAIN_IDS`."""
    return {index: int(v) for index, v in enumerate(CITYSCAPES_TRAIN_IDS) if 0 <= int(v) < 19}


def mapping_table(mapping: Mapping[int, int], size: int, ignore_value: int = -1) -> Tensor:
    """Lookup table (Tensor[size] int64) for ``mapping``; unmapped entries get ``ignore_value``."""
    table = torch.full((size,), ignore_value, dtype=torch.long)
    for source, target in mapping.items():
        if 0 <= int(source) < size:
            table[int(source)] = int(target)
    return table


def apply_mapping(labels: Tensor, mapping: Mapping[int, int] | None, ignore_value: int = -1) -> Tensor:
    """Map label values through ``mapping`` (unmapped and negative values -> ``ignore_value``)."""
    if mapping is None:
        return labels
    size = max([int(labels.max()) + 1 if labels.numel() else 1] + [int(k) + 1 for k in mapping])
    table = mapping_table(mapping, size, ignore_value).to(labels.device)
    valid = labels >= 0
    out = torch.full_like(labels, ignore_value)
    out[valid] = table[labels[valid]]
    return out


class ConfusionMatrix:
    """Accumulates a (K, K) confusion matrix (rows: ground truth, columns: prediction).

    Args:
        num_classes: K, number of evaluated classes.
        ignore_index: ground-truth value that is not counted (also any value outside [0, K)).

    Example:
        >>> cm = ConfusionMatrix(2)
        >>> cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
        >>> cm.compute()["accuracy"]
        0.5
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.missed = 0  # counted pixels whose prediction lies outside [0, K)

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Count pixels of ``prediction`` and ``target`` (int Tensors of the same shape, e.g. (N, H, W)).

        Ground-truth pixels equal to ``ignore_index`` or outside [0, K) are skipped; predictions
        outside [0, K) count as wrong (they are put in no column but still lower the accuracy).
        """
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ")
        prediction = prediction.reshape(-1).long().cpu()
        target = target.reshape(-1).long().cpu()
        valid = (target >= 0) & (target < self.num_classes)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        prediction, target = prediction[valid], target[valid]
        in_range = (prediction >= 0) & (prediction < self.num_classes)
        # A prediction outside [0, K) is a wrong answer for a counted pixel.
        self.missed += int((~in_range).sum())
        k = self.num_classes
        counts = torch.bincount(target[in_range] * k + prediction[in_range], minlength=k * k)
        self.matrix += counts.reshape(k, k)

    def compute(self) -> dict:
        """``{"miou", "accuracy", "per_class_iou" (None for excluded classes), "pixels"}``, as fractions."""
        matrix = self.matrix.double()
        total = matrix.sum() + self.missed
        if total == 0:
            raise ValueError("no labelled pixels were evaluated")
        true_positive = matrix.diagonal()
        union = matrix.sum(0) + matrix.sum(1) - true_positive
        present = union > 0
        iou = torch.where(present, true_positive / union.clamp(min=1), torch.zeros_like(union))
        return {
            "miou": float(iou[present].mean()),
            "accuracy": float(true_positive.sum() / total),
            "per_class_iou": [float(v) if p else None for v, p in zip(iou, present)],
            "pixels": int(total),
        }


class SegmentationModel(nn.Module):
    """Wraps a segmentation network: images in [-1, 1] -> label maps at the requested size.

    ``forward(images Tensor[N, 3, H, W], size (h, w)) -> Tensor[N, h, w] int64``. The images
    are normalised with the ImageNet mean/std (``normalize=True``) before the network, whose
    output (a Tensor[N, K, h', w'] or a dict with key ``"out"``) is bilinearly upsampled.
    """

    def __init__(self, network: nn.Module | Callable[[Tensor], Tensor], normalize: bool = True) -> None:
        super().__init__()
        self.network = network
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        x = (images + 1) / 2
        if self.normalize:
            x = (x - self.mean.to(x)) / self.std.to(x)
        logits = self.network(x)
        if isinstance(logits, Mapping):
            logits = logits["out"]
        if logits.ndim != 4:
            raise ValueError(f"segmentation network must return logits (N, K, h, w), got {tuple(logits.shape)}")
        size = size or tuple(images.shape[-2:])
        if tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
        return logits.argmax(1)


def load_segmentation_model(
    seg_model: str | Path | None = None,
    seg_arch: str | None = None,
    seg_weights: str | Path | None = None,
    num_classes: int | None = None,
    normalize: bool = True,
) -> SegmentationModel:
    """Load a segmentation network (eval mode, on CPU).

    Either ``seg_model``: a TorchScript file (``torch.jit.save``) taking a normalised image
    batch and returning logits; or ``seg_arch`` (one of :data:`TORCHVISION_SEGMENTATION_ARCHS`)
    plus ``seg_weights``, a local state dict read with ``weights_only=True`` (or safetensors),
    and ``num_classes`` (the network's K, e.g. 19 for Cityscapes, 182 for COCO-Stuff).
    """
    if seg_model is not None and seg_arch is not None:
        raise ValueError("give either --seg-model (TorchScript) or --seg-arch/--seg-weights, not both")
    if seg_model is not None:
        path = Path(seg_model)
        if not path.is_file():
            raise FileNotFoundError(f"segmentation model {path} not found (expected a TorchScript file)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still supported
                network = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as error:
            raise ValueError(f"--seg-model {path} is not a TorchScript file: {error}") from None
        network.eval()
        return SegmentationModel(network, normalize=normalize).eval()
    if seg_arch is None:
        raise ValueError("no segmentation network given (--seg-model or --seg-arch with --seg-weights)")
    if seg_arch not in TORCHVISION_SEGMENTATION_ARCHS:
        raise ValueError(f"--seg-arch must be one of {', '.join(TORCHVISION_SEGMENTATION_ARCHS)}, got {seg_arch!r}")
    if seg_weights is None:
        raise FileNotFoundError(f"--seg-arch {seg_arch} needs --seg-weights PATH (a local state dict)")
    if num_classes is None:
        raise ValueError(f"--seg-arch {seg_arch} needs --seg-num-classes K")
    path = Path(seg_weights)
    if not path.is_file():
        raise FileNotFoundError(f"segmentation weights {path} not found")
    state = read_state_dict(path, "segmentation weights file", unwrap=("model",))  # before building: fails fast
    builder = getattr(segmentation, seg_arch)
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    if not seg_arch.startswith("lraspp"):
        kwargs["aux_loss"] = None
    network = builder(**kwargs)
    # Checkpoints trained with an auxiliary head carry extra keys that inference does not need.
    state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"--seg-weights {path} does not fit {seg_arch} with {num_classes} classes: {error}") from None
    return SegmentationModel(network.eval(), normalize=normalize).eval()


class ProxySegmenter(nn.Module):
    """A small fully convolutional segmenter for data sets without a published segmentation network.

    Not the paper's protocol (DRN-D-105 / DeepLabV2): a proxy trained on the real training images
    (e.g. of the procedural demo scenes) so that mIoU / accuracy can still rank generators.
    ``forward(x Tensor[N, 3, H, W] normalised) -> logits Tensor[N, K, H/2, W/2]``.
    """

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=4, dilation=4),
            nn.ReLU(),
            nn.Conv2d(2 * width, num_classes, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def train_proxy_segmenter(
    dataset,
    steps: int = 300,
    batch_size: int = 8,
    lr: float = 2e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    width: int = 32,
) -> SegmentationModel:
    """Train a :class:`ProxySegmenter` on the real images of ``dataset`` (cross-entropy, Adam).

    Pixels of ``dataset.ignore_index`` are left out of the loss. Random horizontal flips are the
    only augmentation. ``width`` is the channel count of the first layer. Returns the trained
    network wrapped as a :class:`SegmentationModel`.
    """
    if steps < 1:
        raise ValueError(f"segmenter training steps must be >= 1, got {steps}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    network = ProxySegmenter(dataset.num_classes, width=width).to(device)
    wrapper = SegmentationModel(network).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    ignore = dataset.ignore_index
    network.train()
    for _ in range(steps):
        indices = torch.randint(len(dataset), (batch_size,), generator=generator).tolist()
        samples = [dataset[i] for i in indices]
        images = torch.stack([s["image"] for s in samples]).to(device)
        target = torch.stack([s["semantic"] for s in samples]).to(device)
        if bool(torch.rand((), generator=generator) < 0.5):
            images, target = images.flip(-1), target.flip(-1)
        if ignore is not None:
            target = torch.where(target == ignore, torch.full_like(target, -1), target)
        x = ((images + 1) / 2 - wrapper.mean) / wrapper.std
        logits = F.interpolate(network(x), size=target.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, target, ignore_index=-1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    network.eval()
    return wrapper.eval()


def save_torchscript(model: SegmentationModel, path: str | Path) -> Path:
    """Save the network inside ``model`` as TorchScript (loadable with ``--seg-model``); never overwrites."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    network = model.network.cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(network)
        return atomic_write(path, lambda temporary: scripted.save(str(temporary)))


class SegmentationMetric:
    """mIoU and pixel accuracy (in %) of a segmentation network on the generated images.

    Args:
        model: the segmentation network (images in [-1, 1] -> label maps).
        num_classes: number of evaluated classes K.
        label_map: dataset class -> network class (None: identity); unmapped classes are ignored.
        ignore_index: the dataset's ignore label (never counted).
    """

    names = ("mIoU", "accuracy")

    def __init__(
        self,
        model: SegmentationModel,
        num_classes: int,
        label_map: Mapping[int, int] | None = None,
        ignore_index: int | None = None,
    ) -> None:
        self.model = model
        self.label_map = label_map
        self.ignore_index = ignore_index
        self.confusion = ConfusionMatrix(num_classes)

    def update(self, batch: EvalBatch) -> None:
        prediction = self.model(batch.fake, tuple(batch.semantic.shape[-2:])).cpu()
        target = batch.semantic.clone()
        if self.ignore_index is not None:
            target[target == self.ignore_index] = -1
        self.confusion.update(prediction, apply_mapping(target, self.label_map))

    def compute(self) -> MetricResult:
        scores = self.confusion.compute()
        return MetricResult(
            {"mIoU": 100 * scores["miou"], "accuracy": 100 * scores["accuracy"]},
            {"per_class_iou": scores["per_class_iou"]},
        )
