"""Training: typed configs and presets, the GAN loop and objective, run directories, checkpoints, torchrun.

Modules: :mod:`~pansynth.train.config` (dataclasses + presets), :mod:`~pansynth.train.loop` (the
trainer), :mod:`~pansynth.train.loss` (GAN objective, EMA), :mod:`~pansynth.train.run_dir` (checks
and lock of the run directory), :mod:`~pansynth.train.monitor` (logs, samples),
:mod:`~pansynth.train.checkpoint`, :mod:`~pansynth.train.distributed`.
"""

from pansynth.train.config import TrainConfig, load_config
from pansynth.train.loop import Trainer, TrainingDiverged, TrainingInterrupted, train

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "TrainingInterrupted", "load_config", "train"]
