"""Typed training configuration: dataclasses, YAML presets and ``key=value`` overrides.

A configuration is a :class:`TrainConfig` made of five sections (``data``, ``model`` -- the
generator's constructor arguments --, ``discriminator``, ``optim``, ``loss``) plus run-level
settings. Every key of ``model`` and ``discriminator`` is the name of the constructor
argument it sets (:class:`pansynth.models.Generator`, :class:`pansynth.models.MultiscaleDiscriminator`);
the choices are those of :mod:`pansynth.choices`. Presets are plain YAML files shipped in
``pansynth/configs/``; a run directory keeps the resolved configuration as ``config.yaml``.

SPADE's names are accepted as aliases: ``model.ndf``, ``model.num_D`` and ``model.n_layers_D``
set ``discriminator.ndf``, ``discriminator.num_scales`` and ``discriminator.num_layers``.

Example::

    >>> from pansynth.train.config import load_config
    >>> config = load_config("demo", ["max_steps=10", "model.ngf=8"])
    >>> config.model.ngf, config.max_steps
    (8, 10)
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

import yaml

from pansynth.choices import (
    CONV_KINDS,
    DATASET_NAMES,
    DEVICE_NAMES,
    INIT_KINDS,
    NORM_KINDS,
    PRECISIONS,
    STYLE_KINDS,
    UPSAMPLE_KINDS,
    UPSAMPLING_LAYERS,
    VGG_INPUTS,
)
from pansynth.errors import yaml_error_line
from pansynth.ops.backend import BACKENDS

# Keys that may differ between the configuration stored in a run directory and the one
# given when the run is resumed: they change how long the run goes, how often it reports,
# where it reads from or which engine computes the same numbers -- never what is trained.
# (data.root is compared as a resolved path, see pansynth.train.run_dir.)
RESUME_HARMLESS_KEYS = (
    "max_steps",
    "log_every",
    "sample_every",
    "checkpoint_every",
    "keep_checkpoints",
    "device",
    "channels_last",
    "model.backend",
    "data.root",
    "data.num_workers",
    "data.skip_bad",
)

# SPADE's names of discriminator settings, accepted in YAML files and overrides.
ALIASES = {
    "model.ndf": "discriminator.ndf",
    "model.num_D": "discriminator.num_scales",
    "model.n_layers_D": "discriminator.num_layers",
}


@dataclass
class CorruptConfig:
    """Training augmentation of the label maps (:class:`pansynth.data.corrupt.CorruptAugment`); off by default."""

    warp_prob: float = 0.0  # probability that a sample's maps are elastically warped (its photo is not)
    warp_level: float = 4.0  # largest displacement of the warp in pixels (corruption "jitter")
    unknown_prob: float = 0.0  # probability that a sample gets unknown rectangles
    unknown_regions: int = 3  # how many (corruption "regions")


@dataclass
class DataConfig:
    dataset: str = "folder"  # folder | cityscapes | coco-stuff | coco-panoptic
    root: str | None = None  # dataset folder; required before training starts
    split: str | None = "train"
    load_size: list[int] | None = None  # [H, W] resize before cropping; null keeps the file size
    crop_size: list[int] | None = None  # [H, W] random crop after resizing; null for no crop
    flip: bool = False  # random horizontal flip
    num_workers: int = 0
    skip_bad: bool = False  # skip unreadable samples instead of failing
    unknown_classes: list[int] = field(default_factory=list)  # cityscapes: label ids read as unknown (void: 0..6)
    corrupt: CorruptConfig = field(default_factory=CorruptConfig)  # label-map augmentation, off by default


@dataclass
class ModelConfig:
    """The generator's constructor arguments (its size comes from the data)."""

    ngf: int = 64
    conv: str = "panoptic"  # panoptic | standard
    upsample: str = "panoptic"  # panoptic | nearest
    boundary: bool | None = None  # feed the instance boundary map; null: true for conv=standard only
    num_upsampling_layers: str = "normal"  # normal | more | most
    norm: str = "syncbatch"  # parameter-free norm inside SPADE: instance | batch | syncbatch
    spectral: bool = True  # spectral norm on the residual blocks' convolutions
    spade_hidden: int = 128  # width of the SPADE layers' hidden convolution
    init: str = "spade"  # spade (xavier normal, gain 0.02) | default (PyTorch's)
    backend: str = "auto"  # engine of the panoptic layers: auto | triton | torch (same numbers)
    style: str = "none"  # none (the paper's model) | instance (a style code per panoptic segment, docs/style.md)
    style_dim: int = 8  # code channels per segment (style=instance)


@dataclass
class DiscriminatorConfig:
    """The multi-scale PatchGAN discriminator's constructor arguments."""

    ndf: int = 64
    num_scales: int = 2
    num_layers: int = 4
    boundary: bool = True  # also see the instance boundary map (SPADE with instance maps)
    spectral: bool = True
    init: str = "spade"


@dataclass
class OptimConfig:
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.999
    epochs: int = 200
    decay_start_epoch: int | None = None  # linear decay to 0 from this epoch to `epochs`; null: constant


@dataclass
class LossConfig:
    lambda_feat: float = 10.0
    lambda_vgg: float = 10.0
    vgg_weights: str | None = None  # local torchvision VGG19 state dict (needed when lambda_vgg > 0)
    vgg_input: str = "raw"  # raw ([-1, 1] images, as SPADE) | imagenet (ImageNet-normalised)
    lambda_kld: float = 0.05  # weight of the style codes' KL divergence to N(0, I) (model.style=instance)


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    batch_size: int = 16  # global batch, divided across distributed ranks
    max_steps: int | None = None  # stop after this many generator steps in total (across resumes)
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 (autocast; CUDA or CPU) | fp16 (autocast + gradient scaler; CUDA)
    ema: float | None = 0.999  # decay of the generator's moving average; null for none
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    device: str = "auto"  # auto | cpu | cuda
    # G and D weights (and so activations) in channels_last (NHWC) memory; null: on CUDA only
    channels_last: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of the configuration (YAML/JSON and ``weights_only`` safe)."""
        return dataclasses.asdict(self)


_CHOICES: dict[str, tuple[Any, ...]] = {
    "data.dataset": DATASET_NAMES,
    "model.conv": CONV_KINDS,
    "model.upsample": UPSAMPLE_KINDS,
    "model.num_upsampling_layers": UPSAMPLING_LAYERS,
    "model.norm": NORM_KINDS,
    "model.init": INIT_KINDS,
    "model.backend": BACKENDS,
    "model.style": STYLE_KINDS,
    "discriminator.init": INIT_KINDS,
    "loss.vgg_input": VGG_INPUTS,
    "precision": PRECISIONS,
    "device": DEVICE_NAMES,
}


def preset_names() -> list[str]:
    """Names of the YAML presets shipped with the package."""
    return sorted(entry.name[: -len(".yaml")] for entry in _preset_dir().iterdir() if entry.name.endswith(".yaml"))


def valid_keys(cls: type = TrainConfig, prefix: str = "") -> list[str]:
    """All dotted keys of a config dataclass, e.g. ``["data.dataset", ..., "seed"]``."""
    keys = []
    for f in dataclasses.fields(cls):
        hint = _type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys.extend(valid_keys(hint, prefix + f.name + "."))
        else:
            keys.append(prefix + f.name)
    return keys


def config_from_dict(values: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a validated :class:`TrainConfig`; missing keys take defaults, unknown keys are rejected."""
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a mapping of config keys, got {type(values).__name__}")
    config = _build(TrainConfig, _resolve_aliases(values, source), prefix="", source=source)
    validate(config, source)
    return config


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Load a preset by name (``demo``, ``cityscapes``, ...) or a YAML file, then apply overrides.

    Args:
        name_or_path: preset name or path to a YAML file.
        overrides: ``key=value`` strings on dotted keys (``data.root=/data``, ``max_steps=100``);
            the value is parsed with ``yaml.safe_load`` (so ``null``, ``[256, 512]``, ``1e-4`` work).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unknown preset, unknown key (the message lists the valid keys), or bad value.
    """
    path = Path(name_or_path)
    text_name = str(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file() or "/" in text_name:
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        source = str(path)
        text = path.read_text()
    else:
        presets = preset_names()
        if text_name not in presets:
            raise ValueError(
                f"unknown config {text_name!r}: give a YAML file or one of the presets {', '.join(presets)}"
            )
        source = f"preset {text_name}"
        text = (_preset_dir() / f"{text_name}.yaml").read_text()
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{source}: not valid YAML ({yaml_error_line(error)})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a mapping of config keys at the top level")
    for override in overrides or []:
        key, value = parse_override(override)
        _set_dotted(values, key, value)
    return config_from_dict(values, source)


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key=value`` and parse the value with ``yaml.safe_load``; the key must be a valid dotted key."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value (e.g. max_steps=100)")
    key, raw = text.split("=", 1)
    key = ALIASES.get(key.strip(), key.strip())
    keys = valid_keys()
    if key not in keys:
        raise ValueError(f"unknown config key {key!r} in override {text!r}; valid keys: {', '.join(keys)}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ValueError(f"override {text!r}: value is not valid YAML ({yaml_error_line(error)})") from None
    return key, value


def validate(config: TrainConfig, source: str = "config") -> None:
    """Check choices and ranges; raise ValueError naming the key and what was expected.

    Every range is written so that NaN fails it (``not value > 0``, not ``value <= 0``); float keys
    are also finite, which :func:`config_from_dict` checks as it reads them."""
    flat = flatten(config.to_dict())
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise ValueError(f"{source}: {key} must be one of {', '.join(choices)}, got {flat[key]!r}")
    positive = (
        "batch_size",
        "log_every",
        "sample_every",
        "checkpoint_every",
        "keep_checkpoints",
        "model.ngf",
        "model.spade_hidden",
        "model.style_dim",
        "discriminator.ndf",
        "discriminator.num_scales",
        "discriminator.num_layers",
        "optim.epochs",
    )
    for key in positive:
        if not flat[key] > 0:
            raise ValueError(f"{source}: {key} must be a positive integer, got {flat[key]}")
    if config.max_steps is not None and not config.max_steps >= 0:
        raise ValueError(f"{source}: max_steps must be >= 0 or null, got {config.max_steps}")
    if not config.data.num_workers >= 0:
        raise ValueError(f"{source}: data.num_workers must be >= 0, got {config.data.num_workers}")
    for key in ("data.load_size", "data.crop_size"):
        size = flat[key]
        if size is not None and (len(size) != 2 or not all(v > 0 for v in size)):  # min() would skip a NaN
            raise ValueError(f"{source}: {key} must be [H, W] with positive sizes or null, got {size}")
    corrupt = config.data.corrupt
    for key in ("warp_prob", "unknown_prob"):
        if not 0.0 <= getattr(corrupt, key) <= 1.0:
            raise ValueError(
                f"{source}: data.corrupt.{key} must be a probability in [0, 1], got {getattr(corrupt, key)}"
            )
    if not 0.0 <= corrupt.warp_level <= 64 or not 0 <= corrupt.unknown_regions <= 64:
        raise ValueError(
            f"{source}: data.corrupt.warp_level must be in [0, 64] pixels and data.corrupt.unknown_regions in "
            f"0..64, got {corrupt.warp_level} and {corrupt.unknown_regions}"
        )
    if config.ema is not None and not 0.0 <= config.ema < 1.0:
        raise ValueError(f"{source}: ema must be a decay in [0, 1) or null, got {config.ema}")
    for key in ("optim.lr_g", "optim.lr_d"):
        if not flat[key] > 0:
            raise ValueError(f"{source}: {key} must be a positive learning rate, got {flat[key]}")
    for key in ("optim.beta1", "optim.beta2"):
        # Adam's moment decays.
        if not 0.0 <= flat[key] < 1.0:
            raise ValueError(f"{source}: {key} must be an Adam decay in [0, 1), got {flat[key]}")
    decay = config.optim.decay_start_epoch
    if decay is not None and not 0 <= decay < config.optim.epochs:
        raise ValueError(
            f"{source}: optim.decay_start_epoch must be in [0, optim.epochs={config.optim.epochs}) or null, got {decay}"
        )
    for key in ("loss.lambda_feat", "loss.lambda_vgg", "loss.lambda_kld"):
        if not flat[key] >= 0:
            raise ValueError(f"{source}: {key} must be a loss weight >= 0, got {flat[key]}")


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, prefix + key + "."))
        else:
            flat[prefix + key] = value
    return flat


def config_differences(stored: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two config dicts, ignoring :data:`RESUME_HARMLESS_KEYS`."""
    a, b = flatten(stored), flatten(new)
    return sorted(k for k in set(a) | set(b) if k not in RESUME_HARMLESS_KEYS and a.get(k) != b.get(k))


def dump_config(config: TrainConfig | dict[str, Any]) -> str:
    """The resolved configuration (or its dict) as YAML text."""
    values = config.to_dict() if isinstance(config, TrainConfig) else config
    return yaml.safe_dump(values, sort_keys=False)


# --------------------------------------------------------------------------- helpers


def _resolve_aliases(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Move SPADE-named keys (``model.num_D`` ...) to the keys they stand for."""
    values = {key: dict(value) if isinstance(value, dict) else value for key, value in values.items()}
    for alias, key in ALIASES.items():
        section, name = alias.split(".")
        if isinstance(values.get(section), dict) and name in values[section]:
            value = values[section].pop(name)
            target_section, target_name = key.split(".")
            target = values.setdefault(target_section, {}) or {}
            if not isinstance(target, dict):
                raise ValueError(f"{source}: {target_section} must be a mapping of keys")
            if target_name in target and target[target_name] != value:
                raise ValueError(
                    f"{source}: {alias} and {key} are the same setting but differ ({value!r}, {target[target_name]!r})"
                )
            target[target_name] = value
            values[target_section] = target
    return values


def _preset_dir() -> Any:
    return resources.files("pansynth") / "configs"


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = values
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"cannot set {key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, values: dict[str, Any], prefix: str, source: str) -> Any:
    hints = _type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ValueError(
            f"{source}: unknown config key {prefix + str(unknown[0])!r}; valid keys: {', '.join(valid_keys())}"
        )
    kwargs = {}
    for name in names:
        if name not in values:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            section = values[name] if values[name] is not None else {}
            if not isinstance(section, dict):
                raise ValueError(f"{source}: {prefix + name} must be a mapping of keys")
            kwargs[name] = _build(hint, section, prefix + name + ".", source)
        else:
            kwargs[name] = _coerce(values[name], hint, prefix + name, source)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check ``value`` against a type hint (int, float, bool, str, list[int], Optional[...])."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, source)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ValueError(f"{source}: {key} must be a list like [256, 512], got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads "3e-5" (no dot) as a string.
        try:
            return float(value)
        except ValueError:
            pass
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, (str, int, float)) and not isinstance(value, bool),
    }.get(hint)
    if not ok:
        raise ValueError(f"{source}: {key} must be {hint.__name__}, got {value!r}")
    if hint is float and not math.isfinite(value):
        # .inf / .nan would pass into the run directory and then diverge or switch a loss off silently.
        raise ValueError(f"{source}: {key} must be a finite number, got {value!r}")
    return hint(value)
