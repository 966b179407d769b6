"""Experiments: the pipelines that use both training and evaluation.

:mod:`~pansynth.experiments.demo` (scenes -> training -> synthesis -> page, ``pansynth demo``),
:mod:`~pansynth.experiments.ablation` (the paper's Table 4, ``pansynth ablate``) and
:mod:`~pansynth.experiments.evaluation` (synthesize a split, then evaluate it: ``pansynth evaluate --checkpoint``).
"""

from pansynth.experiments.ablation import VARIANTS, run_ablation
from pansynth.experiments.demo import run_demo
from pansynth.experiments.evaluation import evaluate_generator

__all__ = ["VARIANTS", "evaluate_generator", "run_ablation", "run_demo"]
