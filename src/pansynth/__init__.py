"""pansynth: panoptic-based image synthesis (Dundar et al., CVPR 2020)."""

__version__ = "0.1.0"
