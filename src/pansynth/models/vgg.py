"""VGG19 feature extractor for the perceptual loss, read from a local weights file.

No weights are ever downloaded: the user names a file holding torchvision's VGG19
state dict (``torchvision.models.vgg19`` / ``VGG19_Weights.IMAGENET1K_V1``), as
``.pth``/``.pt`` (read with ``torch.load(..., weights_only=True)``) or ``.safetensors``.
Only the convolutional part (``features.*``) is used.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import Tensor, nn

from pansynth.weights import read_state_dict

__all__ = ["VGG19_LAYERS", "VGG19_SLICES", "build_vgg19_features", "load_vgg19_features", "VGG19_HELP"]

# torchvision's configuration "E" (VGG19): conv widths, "M" = 2x2 max-pool.
VGG19_LAYERS: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip
# Index ranges of ``features`` ending at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
VGG19_SLICES: tuple[tuple[int, int], ...] = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))

VGG19_HELP = (
    "the VGG19 perceptual loss needs torchvision's ImageNet VGG19 weights as a local file. On a machine "
    'with internet access run: python -c "import torch, torchvision; torch.save(torchvision.models.vgg19('
    "weights='IMAGENET1K_V1').state_dict(), 'vgg19.pth')\" (or download torchvision's vgg19-dcbb9e9d.pth), "
    "copy the file here and pass its path; or switch the loss off (VGG loss weight 0)"
)


def build_vgg19_features() -> nn.Sequential:
    """The convolutional part of torchvision's VGG19, randomly initialised.

    Module indices (and so state-dict keys ``<index>.weight``) match torchvision's
    ``vgg19().features``.
    """
    layers: list[nn.Module] = []
    in_channels = 3
    for item in VGG19_LAYERS:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            in_channels = int(item)
    return nn.Sequential(*layers)


def load_vgg19_features(path: str | os.PathLike) -> nn.Sequential:
    """Load the frozen VGG19 ``features`` network from a local torchvision state dict.

    Args:
        path: ``.pth`` / ``.pt`` (torch.save of ``vgg19().state_dict()``) or ``.safetensors``;
            keys ``features.<i>.weight`` (a full model; the classifier is ignored) or
            ``<i>.weight`` (the features module alone).

    Returns:
        ``nn.Sequential`` in eval mode with ``requires_grad=False`` on every parameter.

    Raises:
        FileNotFoundError: the file does not exist (the message says how to obtain it).
        ValueError: the file is unreadable or not a VGG19 state dict (one line, see :mod:`pansynth.weights`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VGG19 weights file {path} not found: {VGG19_HELP}")
    state = read_state_dict(path, "VGG19 weights file")
    if any(str(key).startswith("features.") for key in state):
        state = {key[len("features.") :]: value for key, value in state.items() if key.startswith("features.")}
    features = build_vgg19_features()
    expected = features.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(
            f"{path} is not a torchvision VGG19 state dict: missing {len(missing)} keys such as 'features.{missing[0]}'"
        )
    for key, tensor in expected.items():
        if not isinstance(state[key], Tensor) or tuple(state[key].shape) != tuple(tensor.shape):
            got = tuple(state[key].shape) if isinstance(state[key], Tensor) else type(state[key]).__name__
            raise ValueError(f"{path}: 'features.{key}' has shape {got}, VGG19 expects {tuple(tensor.shape)}")
    features.load_state_dict({key: state[key].float() for key in expected}, strict=True)
    features.eval()
    features.requires_grad_(False)
    return features
