"""Every weights loader (VGG19, Inception for FID, segmentation, detection, checkpoints) reads through
pansynth.weights: a bad file is one line naming it and what it is, and never advises unsafe loading."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from pansynth.eval.detection import load_detector
from pansynth.eval.fid import load_inception
from pansynth.eval.segmentation import load_segmentation_model
from pansynth.models.vgg import load_vgg19_features
from pansynth.train.checkpoint import CheckpointError, load_checkpoint
from pansynth.weights import WeightsError, read_state_dict


class Payload:
    """Unpickling this would run a shell command."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"echo owned > {self.target}",))


def _write(kind: str, path, owned):
    if kind == "random bytes":
        path.write_bytes(bytes(range(256))[::-1] * 16)
    elif kind == "truncated":
        torch.save({"a": torch.zeros(100)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "object":
        torch.save({"weight": torch.zeros(2), "payload": Payload(owned)}, path)
    elif kind == "plain pickle":
        path.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
    elif kind == "not a state dict":
        torch.save([torch.zeros(2)], path)
    return path


# What the message says about each kind of file.
EXPECTED = {
    "random bytes": "(corrupt data)",
    "truncated": "(truncated or corrupt file: ",
    "object": "holds Python objects (posix.system) besides tensors",
    "plain pickle": "is a plain Python pickle, not a",
    "not a state dict": "holds a list, not a",
}

LOADERS = {
    "vgg": (lambda path: load_vgg19_features(path), "VGG19 weights file"),
    "inception": (lambda path: load_inception(path), "Inception weights file"),
    "segmentation": (
        lambda path: load_segmentation_model(seg_arch="lraspp_mobilenet_v3_large", seg_weights=path, num_classes=3),
        "segmentation weights file",
    ),
    "detection": (lambda path: load_detector(path), "detector weights file"),
}


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("kind", list(EXPECTED))
def test_a_bad_weights_file_is_one_line_naming_it_and_what_it_is(tmp_path, loader, kind):
    load, what = LOADERS[loader]
    owned = tmp_path / "owned"
    path = _write(kind, tmp_path / "weights.pth", owned)
    with pytest.raises(ValueError) as error:
        load(path)
    message = str(error.value)
    assert message.startswith(f"{path} ") and what in message and EXPECTED[kind] in message, message
    assert "\n" not in message and "weights_only" not in message and "weights only" not in message.lower()
    assert not owned.exists()


@pytest.mark.parametrize("kind", ["random bytes", "truncated", "object", "plain pickle"])
def test_a_checkpoint_says_the_same_and_random_bytes_are_corrupt_not_code(tmp_path, kind):
    path = _write(kind, tmp_path / "step_00000001.pt", tmp_path / "owned")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f"{path} ") and EXPECTED[kind] in message and "\n" not in message
    if kind != "object":
        assert "Python objects" not in message  # corrupt is not "could run code"


def test_safetensors_and_unwrapped_state_dicts(tmp_path):
    from safetensors.torch import save_file

    good = {"a": torch.arange(3.0)}
    save_file(good, tmp_path / "w.safetensors")
    assert torch.equal(read_state_dict(tmp_path / "w.safetensors", "x")["a"], good["a"])
    (tmp_path / "bad.safetensors").write_bytes(b"\x10" * 64)
    with pytest.raises(WeightsError, match=r"bad.safetensors is not a readable safetensors x \(") as error:
        read_state_dict(tmp_path / "bad.safetensors", "x")
    assert "\n" not in str(error.value)
    torch.save({"model": good, "epoch": 3}, tmp_path / "trained.pth")
    assert list(read_state_dict(tmp_path / "trained.pth", "x", unwrap=("model",))) == ["a"]
    with pytest.raises(WeightsError, match=r"entry 'model' is a dict, expected a state dict"):
        read_state_dict(tmp_path / "trained.pth", "x")


def test_train_with_a_bad_vgg_file_is_one_line_and_writes_nothing(tmp_path, capsys):
    from pansynth.cli import main
    from pansynth.data import write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "data", 2, 64, seed=0, val_fraction=0)
    vgg = _write("object", tmp_path / "vgg19.pth", tmp_path / "owned")
    run = tmp_path / "run"
    argv = ["train", "--config", "demo", "--out", str(run), f"data.root={root}", "batch_size=1", "model.ngf=4"]
    capsys.readouterr()
    assert main([*argv, "loss.lambda_vgg=10", f"loss.vgg_weights={vgg}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(vgg) in err and "holds Python objects" in err and "weights_only" not in err
    assert not run.exists() and not (tmp_path / "owned").exists()
