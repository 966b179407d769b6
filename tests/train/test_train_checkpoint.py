"""Atomic checkpoint files: rotation, weights_only loading, fallback past corrupt files, RNG states."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pansynth.files import remove_temporaries
from pansynth.train import checkpoint as ckpt


def _state(step: int) -> dict:
    return {"step": step, "weights": {"w": torch.full((3,), float(step))}, "config": {"a": [1, 2], "b": None}}


def test_save_load_round_trip_and_rotation(tmp_path):
    for step in (10, 20, 30, 40):
        path = ckpt.save_checkpoint(_state(step), tmp_path, step, keep=2)
        assert path.name == f"step_{step:08d}.pt"
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [30, 40]
    assert not list(tmp_path.glob("*.tmp"))
    state, path = ckpt.load_latest_checkpoint(tmp_path)
    assert state["step"] == 40 and path.name == "step_00000040.pt"
    torch.testing.assert_close(state["weights"]["w"], torch.full((3,), 40.0))
    assert state["config"] == {"a": [1, 2], "b": None}


def test_weights_only_refuses_pickled_objects(tmp_path):
    import argparse

    path = tmp_path / "step_00000001.pt"
    torch.save({"step": 1, "obj": argparse.Namespace(x=1)}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        ckpt.load_checkpoint(path)


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_corrupt_newest_falls_back_to_previous(tmp_path, capsys, damage):
    ckpt.save_checkpoint(_state(5), tmp_path, 5)
    newest = ckpt.save_checkpoint(_state(6), tmp_path, 6)
    data = newest.read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"not a zip" * 10}[damage]
    newest.write_bytes(damaged)
    # A save killed before its rename also leaves a temporary file behind.
    (tmp_path / "step_00000007.pt.tmp").write_bytes(data[:100])
    state, path = ckpt.load_latest_checkpoint(tmp_path, quarantine=True)
    assert state["step"] == 5 and path.name == "step_00000005.pt"
    assert "step_00000006.pt is unreadable" in capsys.readouterr().err
    # The unreadable file is kept (renamed), out of the rotation.
    assert (tmp_path / "step_00000006.pt.corrupt").read_bytes() == damaged
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [5]
    assert remove_temporaries(tmp_path, "step_*.pt.tmp") == [tmp_path / "step_00000007.pt.tmp"]


def test_no_checkpoint_gives_none(tmp_path):
    assert ckpt.load_latest_checkpoint(tmp_path / "missing") is None
    assert ckpt.load_latest_checkpoint(tmp_path) is None


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    ckpt.save_checkpoint({"step": 1, "rng": ckpt.rng_state()}, tmp_path, 1)
    expected = (random.random(), random.gauss(0, 1), np.random.standard_normal(3), torch.rand(4))
    random.seed(100)
    np.random.seed(100)
    torch.manual_seed(100)
    state, _ = ckpt.load_latest_checkpoint(tmp_path)
    ckpt.set_rng_state(state["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.standard_normal(3), torch.rand(4))
    assert got[0] == expected[0] and got[1] == expected[1]
    np.testing.assert_array_equal(got[2], expected[2])
    torch.testing.assert_close(got[3], expected[3], rtol=0, atol=0)
