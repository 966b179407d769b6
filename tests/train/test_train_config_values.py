"""Values a configuration refuses, with a one-line error naming the key, before anything is written:
non-finite numbers, NaN anywhere a range is checked, Adam decays outside [0, 1), invalid YAML."""

from __future__ import annotations

import dataclasses

import pytest

from pansynth.cli import main
from pansynth.eval.evaluate import eval_transform
from pansynth.train.config import TrainConfig, load_config, validate


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.lr_g=.inf", "optim.lr_g"),
        ("optim.lr_d=nan", "optim.lr_d"),  # a string YAML reads as text, converted to float
        ("loss.lambda_feat=.nan", "loss.lambda_feat"),
        ("loss.lambda_vgg=-.inf", "loss.lambda_vgg"),
        ("ema=.nan", "ema"),
        ("optim.beta1=5", "optim.beta1"),
        ("optim.beta2=-0.5", "optim.beta2"),
        ("optim.beta2=1", "optim.beta2"),
    ],
)
def test_bad_numbers_are_refused_naming_the_key(tmp_path, capsys, override, key):
    with pytest.raises(ValueError, match=rf"preset demo: {key} must be ") as error:
        load_config("demo", [override])
    assert "\n" not in str(error.value)
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "--config", "demo", "--out", str(run), f"data.root={tmp_path}", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err
    assert not run.exists()


@pytest.mark.parametrize(
    "key", ["optim.lr_g", "optim.lr_d", "loss.lambda_feat", "loss.lambda_vgg", "ema", "optim.beta1", "optim.beta2"]
)
def test_validation_refuses_nan_set_after_reading(key):
    """A NaN that reaches ``validate`` (a config built in Python) fails the range check: no comparison that
    NaN passes (``nan <= 0`` is False)."""
    config = TrainConfig()
    section, _, name = key.rpartition(".")
    target = getattr(config, section) if section else config
    setattr(target, name, float("nan"))
    with pytest.raises(ValueError, match=rf"{key} must be"):
        validate(config)


@pytest.mark.parametrize("size", [[float("nan"), 64], [64, float("nan")]])
def test_sizes_refuse_nan_too(size):
    config = TrainConfig()
    config.data = dataclasses.replace(config.data, crop_size=size)
    with pytest.raises(ValueError, match="data.crop_size must be"):
        validate(config)


def test_invalid_yaml_is_one_line_naming_file_and_place(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("batch_size: 2\noptim: {lr_g: 1e-4\nseed: 1\n")
    with pytest.raises(ValueError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: not valid YAML (") and "\n" not in message and "line 3" in message
    capsys.readouterr()
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(ValueError, match=r"override 'seed=\[1': value is not valid YAML \([^\n]*\)$"):
        load_config("demo", ["seed=[1"])


def test_an_unreadable_stored_configuration_is_one_line(tmp_path, make_config):
    from pansynth.train.run_dir import RunDirectory

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: [ngf: 4\n")
    with pytest.raises(ValueError, match="is not a readable run configuration") as error:
        RunDirectory(run).inspect(make_config())
    assert "\n" not in str(error.value) and "at line 2, column 1" in str(error.value)
    # evaluate reads the run's training size from the same file
    with pytest.raises(ValueError, match="is not a readable run configuration") as error:
        eval_transform("folder", run)
    assert "\n" not in str(error.value)
