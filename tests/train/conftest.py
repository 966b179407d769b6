"""Shared helpers of the training tests: a tiny configuration and an in-memory scene dataset."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pansynth.train.config import TrainConfig, config_from_dict


def tiny_config_dict(**top: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "model": {"ngf": 4, "ndf": 8, "norm": "instance", "num_D": 1, "n_layers_D": 2},
        "loss": {"lambda_vgg": 0.0, "lambda_feat": 10.0},
        "optim": {"epochs": 100},
        "batch_size": 2,
        "max_steps": 2,
        "log_every": 1,
        "sample_every": 1000,
        "checkpoint_every": 2,
        "keep_checkpoints": 5,
        "ema": 0.9,
        "device": "cpu",
    }
    for key, value in top.items():
        section, _, name = key.partition("__")
        if name:
            values.setdefault(section, {})[name] = value
        else:
            values[key] = value
    return values


def tiny_config(**top: Any) -> TrainConfig:
    """A small CPU configuration; ``model__conv="standard"`` style keys set section values."""
    return config_from_dict(tiny_config_dict(**top))


@pytest.fixture(autouse=True)
def _one_thread():
    # The machine is shared: keep every test on one core, and results deterministic.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def scenes():
    """Five 64x64 procedural scenes (in memory) with random flips."""
    from pansynth.data.synthetic import SyntheticScenes
    from pansynth.data.transforms import PairedTransform

    return SyntheticScenes(5, 64, seed=3, transform=PairedTransform(flip=True))


@pytest.fixture
def make_config():
    """``make_config(max_steps=4, model__conv="standard")`` -> TrainConfig."""
    return tiny_config


@pytest.fixture
def make_config_dict():
    return tiny_config_dict


def assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"] and a["batch_in_epoch"] == b["batch_in_epoch"]
    for key in ("G", "D", "G_ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], rtol=0, atol=0, msg=f"{key}.{name}")
    for key in ("opt_G", "opt_D"):
        assert a[key]["param_groups"] == b[key]["param_groups"]
        for index, slots in a[key]["state"].items():
            for slot, value in slots.items():
                torch.testing.assert_close(value, b[key]["state"][index][slot], rtol=0, atol=0)
    assert a["sched_G"] == b["sched_G"] and a["sched_D"] == b["sched_D"]
    torch.testing.assert_close(a["rng"][0]["torch"], b["rng"][0]["torch"], rtol=0, atol=0)


@pytest.fixture
def same_state():
    """``same_state(a, b)`` asserts that two checkpoints hold bit-identical training states."""
    return assert_same_state
