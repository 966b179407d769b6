"""Training: typed configs and presets, the GAN trainer, checkpoints, torchrun support."""

from pansynth.train.config import TrainConfig, load_config
from pansynth.train.trainer import Trainer, TrainingDiverged, train

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "load_config", "train"]
