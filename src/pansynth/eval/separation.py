"""Instance separation: are touching instances of the same class rendered as distinct objects?

A metric introduced by pansynth (not in the paper), motivated by the paper's Figure 7 where
baselines blend the texture of neighbouring instances. For every pair of touching instances
(4-neighbour adjacency) of the same thing class:

1. the *band* of instance A is its pixels within Chebyshev distance ``width`` of instance B
   (and vice versa), i.e. the two sides of the shared boundary;
2. each side is described by the vector ``(mean R, mean G, mean B, std of luminance,
   mean gradient magnitude)`` on the image in [-1, 1]; the gradient is the forward
   difference of the luminance between two pixels of the *same* instance, so an edge on the
   boundary itself does not count as texture;
3. the pair's *contrast* is the Euclidean distance between the two side vectors.

``separation`` is the mean contrast over all pairs on the generated images and
``separation_real`` the same figure on the real images; ``separation_ratio`` =
separation / separation_real (1 means neighbouring instances differ as much as in real
photos, near 0 means the generator blends them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from pansynth.eval.metric import EvalBatch, MetricResult

_LUMA = (0.299, 0.587, 0.114)


def touching_pairs(panoptic: Tensor, semantic: Tensor, thing_classes: Sequence[int]) -> Tensor:
    """Unordered pairs of 4-adjacent panoptic ids of the same thing class.

    Args:
        panoptic (Tensor[H, W] int), semantic (Tensor[H, W] int), thing_classes: thing class indices.

    Returns:
        Tensor[P, 2] int64 of ids, sorted (smaller id first), unique.
    """
    things = torch.zeros(int(max(semantic.max().item(), max(thing_classes, default=0))) + 1, dtype=torch.bool)
    if len(thing_classes):
        things[torch.as_tensor(list(thing_classes), dtype=torch.long)] = True
    semantic = semantic.long()
    is_thing = things[semantic.clamp(min=0)] & (semantic >= 0)
    pairs = []
    for a, b, ca, cb, ta, tb in (
        (
            panoptic[:, :-1],
            panoptic[:, 1:],
            semantic[:, :-1],
            semantic[:, 1:],
            is_thing[:, :-1],
            is_thing[:, 1:],
        ),
        (
            panoptic[:-1, :],
            panoptic[1:, :],
            semantic[:-1, :],
            semantic[1:, :],
            is_thing[:-1, :],
            is_thing[1:, :],
        ),
    ):
        touching = (a != b) & (ca == cb) & ta & tb
        pairs.append(torch.stack([torch.minimum(a, b)[touching], torch.maximum(a, b)[touching]], 1))
    pairs = torch.cat(pairs).long()
    if pairs.numel() == 0:
        return pairs.reshape(0, 2)
    return torch.unique(pairs, dim=0)


def _side_features(image: Tensor, luma: Tensor, grad: Tensor, band: Tensor) -> Tensor:
    values = image[:, band]  # (3, n)
    lum = luma[band]
    return torch.cat([values.mean(1), lum.std(unbiased=False).reshape(1), grad[band].mean().reshape(1)])


def pair_contrasts(
    image: Tensor, panoptic: Tensor, semantic: Tensor, thing_classes: Sequence[int], width: int = 3
) -> Tensor:
    """Contrast of every touching same-class instance pair of one image (see the module docstring).

    Args:
        image (Tensor[3, H, W] float): image in [-1, 1].
        panoptic, semantic (Tensor[H, W] int): the maps the image was made from.
        thing_classes: indices of the thing classes.
        width: band width in pixels on each side of the shared boundary.

    Returns:
        Tensor[P] float64, one contrast per pair, in the order of :func:`touching_pairs`.
    """
    if image.ndim != 3 or image.shape[0] != 3 or image.shape[1:] != panoptic.shape:
        raise ValueError(f"image must be (3, H, W) matching panoptic {tuple(panoptic.shape)}, got {tuple(image.shape)}")
    if width < 1:
        raise ValueError(f"band width must be >= 1, got {width}")
    pairs = touching_pairs(panoptic, semantic, thing_classes)
    image = image.double()
    luma = (image * torch.tensor(_LUMA, dtype=torch.float64).view(3, 1, 1)).sum(0)
    # forward differences within one segment only (an edge between segments is not texture)
    dx = torch.zeros_like(luma)
    dy = torch.zeros_like(luma)
    same_x = panoptic[:, 1:] == panoptic[:, :-1]
    same_y = panoptic[1:, :] == panoptic[:-1, :]
    dx[:, :-1] = torch.where(same_x, luma[:, 1:] - luma[:, :-1], torch.zeros_like(luma[:, 1:]))
    dy[:-1, :] = torch.where(same_y, luma[1:, :] - luma[:-1, :], torch.zeros_like(luma[1:, :]))
    grad = torch.sqrt(dx**2 + dy**2)
    contrasts = torch.zeros(pairs.shape[0], dtype=torch.float64)
    for index, (id_a, id_b) in enumerate(pairs.tolist()):
        mask_a, mask_b = panoptic == id_a, panoptic == id_b
        # crop to the pair's bounding box (plus the band) to keep the dilation cheap
        rows = torch.nonzero((mask_a | mask_b).any(1)).flatten()
        cols = torch.nonzero((mask_a | mask_b).any(0)).flatten()
        r0, r1 = int(rows[0]), int(rows[-1]) + 1
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        crop = (slice(r0, r1), slice(c0, c1))
        a, b = mask_a[crop], mask_b[crop]
        near_b = F.max_pool2d(b[None, None].float(), 2 * width + 1, stride=1, padding=width)[0, 0] > 0
        near_a = F.max_pool2d(a[None, None].float(), 2 * width + 1, stride=1, padding=width)[0, 0] > 0
        side_a, side_b = a & near_b, b & near_a
        crop_image = image[:, r0:r1, c0:c1]
        features_a = _side_features(crop_image, luma[crop], grad[crop], side_a)
        features_b = _side_features(crop_image, luma[crop], grad[crop], side_b)
        contrasts[index] = torch.linalg.vector_norm(features_a - features_b)
    return contrasts


class SeparationScore:
    """Accumulates pair contrasts on generated and real images over a data set.

    ``update(generated, real, panoptic, semantic)`` for one image (Tensor[3, H, W] each in
    [-1, 1], maps Tensor[H, W]); ``compute()`` returns ``{"separation", "separation_real",
    "separation_ratio", "separation_pairs"}`` (ratio None when there was no pair).
    """

    def __init__(self, thing_classes: Sequence[int], width: int = 3) -> None:
        self.thing_classes = list(thing_classes)
        self.width = width
        self.generated: list[Tensor] = []
        self.real: list[Tensor] = []

    def update(self, generated: Tensor, real: Tensor | None, panoptic: Tensor, semantic: Tensor) -> None:
        self.generated.append(pair_contrasts(generated, panoptic, semantic, self.thing_classes, self.width))
        if real is not None:
            self.real.append(pair_contrasts(real, panoptic, semantic, self.thing_classes, self.width))

    def compute(self) -> dict:
        generated = torch.cat(self.generated) if self.generated else torch.zeros(0, dtype=torch.float64)
        real = torch.cat(self.real) if self.real else torch.zeros(0, dtype=torch.float64)
        if generated.numel() == 0:
            return {
                "separation": None,
                "separation_real": None,
                "separation_ratio": None,
                "separation_pairs": 0,
            }
        score = float(generated.mean())
        real_score = float(real.mean()) if real.numel() else None
        ratio = score / real_score if real_score else None
        return {
            "separation": score,
            "separation_real": real_score,
            "separation_ratio": ratio,
            "separation_pairs": int(generated.numel()),
        }


class SeparationMetric:
    """Instance separation of the generated images, and relative to the real ones (needs no network).

    Args:
        thing_classes: the dataset's thing class indices.
        width: band width in pixels on each side of a shared boundary.
    """

    names = ("separation", "separation_real", "separation_ratio")

    def __init__(self, thing_classes: Sequence[int], width: int = 3) -> None:
        self.score = SeparationScore(thing_classes, width)

    def update(self, batch: EvalBatch) -> None:
        for fake, real, panoptic, semantic in zip(batch.fake.cpu(), batch.real.cpu(), batch.panoptic, batch.semantic):
            self.score.update(fake, real, panoptic, semantic)

    def compute(self) -> MetricResult:
        scores = self.score.compute()
        pairs = scores.pop("separation_pairs")
        if pairs == 0:
            reason = "no pair of touching instances of the same thing class in the maps"
            return MetricResult(details={"separation_pairs": 0}, skipped={name: reason for name in self.names})
        return MetricResult(scores, {"separation_pairs": pairs})
