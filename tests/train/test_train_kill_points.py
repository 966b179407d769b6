"""A trainer killed with SIGKILL at the worst moments: the run directory never gets stuck and never
keeps the killed attempt's logs twice (see the table "What a run directory guarantees" in docs/train.md).

Each test trains in a subprocess that kills itself (SIGKILL: no handler, no clean-up)
at one exact point, then runs the same command again in this process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from pansynth.data import write_synthetic_dataset
from pansynth.run_files import list_checkpoints
from pansynth.train import load_config, train

# Trains with one kill point armed. The points are reached through the functions every save uses.
KILLED_TRAINER = textwrap.dedent(
    """
    import os, signal, sys
    import pansynth.train.checkpoint as checkpoint
    import pansynth.train.run_dir as run_dir
    from pansynth.train import load_config, train

    point, config, out = sys.argv[1:4]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "first-config-write":  # the temporary of config.yaml is written, not yet renamed
        real_replace = os.replace

        def replace(source, target, *args, **kwargs):
            if os.path.basename(target) == "config.yaml":
                die()
            return real_replace(source, target, *args, **kwargs)

        os.replace = replace
    elif point == "after-logging-step-3":  # before any checkpoint
        real_append = run_dir.RunDirectory.append_metrics

        def append_metrics(self, record):
            real_append(self, record)
            if record["step"] == 3:
                die()

        run_dir.RunDirectory.append_metrics = append_metrics
    elif point == "between-checkpoint-3-and-rotation":
        real_write = checkpoint.atomic_write

        def atomic_write(path, write):
            result = real_write(path, write)
            if os.path.basename(path) == "step_00000003.pt":
                die()
            return result

        checkpoint.atomic_write = atomic_write
    train(load_config(config), out)
    """
)


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "scenes", 4, 64, seed=5, val_fraction=0)


def _write_config(tmp_path: Path, make_config_dict, folder_data: Path, **top) -> Path:
    values = make_config_dict(**top)
    values["data"] = {"dataset": "folder", "root": str(folder_data), "split": "train", "flip": True}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _kill_at(point: str, config: Path, run: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    script = [sys.executable, "-c", KILLED_TRAINER, point, str(config), str(run)]
    process = subprocess.run(script, capture_output=True, text=True, env=env, timeout=300)
    assert process.returncode == -signal.SIGKILL, process.stderr


def _metric_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _tensorboard_steps(run: Path, tag: str) -> list[int]:
    """The steps of ``tag`` that TensorBoard shows: every event file in order, honouring purge markers."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps: list[int] = []
    # One file per attempt, each closed (or killed) before the next attempt starts: in the order last written.
    for path in sorted((run / "tb").iterdir(), key=lambda p: p.stat().st_mtime_ns):
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                steps = [step for step in steps if step < event.step]  # a restart at this step
            for value in event.summary.value:
                if value.tag == tag:
                    steps.append(event.step)
    return steps


def test_a_kill_during_the_first_config_write_does_not_block_the_directory(tmp_path, make_config_dict, folder_data):
    config = _write_config(tmp_path, make_config_dict, folder_data, max_steps=1)
    run = tmp_path / "run"
    _kill_at("first-config-write", config, run)
    left = sorted(p.name for p in run.iterdir())
    assert left[0] == ".config.yaml" or (left[0].startswith(".config.yaml.") and left[0].endswith(".tmp"))
    assert left[1:] == [".lock"]
    train(load_config(config), run)
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [1]
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    # A folder of the user's is still refused, whatever pansynth's leftovers beside it.
    other = tmp_path / "other"
    other.mkdir()
    for name in (".lock", ".config.yaml.x.tmp", "notes.txt"):
        (other / name).write_text("x")
    with pytest.raises(ValueError, match="not empty and holds no config.yaml"):
        train(load_config(config), other)
    assert sorted(p.name for p in other.iterdir()) == [".config.yaml.x.tmp", ".lock", "notes.txt"]


def test_a_kill_before_the_first_checkpoint_leaves_no_duplicate_log_lines(tmp_path, make_config_dict, folder_data):
    config = _write_config(tmp_path, make_config_dict, folder_data, max_steps=100, checkpoint_every=1000)
    run = tmp_path / "run"
    _kill_at("after-logging-step-3", config, run)
    assert _metric_steps(run) == [1, 2, 3] and not (run / "checkpoints").exists()
    train(load_config(config, ["max_steps=4"]), run)
    assert _metric_steps(run) == [1, 2, 3, 4]
    assert _tensorboard_steps(run, "loss/G_total") == [1, 2, 3, 4]


def test_a_kill_before_rotation_is_rotated_on_resume_even_with_nothing_to_do(tmp_path, make_config_dict, folder_data):
    config = _write_config(tmp_path, make_config_dict, folder_data, max_steps=3, checkpoint_every=1, keep_checkpoints=2)
    run = tmp_path / "run"
    _kill_at("between-checkpoint-3-and-rotation", config, run)
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [1, 2, 3]
    train(load_config(config), run)  # at step 3 of 3: nothing to train
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [2, 3]


def test_identical_runs_write_identical_samples(tmp_path, make_config_dict, folder_data):
    """The fixed sample rows go through random flips: they are drawn after the seed is set."""
    config = load_config(_write_config(tmp_path, make_config_dict, folder_data, max_steps=1, sample_every=1))
    grids = []
    for attempt, seed in enumerate((1, 2)):
        torch.manual_seed(seed)  # whatever the process did before does not matter
        train(config, tmp_path / f"run{attempt}")
        grids.append((tmp_path / f"run{attempt}" / "samples" / "step_00000001.png").read_bytes())
    assert grids[0] == grids[1]


def test_a_second_ctrl_c_before_the_first_checkpoint_leaves_no_duplicate_log_lines(tmp_path, scenes, make_config):
    from test_train_run_dir import _SignalAt

    stopper = _SignalAt(scenes, 1 + 4 + 2 * 3 + 1, (signal.SIGINT, signal.SIGINT))  # during step 4
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(make_config(max_steps=6, checkpoint_every=100), run, dataset=stopper)
    assert _metric_steps(run) == [1, 2, 3] and not list_checkpoints(run / "checkpoints")
    train(make_config(max_steps=5, checkpoint_every=100), run, dataset=scenes)
    assert _metric_steps(run) == [1, 2, 3, 4, 5]
    assert _tensorboard_steps(run, "loss/G_total") == [1, 2, 3, 4, 5]
