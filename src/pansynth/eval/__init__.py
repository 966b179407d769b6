"""Evaluation: the paper's metrics behind one interface, the Figure 4 analysis and reports.

Modules: :mod:`~pansynth.eval.metric` (the ``update(batch)`` / ``compute()`` interface),
:mod:`~pansynth.eval.fid`, :mod:`~pansynth.eval.segmentation`, :mod:`~pansynth.eval.detection`,
:mod:`~pansynth.eval.separation` (one per metric), :mod:`~pansynth.eval.evaluate` (the loop),
:mod:`~pansynth.eval.upsampling` (Figure 4), :mod:`~pansynth.eval.report` (HTML pages).
"""

from pansynth.eval.evaluate import MetricNetworks, evaluate_images, load_metric_networks
from pansynth.eval.fid import FeatureStats, frechet_distance
from pansynth.eval.metric import EvalBatch, Metric, MetricResult
from pansynth.eval.report import write_run_report
from pansynth.eval.segmentation import ConfusionMatrix
from pansynth.eval.upsampling import upsampling_stats

__all__ = [
    "ConfusionMatrix",
    "EvalBatch",
    "FeatureStats",
    "Metric",
    "MetricNetworks",
    "MetricResult",
    "evaluate_images",
    "frechet_distance",
    "load_metric_networks",
    "upsampling_stats",
    "write_run_report",
]
