"""The interface every evaluation metric follows: ``update(batch)`` then ``compute()``.

A metric sees batches of generated images together with the real images and the maps they
were made from (:class:`EvalBatch`), and reports named values plus details, or the reason it
could not compute a value (:class:`MetricResult`). :func:`pansynth.eval.evaluate.evaluate_images`
is a short loop over the metrics asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor

__all__ = ["EvalBatch", "Metric", "MetricResult"]


@dataclass
class EvalBatch:
    """One batch of an evaluation.

    Attributes:
        fake (Tensor[N, 3, H, W]): generated images in [-1, 1] (on the evaluation device).
        real (Tensor[N, 3, H, W]): the real images in [-1, 1] (same device).
        semantic (Tensor[N, H, W] int64): class maps the images were generated from (CPU).
        panoptic (Tensor[N, H, W] int64): panoptic maps (CPU).
    """

    fake: Tensor
    real: Tensor
    semantic: Tensor
    panoptic: Tensor


@dataclass
class MetricResult:
    """What a metric reports: ``values`` (name -> number), ``details`` (extra JSON-able facts),
    ``skipped`` (name -> why the value could not be computed)."""

    values: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


class Metric(Protocol):
    """An evaluation metric: fed batch by batch, computed once at the end."""

    names: tuple[str, ...]  # the values it reports

    def update(self, batch: EvalBatch) -> None: ...

    def compute(self) -> MetricResult: ...
