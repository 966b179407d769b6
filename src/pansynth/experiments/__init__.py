"""Experiments: the pipelines that use both training and evaluation.

:mod:`~pansynth.experiments.demo` (scenes -> training -> synthesis -> page, ``pansynth demo``) and
:mod:`~pansynth.experiments.ablation` (the paper's Table 4, ``pansynth ablate``).
"""

from pansynth.experiments.ablation import VARIANTS, run_ablation
from pansynth.experiments.demo import run_demo

__all__ = ["VARIANTS", "run_ablation", "run_demo"]
