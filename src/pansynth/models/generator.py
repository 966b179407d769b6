"""The SPADE generator with panoptic-aware convolution and upsampling (paper Figure 5).

Two independent switches select the variant:

- ``conv="standard" | "panoptic"``: the first layer and the 3x3 convolutions of every
  residual block are plain or panoptic-aware partial convolutions (section 3.1);
- ``upsample="nearest" | "panoptic"``: every x2 upsampling is nearest neighbour or
  panoptic-aware upsampling with hole filling (section 3.2).

``conv="standard", upsample="nearest"`` fed the semantic map plus the instance boundary
map is the SPADE baseline; ``conv="panoptic", upsample="panoptic"`` is the paper's model.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pansynth.models.spade import (
    ConvKind,
    NormKind,
    SPADEResBlock,
    apply_conv,
    make_conv3x3,
    resize_label,
)
from pansynth.ops import PanopticUpsample, panoptic_upsample
from pansynth.ops.maps import boundary_map, check_map, downsample_map, semantic_one_hot

__all__ = ["Generator", "DenseHoleFillUpsample", "build_label_map", "label_map_channels"]

UpsampleKind = Literal["nearest", "panoptic"]
UpsamplingLayers = Literal["normal", "more", "most"]

_NUM_UP = {"normal": 5, "more": 6, "most": 7}
_LRELU_SLOPE = 0.2
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def label_map_channels(num_classes: int, ignore_index: int | None, boundary: bool) -> int:
    """Channels of :func:`build_label_map`: classes (+1 ignore channel) (+1 boundary channel)."""
    return num_classes + (ignore_index is not None) + bool(boundary)


def build_label_map(
    semantic: Tensor, panoptic: Tensor, num_classes: int, ignore_index: int | None, boundary: bool
) -> Tensor:
    """The network's label input: one-hot semantic map, plus the boundary map when asked.

    Args:
        semantic (Tensor[N, H, W]): class indices in ``[0, num_classes)`` or ``ignore_index``.
        panoptic (Tensor[N, H, W]): integer segment ids (only read when ``boundary``).

    Returns:
        Tensor[N, L, H, W] float32, L = :func:`label_map_channels`; ignored pixels are
        one-hot in the extra channel after the classes; the boundary map is the last channel.
    """
    label = semantic_one_hot(semantic, num_classes, ignore_index)
    if boundary:
        label = torch.cat([label, boundary_map(panoptic)], dim=1)
    return label


def check_label_inputs(semantic: Tensor, panoptic: Tensor, *, name: str = "semantic") -> None:
    """Raise a ValueError unless semantic and panoptic are integer (N, H, W) maps of one shape."""
    check_map(semantic, name)
    check_map(panoptic, "panoptic")
    if semantic.shape != panoptic.shape:
        raise ValueError(
            f"{name} map {tuple(semantic.shape)} and panoptic map {tuple(panoptic.shape)} must have the same shape"
        )
    if semantic.device != panoptic.device:
        raise ValueError(f"{name} map is on {semantic.device} but the panoptic map is on {panoptic.device}")


class DenseHoleFillUpsample(nn.Module):
    """Panoptic-aware x2 upsampling with hole filling, computed densely (paper eq. 3).

    ``out = F'u + (1 - M) * proj(first_layer(label_high, P_high))`` where ``F'u, M`` come from
    Algorithm 1 (:func:`pansynth.ops.panoptic_upsample`). This is the literal formula; it
    works for any first layer (plain ``nn.Conv2d`` or ``PanopticConv2d``) and any label map
    (one-hot semantic map, with or without the boundary channel). The generator uses the
    sparse :class:`pansynth.ops.PanopticUpsample` instead when the first layer is panoptic and
    the label map is purely one-hot (the paper's model); both give the same result.

    ``first_layer`` is the generator's first layer, *shared* by every stage (section 3.3):
    it is not registered as a submodule here, so its weights are saved once, under the
    generator's ``fc``. ``proj`` is a 1x1 conv from the first layer's width to
    ``out_channels``, present only when they differ: the only parameters of this module.

    Args:
        first_layer: the generator's first layer (3x3 ``nn.Conv2d`` or ``PanopticConv2d``).
        out_channels: channels C of the features being upsampled.

    Shapes:
        forward(x (Tensor[N, C, h, w]), label_high (Tensor[N, L, 2h, 2w]),
        panoptic_low (Tensor[N, h, w]), panoptic_high (Tensor[N, 2h, 2w])) -> Tensor[N, C, 2h, 2w].
    """

    def __init__(self, first_layer: nn.Module, out_channels: int) -> None:
        super().__init__()
        self._first_layer = (first_layer,)  # a tuple keeps the shared layer out of this module's parameters
        self.out_channels = out_channels
        fill_channels = first_layer.weight.shape[0]
        self.proj = nn.Conv2d(fill_channels, out_channels, 1) if fill_channels != out_channels else None

    @property
    def first_layer(self) -> nn.Module:
        return self._first_layer[0]

    def hole_features(self, label_high: Tensor, panoptic_high: Tensor) -> Tensor:
        """Hole-filling features ``proj(first_layer(S, P))`` at every pixel: Tensor[N, C, 2h, 2w]."""
        hole = apply_conv(self.first_layer, label_high, panoptic_high)
        return self.proj(hole) if self.proj is not None else hole

    def forward(self, x: Tensor, label_high: Tensor, panoptic_low: Tensor, panoptic_high: Tensor) -> Tensor:
        if x.shape[1] != self.out_channels:
            raise ValueError(f"expected {self.out_channels} feature channels, got {x.shape[1]}")
        upsampled, matched = panoptic_upsample(x, panoptic_low, panoptic_high)
        hole = self.hole_features(label_high.to(x.dtype), panoptic_high)
        return upsampled + (1 - matched) * hole

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, shares the generator's first layer"


class Generator(nn.Module):
    """SPADE generator (Figure 5) with panoptic-aware convolution and upsampling switches.

    Args:
        num_classes: number of semantic classes K (one-hot width, without the ignore channel).
        ignore_index: class value of unlabeled pixels (encoded in an extra channel), or None.
        ngf: base width; the first layer has 16 * ngf channels.
        conv: ``"panoptic"`` (paper) or ``"standard"`` (SPADE) for the first layer and the 3x3
            convs of the residual blocks.
        upsample: ``"panoptic"`` (paper, with hole filling) or ``"nearest"`` (SPADE).
        boundary: also feed the instance boundary map to the label input; None means True
            for ``conv="standard"`` (the SPADE baseline) and False for ``conv="panoptic"``.
        num_upsampling_layers: ``"normal"`` | ``"more"`` | ``"most"``: 5, 6 or 7 x2 upsamplings.
        crop_size: output width W; the first layer runs at W / 2**num_up.
        aspect_ratio: W / H of the output.
        norm: parameter-free norm inside SPADE: ``"instance"`` | ``"batch"`` | ``"syncbatch"``.
        spectral: spectral normalization on the residual blocks' convolutions.
        spade_hidden: width of the hidden convolution in every SPADE layer (128 in SPADE).

    Shapes:
        forward(semantic (Tensor[N, H, W]) int64, panoptic (Tensor[N, H, W]) int64)
        -> Tensor[N, 3, H, W] in [-1, 1], with (H, W) = :attr:`output_size`.

    Example:
        >>> g = Generator(num_classes=4, ngf=4, crop_size=64)
        >>> semantic = torch.randint(0, 4, (1, 64, 64))
        >>> g(semantic, semantic * 10).shape
        torch.Size([1, 3, 64, 64])
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        ngf: int = 64,
        conv: ConvKind = "panoptic",
        upsample: UpsampleKind = "panoptic",
        boundary: bool | None = None,
        num_upsampling_layers: UpsamplingLayers = "normal",
        crop_size: int = 256,
        aspect_ratio: float = 1.0,
        norm: NormKind = "instance",
        spectral: bool = True,
        spade_hidden: int = 128,
    ) -> None:
        super().__init__()
        _check_int("num_classes", num_classes, 1)
        _check_int("spade_hidden", spade_hidden, 1)
        _check_int("ngf", ngf, 1)
        _check_int("crop_size", crop_size, 1)
        if ignore_index is not None and (not isinstance(ignore_index, int) or isinstance(ignore_index, bool)):
            raise ValueError(f"ignore_index must be an int or None, got {ignore_index!r}")
        if conv not in ("standard", "panoptic"):
            raise ValueError(f"conv must be 'standard' or 'panoptic', got {conv!r}")
        if upsample not in ("nearest", "panoptic"):
            raise ValueError(f"upsample must be 'nearest' or 'panoptic', got {upsample!r}")
        if num_upsampling_layers not in _NUM_UP:
            raise ValueError(
                f"num_upsampling_layers must be one of {tuple(_NUM_UP)}, got {num_upsampling_layers!r}"
            )
        if norm not in ("instance", "batch", "syncbatch"):
            raise ValueError(f"norm must be 'instance', 'batch' or 'syncbatch', got {norm!r}")
        if not isinstance(aspect_ratio, (int, float)) or aspect_ratio <= 0:
            raise ValueError(f"aspect_ratio must be a positive number, got {aspect_ratio!r}")
        if boundary is None:
            boundary = conv == "standard"
        num_up = _NUM_UP[num_upsampling_layers]
        start_width = crop_size // 2**num_up
        start_height = round(start_width / aspect_ratio)
        if start_width < 1 or start_height < 1:
            raise ValueError(
                f"crop_size={crop_size} with aspect_ratio={aspect_ratio} is too small for "
                f"num_upsampling_layers={num_upsampling_layers!r}: it needs a width of at least "
                f"{2**num_up} and a height of at least {2**num_up} pixels"
            )
        if norm == "instance" and start_width * start_height == 1:
            raise ValueError(
                f"crop_size={crop_size} with num_upsampling_layers={num_upsampling_layers!r} starts from a 1x1 "
                f"map, which instance norm cannot normalize: use crop_size >= {2 ** (num_up + 1)}"
            )
        if num_upsampling_layers == "most" and ngf < 2:
            raise ValueError(
                f"num_upsampling_layers='most' needs ngf >= 2 (its last block has ngf // 2), got {ngf}"
            )

        self._config: dict[str, Any] = dict(
            num_classes=num_classes,
            ignore_index=ignore_index,
            ngf=ngf,
            conv=conv,
            upsample=upsample,
            boundary=bool(boundary),
            num_upsampling_layers=num_upsampling_layers,
            crop_size=crop_size,
            aspect_ratio=float(aspect_ratio),
            norm=norm,
            spectral=spectral,
            spade_hidden=spade_hidden,
        )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.boundary = bool(boundary)
        self.num_up = num_up
        self.start_size = (start_height, start_width)
        label_nc = label_map_channels(num_classes, ignore_index, self.boundary)
        self.label_channels = label_nc
        nf = ngf

        def block(cin: int, cout: int) -> SPADEResBlock:
            return SPADEResBlock(
                cin, cout, label_nc, conv=conv, spectral=spectral, norm=norm, hidden=spade_hidden
            )

        # First layer: label map at the start size -> 16 nf (shared by the hole-filling stages).
        self.fc = make_conv3x3(label_nc, 16 * nf, conv)
        self.head_0 = block(16 * nf, 16 * nf)
        self.G_middle_0 = block(16 * nf, 16 * nf)
        self.G_middle_1 = block(16 * nf, 16 * nf)
        self.up_0 = block(16 * nf, 8 * nf)
        self.up_1 = block(8 * nf, 4 * nf)
        self.up_2 = block(4 * nf, 2 * nf)
        self.up_3 = block(2 * nf, nf)
        final_nc = nf
        if num_upsampling_layers == "most":
            self.up_4 = block(nf, nf // 2)
            final_nc = nf // 2
        self.conv_img = nn.Conv2d(final_nc, 3, 3, padding=1)

        # Channel count of the features at every x2 upsampling, in order.
        stage_channels = [16 * nf]
        if num_upsampling_layers in ("more", "most"):
            stage_channels.append(16 * nf)
        stage_channels += [16 * nf, 8 * nf, 4 * nf, 2 * nf]
        if num_upsampling_layers == "most":
            stage_channels.append(nf)
        self.upsample_kind = upsample
        # The sparse hole filling needs a panoptic first layer fed a purely one-hot map.
        self.sparse_hole_filling = upsample == "panoptic" and conv == "panoptic" and not self.boundary
        self.upsample_layers: nn.ModuleList | None = None
        if upsample == "panoptic":
            self.upsample_layers = nn.ModuleList(
                PanopticUpsample(self.fc, c, num_classes, ignore_index)
                if self.sparse_hole_filling
                else DenseHoleFillUpsample(self.fc, c)
                for c in stage_channels
            )

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serializable): ``Generator(**g.config)`` rebuilds it."""
        return dict(self._config)

    @property
    def output_size(self) -> tuple[int, int]:
        """(H, W) of the maps this generator takes and the images it makes."""
        return self.start_size[0] * 2**self.num_up, self.start_size[1] * 2**self.num_up

    # ------------------------------------------------------------------ forward
    def label_map(self, semantic: Tensor, panoptic: Tensor) -> Tensor:
        """The label input (Tensor[N, L, H, W]) built from the semantic and panoptic maps."""
        return build_label_map(semantic, panoptic, self.num_classes, self.ignore_index, self.boundary)

    def _check_inputs(self, semantic: Tensor, panoptic: Tensor) -> None:
        if isinstance(semantic, Tensor) and semantic.dim() == 4:
            raise ValueError(
                f"semantic must be an (N, H, W) map of class indices, got a 4-d tensor {tuple(semantic.shape)} "
                f"(pass class indices, not a one-hot map with {self.label_channels} channels)"
            )
        check_label_inputs(semantic, panoptic)
        if tuple(semantic.shape[-2:]) != self.output_size:
            h, w = semantic.shape[-2:]
            eh, ew = self.output_size
            cfg = self._config
            raise ValueError(
                f"semantic/panoptic maps are {h}x{w} but this generator (crop_size={cfg['crop_size']}, "
                f"aspect_ratio={cfg['aspect_ratio']}, num_upsampling_layers={cfg['num_upsampling_layers']!r}) "
                f"expects {eh}x{ew}"
            )

    def _upsample(self, index: int, x: Tensor, semantic: Tensor, label: Tensor, panoptic: Tensor) -> Tensor:
        if self.upsample_layers is None:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        low = tuple(x.shape[-2:])
        high = (2 * low[0], 2 * low[1])
        layer = self.upsample_layers[index]
        panoptic_low, panoptic_high = downsample_map(panoptic, low), downsample_map(panoptic, high)
        if isinstance(layer, DenseHoleFillUpsample):
            return layer(x, resize_label(label, high), panoptic_low, panoptic_high)
        return layer(x, downsample_map(semantic, high), panoptic_low, panoptic_high)

    def forward(self, semantic: Tensor, panoptic: Tensor) -> Tensor:
        self._check_inputs(semantic, panoptic)
        panoptic = panoptic.long()
        label = self.label_map(semantic, panoptic).to(self.conv_img.weight.dtype)
        x = apply_conv(self.fc, resize_label(label, self.start_size), panoptic)
        stage = iter(range(self.num_up))

        def up(features: Tensor) -> Tensor:
            return self._upsample(next(stage), features, semantic, label, panoptic)

        x = self.head_0(x, label, panoptic)
        x = up(x)
        x = self.G_middle_0(x, label, panoptic)
        if self._config["num_upsampling_layers"] in ("more", "most"):
            x = up(x)
        x = self.G_middle_1(x, label, panoptic)
        x = self.up_0(up(x), label, panoptic)
        x = self.up_1(up(x), label, panoptic)
        x = self.up_2(up(x), label, panoptic)
        x = self.up_3(up(x), label, panoptic)
        if self._config["num_upsampling_layers"] == "most":
            x = self.up_4(up(x), label, panoptic)
        x = self.conv_img(F.leaky_relu(x, _LRELU_SLOPE))
        return torch.tanh(x)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` (constructor arguments) and ``model.safetensors`` into ``directory``.

        The state dict is saved as is (spectral-norm parametrizations included), so
        :meth:`from_pretrained` rebuilds the same module and loads it strictly. Files are
        written to a temporary name first and then renamed, so an interrupted save never
        leaves a half-written model behind.
        """
        from safetensors.torch import save_file

        from pansynth import __version__

        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(
                f"cannot save the generator into {directory}: it is a file, not a directory"
            )
        directory.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        config = {"_class_name": type(self).__name__, "_pansynth_version": __version__, **self._config}
        _atomic_write(
            directory / WEIGHTS_NAME, lambda path: save_file(state, str(path), metadata={"format": "pt"})
        )
        _atomic_write(
            directory / CONFIG_NAME,
            lambda path: path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"),
        )
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> Generator:
        """Rebuild a generator saved by :meth:`save_pretrained`; returned in eval mode on ``device``."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} not found: a saved generator directory holds {CONFIG_NAME} and {WEIGHTS_NAME} "
                    "(written by Generator.save_pretrained)"
                )
        try:
            config = json.loads(config_path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{config_path} is not valid JSON: {error}") from error
        if not isinstance(config, dict):
            raise ValueError(f"{config_path} must hold a JSON object of constructor arguments")
        kwargs = {key: value for key, value in config.items() if not key.startswith("_")}
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(
                f"{config_path} has unknown generator arguments {unknown}; expected a subset of {sorted(known)}"
            )
        generator = cls(**kwargs)
        state = load_file(str(weights_path))
        try:
            generator.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ValueError(
                f"{weights_path} does not match the generator described by {config_path}: {error}"
            ) from error
        return generator.to(device).eval()


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _atomic_write(path: Path, write) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
