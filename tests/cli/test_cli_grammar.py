"""One grammar across sub-commands: descriptions, --device, --dataset, --split and overrides."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from pansynth.choices import DATASET_NAMES
from pansynth.cli import main
from pansynth.cli.main import build_parser


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(name, parser) of every command and sub-command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _commands(sub, (*prefix, name))


def _option(parser: argparse.ArgumentParser, flag: str):
    return next((a for a in parser._actions if flag in a.option_strings), None)


def test_every_command_has_a_description_and_the_same_option_grammar():
    commands = dict(_commands(build_parser()))
    assert {
        ("train",),
        ("synthesize",),
        ("evaluate",),
        ("fid-stats",),
        ("analyze", "upsampling"),
        ("report",),
        ("demo",),
        ("ablate",),
        ("data", "synthetic"),
        ("data", "stats"),
        ("data", "check"),
    } <= set(commands)
    for name, parser in commands.items():
        assert parser.description, f"`pansynth {' '.join(name)}` has no description"
        device = _option(parser, "--device")
        if device is not None:
            assert device.default == "auto", name
        dataset = _option(parser, "--dataset")
        if dataset is not None:
            assert tuple(dataset.choices) == DATASET_NAMES, name
        split = _option(parser, "--split")
        if split is not None:
            assert "default" in split.help, name
            # The dataset's own default everywhere; ablate's is its held-out evaluation split, val.
            assert split.default == ("val" if name == ("ablate",) else None), name
    for name in (("train",), ("ablate",)):
        assert _option(commands[name], "--set") is not None  # --set KEY=VALUE and bare KEY=VALUE alike


def test_unknown_device_is_one_line(capsys):
    with pytest.raises(SystemExit):
        main(["synthesize", "--checkpoint", "x", "--out", "y", "--device", "gpu0"])
    assert "--device must be auto, cpu, cuda or cuda:N" in capsys.readouterr().err


def test_set_and_bare_overrides_are_the_same(tmp_path, make_config_dict_for_cli):
    data, config_path = make_config_dict_for_cli(tmp_path)
    assert (
        main(
            [
                "train",
                "--config",
                str(config_path),
                "--out",
                str(tmp_path / "a"),
                "--set",
                f"data.root={data}",
                "--set",
                "max_steps=1",
            ]
        )
        == 0
    )
    assert (
        main(["train", "--config", str(config_path), "--out", str(tmp_path / "b"), f"data.root={data}", "max_steps=1"])
        == 0
    )
    assert (tmp_path / "a" / "config.yaml").read_text() == (tmp_path / "b" / "config.yaml").read_text()


@pytest.fixture
def make_config_dict_for_cli():
    import yaml

    from pansynth.data.synthetic import write_synthetic_dataset

    def make(tmp_path):
        data = write_synthetic_dataset(tmp_path / "data", 4, 64, seed=0, val_fraction=0.25)
        values = {
            "data": {"dataset": "folder", "split": "train"},
            "model": {"ngf": 4, "norm": "instance"},
            "discriminator": {"ndf": 8, "num_scales": 1, "num_layers": 2},
            "loss": {"lambda_vgg": 0.0},
            "batch_size": 2,
            "device": "cpu",
        }
        path = tmp_path / "tiny.yaml"
        path.write_text(yaml.safe_dump(values))
        return data, path

    return make


def test_analyze_upsampling_reads_a_train_only_folder_without_split(tmp_path, capsys):
    from pansynth.data.synthetic import write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "scenes", 3, 32, seed=0, val_fraction=0)
    assert not (root / "val").exists()
    assert (
        main(
            [
                "analyze",
                "upsampling",
                "--dataset",
                "folder",
                "--root",
                str(root),
                "--levels",
                "2",
                "--out",
                str(tmp_path / "analysis"),
            ]
        )
        == 0
    )
    assert "newly generated pixels" in capsys.readouterr().out


def test_data_stats_on_a_coco_folder_suggests_the_format(tmp_path, capsys):
    for kind in ("train_img", "train_label", "train_inst"):
        (tmp_path / "coco" / kind).mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "coco" / "train_img" / "a.jpg")
    assert main(["data", "stats", str(tmp_path / "coco")]) == 2
    assert "--dataset coco-stuff" in capsys.readouterr().err


def test_report_and_analyze_outputs_are_never_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "metrics.json").write_text(json.dumps({"metrics": {"FID": 1.0}, "skipped": {}}))
    assert main(["report", str(run)]) == 0
    first = (run / "report.html").read_text()
    (run / "eval" / "metrics.json").write_text(json.dumps({"metrics": {"FID": 2.0}, "skipped": {}}))
    assert main(["report", str(run)]) == 0
    assert (run / "report.html.bak").read_text() == first
