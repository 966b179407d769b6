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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from pansynth import __version__
from pansynth.choices import (
    CONV_KINDS,
    NORM_KINDS,
    STYLE_KINDS,
    UPSAMPLE_KINDS,
    UPSAMPLING_LAYERS,
    ConvKind,
    InitKind,
    NormKind,
    StyleKind,
    UpsampleKind,
    UpsamplingLayers,
    check_choice,
)
from pansynth.files import atomic_write
from pansynth.models.hole_fill import HoleFillingUpsample
from pansynth.models.init import init_weights
from pansynth.models.spade import PlanCache, SPADEResBlock, apply_conv, make_conv3x3, resize_label
from pansynth.models.style import StyleEncoder, code_map, codes_for_ids, style_hole_features
from pansynth.ops import Backend, PanopticConv2d
from pansynth.ops.backend import BACKENDS, select_backend
from pansynth.ops.maps import (
    boundary_map,
    check_map,
    check_semantic_values,
    downsample_map,
    mark_unknown,
    semantic_one_hot,
)
from pansynth.ops.panoptic_upsample import CANDIDATES, upsample_choices

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "Generator", "build_label_map", "label_map_channels"]

_NUM_UP = {"normal": 5, "more": 6, "most": 7}
_LRELU_SLOPE = 0.2
# The files of a saved generator (Generator.save_pretrained): constructor arguments + weights.
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# State-dict names of earlier versions, renamed on load so that old exports and checkpoints still load.
_RENAMED = {"fc.": "first_layer.", "G_middle_0.": "middle_0.", "G_middle_1.": "middle_1."}


def label_map_channels(num_classes: int, ignore_index: int | None, boundary: bool) -> int:
    """Channels of :func:`build_label_map`: classes (+1 ignore channel) (+1 boundary channel)."""
    return num_classes + (ignore_index is not None) + bool(boundary)


def build_label_map(
    semantic: Tensor, panoptic: Tensor, num_classes: int, ignore_index: int | None, boundary: bool, check: bool = True
) -> Tensor:
    """The network's label input: one-hot semantic map, plus the boundary map when asked.

    Args:
        semantic (Tensor[N, H, W]): class indices in ``[0, num_classes)``, or -1 / ``ignore_index``
            for unknown pixels.
        panoptic (Tensor[N, H, W]): integer segment ids (only read when ``boundary``).
        check: check the class indices (reads them: see :func:`pansynth.ops.maps.check_semantic_values`).

    Returns:
        Tensor[N, L, H, W] float32, L = :func:`label_map_channels`; unknown pixels are one-hot
        in the extra channel after the classes when ``ignore_index`` is set (SPADE's don't-care
        channel), else all zeros; the boundary map (unknown pixels one segment) is the last channel.
    """
    semantic, panoptic = mark_unknown(semantic, panoptic, ignore_index)
    label = semantic_one_hot(semantic, num_classes, ignore_index, check=check)
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


class Generator(nn.Module):
    """SPADE generator (Figure 5) with panoptic-aware convolution and upsampling switches.

    Args:
        num_classes: number of semantic classes K (one-hot width, without the ignore channel).
        size: (H, W) of the maps it takes and the images it makes; both must be multiples of
            2**(number of upsamplings), since the first layer runs at (H, W) / 2**num_up.
        ignore_index: a class value that also means unknown, with SPADE's don't-care channel for
            unknown pixels; None: unknown pixels (class -1) have an all-zero one-hot vector. Either
            way every unknown pixel joins one segment of its own (id -1), whatever id it came with.
        ngf: base width; the first layer has 16 * ngf channels.
        conv: ``"panoptic"`` (paper) or ``"standard"`` (SPADE) for the first layer and the 3x3
            convs of the residual blocks.
        upsample: ``"panoptic"`` (paper, Algorithm 1 with hole filling) or ``"nearest"`` (SPADE).
        boundary: also feed the instance boundary map to the label input; None means True
            for ``conv="standard"`` (the SPADE baseline) and False for ``conv="panoptic"``.
        num_upsampling_layers: ``"normal"`` | ``"more"`` | ``"most"``: 5, 6 or 7 x2 upsamplings.
        norm: parameter-free norm inside SPADE: ``"instance"`` | ``"batch"`` | ``"syncbatch"``.
        spectral: spectral normalization on the residual blocks' convolutions.
        spade_hidden: width of the hidden convolution in every SPADE layer (128 in SPADE).
        init: ``"spade"`` (SPADE's xavier-normal, gain 0.02) or ``"default"`` (PyTorch's).
        backend: engine of the panoptic layers: ``"auto"`` (see :mod:`pansynth.ops.backend`),
            ``"triton"`` (the fused CUDA kernels) or ``"torch"`` (the PyTorch engine). The same numbers
            either way; with the PyTorch engine each forward pass finds every scale's segment
            boundaries once and shares them between the layers of that scale.
        style: ``"none"`` (the paper's model: one image per map) or ``"instance"``: a style code
            per panoptic segment, read by a :class:`~pansynth.models.style.StyleEncoder` (panoptic-aware
            when the generator is) from a real image or drawn from (seed, segment id); the code map
            is fed to the first layer and to every SPADE modulation next to the label channels.
        style_dim: code channels per segment (with ``style="instance"``).

    Shapes:
        forward(semantic (Tensor[N, H, W]) int64, panoptic (Tensor[N, H, W]) int64,
        style (Tensor[N, style_dim, H, W], optional: the code map, see :meth:`style_map`))
        -> Tensor[N, 3, H, W] in [-1, 1], with (H, W) = ``size``; semantic -1 marks unknown pixels.
        A style generator given no code map draws every segment's code with seed 0.

    Example:
        >>> g = Generator(num_classes=4, size=(64, 64), ngf=4)
        >>> semantic = torch.randint(0, 4, (1, 64, 64))
        >>> g(semantic, semantic * 10).shape
        torch.Size([1, 3, 64, 64])
    """

    def __init__(
        self,
        num_classes: int,
        size: Sequence[int] = (256, 256),
        ignore_index: int | None = None,
        ngf: int = 64,
        conv: ConvKind = "panoptic",
        upsample: UpsampleKind = "panoptic",
        boundary: bool | None = None,
        num_upsampling_layers: UpsamplingLayers = "normal",
        norm: NormKind = "instance",
        spectral: bool = True,
        spade_hidden: int = 128,
        init: InitKind = "spade",
        backend: Backend = "auto",
        style: StyleKind = "none",
        style_dim: int = 8,
    ) -> None:
        super().__init__()
        _check_int("num_classes", num_classes, 1)
        check_choice("style", style, STYLE_KINDS)
        _check_int("style_dim", style_dim, 1)
        check_choice("backend", backend, BACKENDS)
        _check_int("spade_hidden", spade_hidden, 1)
        _check_int("ngf", ngf, 1)
        if ignore_index is not None and (not isinstance(ignore_index, int) or isinstance(ignore_index, bool)):
            raise ValueError(f"ignore_index must be an int or None, got {ignore_index!r}")
        check_choice("conv", conv, CONV_KINDS)
        check_choice("upsample", upsample, UPSAMPLE_KINDS)
        check_choice("num_upsampling_layers", num_upsampling_layers, UPSAMPLING_LAYERS)
        check_choice("norm", norm, NORM_KINDS)
        height, width = _check_size(size)
        if boundary is None:
            boundary = conv == "standard"
        num_up = _NUM_UP[num_upsampling_layers]
        factor = 2**num_up
        if height % factor or width % factor:
            raise ValueError(
                f"size={height}x{width} does not suit num_upsampling_layers={num_upsampling_layers!r}: "
                f"the height and width must be multiples of 2**{num_up} = {factor} (the first layer runs at "
                f"1/{factor} of the size)"
            )
        if norm == "instance" and height * width == factor * factor:
            raise ValueError(
                f"size={height}x{width} with num_upsampling_layers={num_upsampling_layers!r} starts from a 1x1 "
                f"map, which instance norm cannot normalize: use a size of at least {2 * factor} on one side"
            )
        if num_upsampling_layers == "most" and ngf < 2:
            raise ValueError(f"num_upsampling_layers='most' needs ngf >= 2 (its last block has ngf // 2), got {ngf}")

        self._config: dict[str, Any] = dict(
            num_classes=num_classes,
            size=[height, width],
            ignore_index=ignore_index,
            ngf=ngf,
            conv=conv,
            upsample=upsample,
            boundary=bool(boundary),
            num_upsampling_layers=num_upsampling_layers,
            norm=norm,
            spectral=spectral,
            spade_hidden=spade_hidden,
            init=init,
            backend=backend,
        )
        if style != "none":  # a style-less generator keeps the configuration of earlier versions
            self._config.update(style=style, style_dim=style_dim)
        # Facts about the saved weights (training step, class names...): see save_pretrained.
        self.metadata: dict[str, Any] = {}
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.boundary = bool(boundary)
        self.num_up = num_up
        self.backend = backend
        self.start_size = (height // factor, width // factor)
        label_nc = label_map_channels(num_classes, ignore_index, self.boundary)
        self.label_channels = label_nc
        self.style = style
        self.style_dim = style_dim if style != "none" else 0
        nf = ngf
        # The SPADE modulations read the label map and, with styles, the code map after it.
        modulation_nc = label_nc + self.style_dim

        def block(cin: int, cout: int) -> SPADEResBlock:
            return SPADEResBlock(
                cin, cout, modulation_nc, conv=conv, spectral=spectral, norm=norm, hidden=spade_hidden, backend=backend
            )

        # The first layer: label map at the start size -> 16 nf, shared by the hole-filling stages.
        self.first_layer = make_conv3x3(label_nc, 16 * nf, conv, backend)
        self.head_0 = block(16 * nf, 16 * nf)
        self.middle_0 = block(16 * nf, 16 * nf)
        self.middle_1 = block(16 * nf, 16 * nf)
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
        self.upsample_layers: nn.ModuleList | None = None
        if upsample == "panoptic":
            self.upsample_layers = nn.ModuleList(
                HoleFillingUpsample(self.first_layer, c, num_classes, ignore_index, self.boundary, backend)
                for c in stage_channels
            )
        self.style_encoder: StyleEncoder | None = None
        self.first_layer_style: nn.Module | None = None
        if style == "instance":
            # E, and the first layer's code columns: first_layer(label ⊕ codes) = first_layer(label) +
            # first_layer_style(codes), the bias counted once (the hole filling reads the two parts).
            self.style_encoder = StyleEncoder(style_dim, conv=conv, upsample=upsample, backend=backend)
            if conv == "panoptic":
                self.first_layer_style = PanopticConv2d(style_dim, 16 * nf, 3, bias=False, backend=backend)
            else:
                self.first_layer_style = nn.Conv2d(style_dim, 16 * nf, 3, padding=1, bias=False)
        init_weights(self, init)
        if self.style_encoder is not None:
            self.style_encoder.reset_parameters()
        self._register_load_state_dict_pre_hook(_rename_old_keys, with_module=True)

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serializable): ``Generator(**g.config)`` rebuilds it."""
        return {key: list(value) if isinstance(value, list) else value for key, value in self._config.items()}

    @property
    def output_size(self) -> tuple[int, int]:
        """(H, W) of the maps this generator takes and the images it makes."""
        height, width = self._config["size"]
        return int(height), int(width)

    # ------------------------------------------------------------------ forward
    def label_map(self, semantic: Tensor, panoptic: Tensor) -> Tensor:
        """The label input (Tensor[N, L, H, W]) built from the semantic and panoptic maps."""
        # (the class indices are checked once per call, by check_inputs)
        return build_label_map(semantic, panoptic, self.num_classes, self.ignore_index, self.boundary, check=False)

    def check_inputs(self, semantic: Tensor, panoptic: Tensor) -> None:
        """Raise a ValueError that says what is wrong with a pair of input maps.

        :meth:`forward` calls it in eager mode; under ``torch.compile`` the checks that read the
        maps' values are left out of the compiled graph (call this once yourself beforehand). The
        class-index check is the only place where a forward pass reads values on the host: on the
        Triton engine nothing else in the forward or backward pass waits for the device.
        """
        if isinstance(semantic, Tensor) and semantic.dim() == 4:
            raise ValueError(
                f"semantic must be an (N, H, W) map of class indices, got a 4-d tensor {tuple(semantic.shape)} "
                f"(pass class indices, not a one-hot map with {self.label_channels} channels)"
            )
        check_label_inputs(semantic, panoptic)
        if tuple(semantic.shape[-2:]) != self.output_size:
            h, w = semantic.shape[-2:]
            eh, ew = self.output_size
            raise ValueError(
                f"semantic/panoptic maps are {h}x{w} but this generator (size={eh}x{ew}) expects {eh}x{ew}"
            )
        check_semantic_values(semantic, self.num_classes, self.ignore_index)

    def _upsample(self, index: int, x: Tensor, semantic: Tensor, panoptic: Tensor, codes: Tensor | None) -> Tensor:
        if self.upsample_layers is None:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        low = tuple(x.shape[-2:])
        high = (2 * low[0], 2 * low[1])
        panoptic_low, panoptic_high = downsample_map(panoptic, low), downsample_map(panoptic, high)
        layer = self.upsample_layers[index]
        out = layer(x, downsample_map(semantic, high), panoptic_low, panoptic_high)
        if codes is None:
            return out
        # Eq. 3 fills the holes with the first layer's output, whose input holds the code map too.
        holes = (upsample_choices(panoptic_low, panoptic_high) >= len(CANDIDATES)).nonzero()
        if len(holes) == 0:
            return out
        fill = style_hole_features(
            downsample_map(codes, high),
            panoptic_high,
            holes,
            self.first_layer_style.weight,
            partial=isinstance(self.first_layer_style, PanopticConv2d),
        )
        if layer.proj is not None:
            fill = fill @ layer.proj.weight.view(layer.proj.weight.shape[0], -1).t()
        batch, rows, cols = (column[:, None] for column in holes.unbind(1))
        channels = torch.arange(out.shape[1], device=out.device)[None, :]
        return out.index_put((batch, channels, rows, cols), fill.to(out.dtype), accumulate=True)

    # ------------------------------------------------------------------ styles
    def _require_style(self) -> None:
        if self.style_encoder is None:
            raise ValueError("this generator has no styles (style='none'): it takes no style codes or reference")

    def encode(self, image: Tensor, panoptic: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-segment style statistics of real images: ``(mu, logvar, index, keys)``.

        Args:
            image (Tensor[N, 3, H, W]) in [-1, 1]; panoptic (Tensor[N, H, W]) int ids, at this generator's size.

        Returns:
            mu, logvar (Tensor[S, style_dim]) per segment; index (Tensor[N, H, W]) the segments'
            compact numbers and keys (Tensor[S, 2]) their (image, id)
            (see :func:`~pansynth.models.style.segment_index`).
        """
        self._require_style()
        panoptic = panoptic.long()
        image = image.to(self.conv_img.weight.dtype)
        plans = self._plans(panoptic, image)
        return self.style_encoder(_layout(image, select_backend(self.backend, image) == "triton"), panoptic, plans)

    def style_map(
        self,
        panoptic: Tensor,
        seed: int = 0,
        codes: dict[int, Tensor] | None = None,
        restyle: dict[int, int] | None = None,
    ) -> Tensor:
        """The code map of a panoptic map: Tensor[N, style_dim, H, W].

        A segment takes ``codes[id]`` when given, else the code drawn from (``seed``, id)
        (:func:`~pansynth.models.style.sample_codes`); ids in ``restyle`` are drawn with their own seed.
        """
        self._require_style()
        check_map(panoptic, "panoptic")
        ids, inverse = torch.unique(panoptic.long(), return_inverse=True)
        table = codes_for_ids(ids, self.style_dim, seed, codes, restyle)
        return code_map(table.to(device=panoptic.device, dtype=self.conv_img.weight.dtype), inverse)

    def _style_input(self, style: Tensor | None, panoptic: Tensor) -> Tensor | None:
        if self.style_encoder is None:
            if style is not None:
                raise ValueError("this generator has no styles (style='none') but was given a code map")
            return None
        if style is None:
            return self.style_map(panoptic)
        expected = (panoptic.shape[0], self.style_dim, *panoptic.shape[-2:])
        if not isinstance(style, Tensor) or tuple(style.shape) != expected or not style.is_floating_point():
            got = tuple(style.shape) if isinstance(style, Tensor) else type(style).__name__
            raise ValueError(f"the code map must be a floating-point tensor of shape {expected}, got {got}")
        return style

    def _plans(self, panoptic: Tensor, features: Tensor) -> PlanCache | None:
        """This forward pass's per-scale plans of the engine that runs the panoptic convolutions."""
        if self._config["conv"] != "panoptic":
            return None
        engine = select_backend(self.backend, features)
        if engine == "triton":
            return PlanCache(panoptic, "triton")  # shape-only tensor ops: also inside compiled graphs
        if engine == "torch" and not torch.compiler.is_compiling():
            return PlanCache(panoptic, "torch")  # compiled graphs run the ops as custom ops, which plan for themselves
        return None

    def forward(self, semantic: Tensor, panoptic: Tensor, style: Tensor | None = None) -> Tensor:
        if not torch.compiler.is_compiling():
            self.check_inputs(semantic, panoptic)
        semantic, panoptic = mark_unknown(semantic, panoptic, self.ignore_index)
        label = self.label_map(semantic, panoptic).to(self.conv_img.weight.dtype)
        # The Triton engine's kernels read NHWC: its forward and backward passes run channels_last
        # throughout (the norms, modulations and residual adds keep the layout they are given).
        nhwc = select_backend(self.backend, label) == "triton"
        label = _layout(label, nhwc)
        plans = self._plans(panoptic, label)
        x = apply_conv(self.first_layer, _layout(resize_label(label, self.start_size), nhwc), panoptic, plans)
        codes = self._style_input(style, panoptic)
        if codes is not None:
            codes = _layout(codes.to(label.dtype), nhwc)
            start_codes = _layout(resize_label(codes, self.start_size), nhwc)
            x = x + apply_conv(self.first_layer_style, start_codes, panoptic, plans)
            label = torch.cat([label, codes], dim=1)  # what every SPADE modulation reads
        stage = 0

        def up(features: Tensor) -> Tensor:
            nonlocal stage
            stage += 1
            return self._upsample(stage - 1, features, semantic, panoptic, codes)

        x = self.head_0(x, label, panoptic, plans)
        x = up(x)
        x = self.middle_0(x, label, panoptic, plans)
        if self._config["num_upsampling_layers"] in ("more", "most"):
            x = up(x)
        x = self.middle_1(x, label, panoptic, plans)
        x = self.up_0(up(x), label, panoptic, plans)
        x = self.up_1(up(x), label, panoptic, plans)
        x = self.up_2(up(x), label, panoptic, plans)
        x = self.up_3(up(x), label, panoptic, plans)
        if self._config["num_upsampling_layers"] == "most":
            x = self.up_4(up(x), label, panoptic, plans)
        x = self.conv_img(F.leaky_relu(x, _LRELU_SLOPE))
        return torch.tanh(x)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` (constructor arguments) and ``model.safetensors`` into ``directory``.

        ``metadata`` (JSON-serializable facts such as ``step``, ``class_names``, ``thing_classes``)
        is stored in ``config.json`` under ``_``-prefixed keys and comes back as the loaded
        generator's :attr:`metadata`. The state dict is saved as is (spectral-norm
        parametrizations included), so :meth:`from_pretrained` rebuilds the same module and loads
        it strictly. The weights are written first and the config last, each atomically: a save
        killed half-way leaves the previous config, which names the previous step.
        """
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(f"cannot save the generator into {directory}: it is a file, not a directory")
        directory.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        meta = {**self.metadata, **(metadata or {}), "pansynth_version": __version__}
        config = {"_class_name": type(self).__name__, **{f"_{k}": v for k, v in meta.items()}, **self.config}
        atomic_write(directory / WEIGHTS_NAME, lambda path: save_file(state, str(path), metadata={"format": "pt"}))
        atomic_write(
            directory / CONFIG_NAME,
            lambda path: path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"),
        )
        return directory

    @classmethod
    def read_config(cls, directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(constructor arguments, metadata)`` of a saved generator, checked; no weights are read."""
        config_path = Path(directory) / CONFIG_NAME
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{config_path} not found: a saved generator directory holds {CONFIG_NAME} and {WEIGHTS_NAME} "
                "(written by Generator.save_pretrained)"
            )
        try:
            config = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{config_path} is not valid JSON: {error}") from error
        if not isinstance(config, dict):
            raise ValueError(f"{config_path} must hold a JSON object of constructor arguments")
        kwargs = {key: value for key, value in config.items() if not key.startswith("_")}
        metadata = {key[1:]: value for key, value in config.items() if key.startswith("_") and key != "_class_name"}
        kwargs = _upgrade_config(kwargs)
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(
                f"{config_path} has unknown generator arguments {unknown}; expected a subset of {sorted(known)}"
            )
        return kwargs, metadata

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, device: str | torch.device = "cpu", channels_last: bool | None = None
    ) -> Generator:
        """Rebuild a generator saved by :meth:`save_pretrained`; returned in eval mode on ``device``.

        ``channels_last`` stores the weights NHWC (None: on CUDA only, where cuDNN and the Triton
        engine read them without a per-call re-layout; the same images either way)."""
        directory = Path(directory)
        kwargs, metadata = cls.read_config(directory)
        weights_path = directory / WEIGHTS_NAME
        if not weights_path.is_file():
            raise FileNotFoundError(
                f"{weights_path} not found: a saved generator directory holds {CONFIG_NAME} and {WEIGHTS_NAME}"
            )
        try:
            generator = cls(**kwargs)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{directory / CONFIG_NAME} does not describe a valid generator: {error}") from error
        try:
            state = load_file(str(weights_path))
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(f"{weights_path} is not a readable safetensors file ({error})") from error
        try:
            generator.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ValueError(
                f"{weights_path} does not match the generator described by {directory / CONFIG_NAME}: {error}"
            ) from error
        generator.metadata = metadata
        generator = generator.to(device).eval()
        if channels_last if channels_last is not None else torch.device(device).type == "cuda":
            generator = generator.to(memory_format=torch.channels_last)
        return generator


def _layout(tensor: Tensor, nhwc: bool) -> Tensor:
    # A dense channels_last tensor (a strided slice of the label map included: the kernels read dense NHWC).
    return tensor.contiguous(memory_format=torch.channels_last) if nhwc else tensor


def _rename_old_keys(module, state_dict, prefix, *args) -> None:
    """Load state dicts of earlier versions (``fc`` -> ``first_layer``, ``G_middle_k`` -> ``middle_k``)."""
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        for old, new in _RENAMED.items():
            if rest.startswith(old):
                state_dict[prefix + new + rest[len(old) :]] = state_dict.pop(key)
                break


def _upgrade_config(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments of earlier versions: SPADE's ``crop_size`` + ``aspect_ratio`` -> ``size``."""
    kwargs = dict(kwargs)
    if "crop_size" in kwargs and "size" not in kwargs:
        width = int(kwargs.pop("crop_size"))
        aspect_ratio = float(kwargs.pop("aspect_ratio", 1.0))
        num_up = _NUM_UP.get(kwargs.get("num_upsampling_layers", "normal"), 5)
        start_width = width // 2**num_up
        kwargs["size"] = [round(start_width / aspect_ratio) * 2**num_up, start_width * 2**num_up]
    if "init" not in kwargs:
        kwargs["init"] = "default"  # earlier versions kept PyTorch's initialisation (irrelevant once loaded)
    return kwargs


def _check_size(size: Any) -> tuple[int, int]:
    if (
        not isinstance(size, Sequence)
        or isinstance(size, str)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise ValueError(f"size must be (H, W) with two positive integers, got {size!r}")
    return int(size[0]), int(size[1])


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
