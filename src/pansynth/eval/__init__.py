"""Evaluation: FID, mIoU / accuracy, detAP, instance separation, the Figure 4 analysis, ablation and reports.

Modules: :mod:`~pansynth.eval.fid`, :mod:`~pansynth.eval.segmentation`, :mod:`~pansynth.eval.detection`,
:mod:`~pansynth.eval.separation`, :mod:`~pansynth.eval.upsampling`, :mod:`~pansynth.eval.evaluate`
(orchestration), :mod:`~pansynth.eval.ablation`, :mod:`~pansynth.eval.report`.
"""

from pansynth.eval.fid import FeatureStats, frechet_distance
from pansynth.eval.report import colorize_panoptic, write_run_report
from pansynth.eval.segmentation import ConfusionMatrix
from pansynth.eval.upsampling import upsampling_stats

__all__ = [
    "ConfusionMatrix",
    "FeatureStats",
    "colorize_panoptic",
    "frechet_distance",
    "upsampling_stats",
    "write_run_report",
]
