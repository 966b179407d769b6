"""Configuration presets, overrides and their rejection."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pansynth.train.config import (
    RESUME_HARMLESS_KEYS,
    TrainConfig,
    config_differences,
    config_from_dict,
    load_config,
    parse_override,
    preset_names,
    valid_keys,
)
from pansynth.train.loop import lr_factor
from pansynth.train.loss import ema_decay


def test_presets_hold_the_paper_settings():
    assert {"cityscapes", "coco-stuff", "coco-panoptic", "demo"} <= set(preset_names())
    city = load_config("cityscapes")
    assert (city.optim.lr_g, city.optim.lr_d, city.optim.beta1, city.optim.beta2) == (1e-4, 4e-4, 0.0, 0.999)
    assert (city.batch_size, city.optim.epochs, city.optim.decay_start_epoch) == (16, 200, 100)
    assert city.data.load_size == [256, 512] and city.model.norm == "syncbatch"
    assert (city.loss.lambda_feat, city.loss.lambda_vgg) == (10.0, 10.0)
    coco = load_config("coco-stuff")
    assert (coco.batch_size, coco.optim.epochs, coco.optim.decay_start_epoch) == (48, 100, None)
    assert coco.data.crop_size == [256, 256]
    demo = load_config("demo")
    assert demo.loss.lambda_vgg == 0 and demo.model.conv == "panoptic" and demo.model.upsample == "panoptic"
    assert max(demo.data.load_size) <= 128


def test_overrides_are_parsed_as_yaml():
    config = load_config(
        "demo",
        [
            "max_steps=7",
            "optim.lr_g=3e-5",
            "data.load_size=[32, 64]",
            "ema=null",
            "data.flip=false",
            "model.conv=standard",
            "data.root=/some/where",
            "loss.vgg_weights=vgg.pth",
        ],
    )
    assert config.max_steps == 7 and isinstance(config.max_steps, int)
    assert config.optim.lr_g == pytest.approx(3e-5)
    assert config.data.load_size == [32, 64]
    assert config.ema is None and config.data.flip is False
    assert config.model.conv == "standard"
    assert config.data.root == "/some/where" and config.loss.vgg_weights == "vgg.pth"


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("model.ngff=8", r"unknown config key 'model.ngff'.*valid keys: .*model\.ngf"),
        ("max_steps", "must look like key=value"),
        ("max_steps=ten", "max_steps must be int"),
        ("model.conv=partial", "model.conv must be one of panoptic, standard"),
        ("data.load_size=[64]", r"data.load_size must be \[H, W\]"),
        ("batch_size=0", "batch_size must be a positive integer"),
        ("ema=1.5", "ema must be a decay"),
        ("optim.decay_start_epoch=5000", "decay_start_epoch must be in"),
        ("precision=fp8", "precision must be one of"),
    ],
)
def test_bad_overrides_are_rejected(override, match):
    with pytest.raises(ValueError, match=match):
        load_config("demo", [override])


def test_unknown_key_in_file_and_unknown_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"model": {"ngf": 8, "colour": "red"}}))
    with pytest.raises(ValueError, match="unknown config key 'model.colour'"):
        load_config(path)
    with pytest.raises(ValueError, match="unknown config 'nope'.*presets"):
        load_config("nope")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_file_config_round_trips_through_yaml(tmp_path):
    config = load_config("cityscapes", ["model.ngf=32", "seed=5"])
    path = tmp_path / "resolved.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert load_config(path) == config
    assert config_from_dict({}) == TrainConfig()


def test_parse_override_and_valid_keys():
    assert parse_override("data.root=null") == ("data.root", None)
    assert parse_override("optim.epochs=3") == ("optim.epochs", 3)
    keys = valid_keys()
    assert "model.num_upsampling_layers" in keys and "loss.vgg_weights" in keys and "seed" in keys
    assert set(RESUME_HARMLESS_KEYS) <= set(keys)


def test_config_differences_ignore_harmless_keys():
    a = load_config("demo").to_dict()
    b = load_config("demo", ["max_steps=99", "log_every=3", "data.num_workers=2"]).to_dict()
    assert config_differences(a, b) == []
    c = load_config("demo", ["max_steps=99", "model.ngf=32", "optim.lr_d=1e-3"]).to_dict()
    assert config_differences(a, c) == ["model.ngf", "optim.lr_d"]


def test_lr_schedule_is_constant_then_linear_to_zero():
    # Cityscapes: 200 epochs, decay after 100 -> epoch 150 is half way, epoch 199 is 1/100.
    assert [lr_factor(e, 200, 100) for e in (0, 99, 100, 150, 199)] == pytest.approx([1, 1, 1, 0.5, 0.01])
    assert lr_factor(80, 100, None) == 1.0


def test_ema_decay_warms_up():
    assert ema_decay(0.999, 0) == pytest.approx(0.1)
    assert ema_decay(0.999, 90) == pytest.approx(0.91)
    assert ema_decay(0.999, 10**6) == 0.999


def test_shipped_yaml_files_have_only_known_keys():
    import pansynth

    directory = Path(pansynth.__file__).parent / "configs"
    for path in directory.glob("*.yaml"):
        load_config(path)  # raises on unknown keys or bad values


def test_the_config_exposes_every_constructor_argument_under_its_own_name():
    import dataclasses
    import inspect

    from pansynth.models import Generator, MultiscaleDiscriminator
    from pansynth.train.config import DiscriminatorConfig, ModelConfig

    from_data = {"self", "num_classes", "size", "ignore_index"}  # the dataset decides these
    generator_args = set(inspect.signature(Generator.__init__).parameters) - from_data
    assert {f.name for f in dataclasses.fields(ModelConfig)} == generator_args
    discriminator_args = set(inspect.signature(MultiscaleDiscriminator.__init__).parameters) - from_data
    assert {f.name for f in dataclasses.fields(DiscriminatorConfig)} == discriminator_args


def test_paper_presets_use_spade_init_raw_vgg_input_and_no_boundary_map():
    for name in ("cityscapes", "coco-stuff", "coco-panoptic", "demo"):
        config = load_config(name)
        assert config.model.init == config.discriminator.init == "spade", name
        assert config.loss.vgg_input == "raw", name
        assert config.model.boundary is False and config.discriminator.boundary is True, name


def test_spade_names_are_aliases(tmp_path):
    config = load_config("demo", ["model.num_D=3", "model.n_layers_D=2", "model.ndf=8"])
    assert (config.discriminator.num_scales, config.discriminator.num_layers, config.discriminator.ndf) == (3, 2, 8)
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"model": {"ngf": 8, "ndf": 16, "num_D": 1}}))
    config = load_config(path)
    assert (config.model.ngf, config.discriminator.ndf, config.discriminator.num_scales) == (8, 16, 1)
    path.write_text(yaml.safe_dump({"model": {"num_D": 1}, "discriminator": {"num_scales": 2}}))
    with pytest.raises(ValueError, match="model.num_D and discriminator.num_scales are the same setting"):
        load_config(path)
