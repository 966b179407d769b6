"""Run directories that never get stuck and never lose work (checks before writing, one trainer per
run, moved datasets, exports that match their checkpoint, stop signals, checkpoint errors)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import yaml

from pansynth.data import write_synthetic_dataset
from pansynth.inference import load_generator
from pansynth.train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, load_latest_checkpoint
from pansynth.train.loop import TrainingInterrupted, train
from pansynth.train.run_dir import RunInUseError


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else None


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "scenes", 6, 64, seed=2, val_fraction=0.34)


def _folder_config(make_config, root, **top):
    return make_config(**{"data__dataset": "folder", "data__root": str(root), "data__split": "train", **top})


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"batch_size": 48}, "fewer than batch_size=48"),
        ({"data__load_size": [48, 48]}, r"multiples of 2\*\*5"),
        ({"data__split": "test"}, "split folder 'test' not found"),
        ({"loss__lambda_vgg": 10.0}, "loss.vgg_weights=PATH"),
    ],
)
def test_a_refused_command_leaves_the_run_directory_as_it_found_it(tmp_path, folder_data, make_config, bad, match):
    run = tmp_path / "run"
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        train(_folder_config(make_config, folder_data, max_steps=1, **bad), run)
    assert not run.exists()
    # The corrected command is not refused because of the failed one.
    train(_folder_config(make_config, folder_data, max_steps=1), run)
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [1]


def test_resume_compares_the_dataset_path_resolved_and_accepts_a_moved_dataset(
    tmp_path, folder_data, make_config, monkeypatch, capsys
):
    data = tmp_path / "data"
    shutil.copytree(folder_data, data)
    run = tmp_path / "run"
    train(_folder_config(make_config, data, max_steps=1), run)
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored["data"]["root"] == str(data.resolve())  # recorded resolved
    # The same folder named differently: with a trailing slash, relative to another working directory.
    monkeypatch.chdir(tmp_path)
    train(_folder_config(make_config, "data/", max_steps=2), run)
    monkeypatch.chdir(data)
    train(_folder_config(make_config, ".", max_steps=3), run)
    assert [s for s, _ in list_checkpoints(run / "checkpoints")][-1] == 3
    # Another existing folder is another dataset: refused, nothing written.
    other = tmp_path / "other"
    shutil.copytree(folder_data, other)
    before = _tree(run)
    with pytest.raises(ValueError, match="still exists"):
        train(_folder_config(make_config, other, max_steps=4), run)
    assert _tree(run) == before
    # The dataset moved: the run continues from the new place, with a warning.
    moved = tmp_path / "moved"
    data.rename(moved)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    train(_folder_config(make_config, moved, max_steps=4), run)
    captured = capsys.readouterr()
    assert "resuming from step 3" in captured.out and "the dataset moved" in captured.err
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["root"] == str(moved.resolve())


def test_only_training_keys_block_a_resume(tmp_path, scenes, make_config):
    run = tmp_path / "run"
    train(make_config(max_steps=1), run, dataset=scenes)
    # How long, how often, where, how many workers: not what is trained.
    train(make_config(max_steps=2, log_every=5, checkpoint_every=7, data__num_workers=0, data__skip_bad=True,
                      keep_checkpoints=4), run, dataset=scenes)  # fmt: skip
    with pytest.raises(ValueError, match=r"different configuration \(optim.lr_g: 0.0001 -> 0.0002\);"):
        train(make_config(max_steps=3, optim__lr_g=2e-4, log_every=3), run, dataset=scenes)


def test_the_export_is_renewed_when_older_than_the_newest_checkpoint(tmp_path, scenes, make_config, capsys):
    run = tmp_path / "run"
    train(make_config(max_steps=2, checkpoint_every=1), run, dataset=scenes)
    export = run / "export"
    assert json.loads((export / "config.json").read_text())["_step"] == 2
    # A kill right after step 2's checkpoint and before its export: the export holds step 1's generator,
    # and a kill during that export left a temporary file.
    step_1 = load_checkpoint(run / "checkpoints" / "step_00000001.pt")
    config = json.loads((export / "config.json").read_text())
    generator = load_generator(export)
    generator.load_state_dict(step_1["G_ema"])
    generator.save_pretrained(export, metadata={"step": 1})
    (export / ".model.safetensors.abc123.tmp").write_bytes(b"partial")
    assert load_generator(export).metadata["step"] == 1
    capsys.readouterr()
    load_generator(run)  # synthesize RUN would say that the export is stale
    assert "holds the generator of step 1 but the run has a checkpoint of step 2" in capsys.readouterr().err
    # "Nothing to do" still renews the export and clears the leftovers.
    train(make_config(max_steps=2, checkpoint_every=1), run, dataset=scenes)
    assert "nothing to do" in capsys.readouterr().out
    renewed = load_generator(export)
    assert renewed.metadata["step"] == 2 and json.loads((export / "config.json").read_text())["ngf"] == config["ngf"]
    final = load_checkpoint(run / "checkpoints" / "step_00000002.pt")
    for name, value in final["G_ema"].items():
        torch.testing.assert_close(renewed.state_dict()[name], value, rtol=0, atol=0)
    assert sorted(p.name for p in export.iterdir()) == ["config.json", "model.safetensors"]
    # A missing export is written again too.
    shutil.rmtree(export)
    train(make_config(max_steps=2, checkpoint_every=1), run, dataset=scenes)
    assert load_generator(run).metadata["step"] == 2


def test_written_files_follow_the_umask(tmp_path, scenes, make_config):
    previous = os.umask(0o027)
    try:
        train(make_config(max_steps=1), tmp_path / "run", dataset=scenes)
    finally:
        os.umask(previous)
    for path in [tmp_path / "run" / "export" / "model.safetensors", tmp_path / "run" / "config.yaml"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pansynth.train.run_dir import RunDirectory
    run = RunDirectory(sys.argv[1])
    run.lock()
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_a_second_trainer_on_the_same_directory_is_refused(tmp_path, scenes, make_config):
    run = tmp_path / "run"
    train(make_config(max_steps=1), run, dataset=scenes)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    holder = subprocess.Popen([sys.executable, str(script), str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError, match=rf"in use by another training process \(PID {holder.pid} on "
                                                rf"{socket.gethostname()}\)"):  # fmt: skip
            train(make_config(max_steps=3), run, dataset=scenes)
        # Nothing of the running trainer's was touched: no duplicated metrics, no new checkpoint.
        after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
        assert after == before
    finally:
        holder.kill()
        holder.wait()
    # The holder died: its lock went with it, and the run resumes.
    train(make_config(max_steps=2), run, dataset=scenes)
    assert [s for s, _ in list_checkpoints(run / "checkpoints")][-1] == 2


class _SignalAt(torch.utils.data.Dataset):
    """The scenes; the k-th sample read sends ``signals`` to this process (mid-step, like a real signal)."""

    def __init__(self, scenes, at: int, signals: tuple[int, ...]):
        self.scenes, self.at, self.signals, self.reads = scenes, at, signals, 0
        self.num_classes, self.ignore_index = scenes.num_classes, scenes.ignore_index

    def __len__(self):
        return len(self.scenes)

    def __getitem__(self, index):
        self.reads += 1
        if self.reads == self.at:
            for number in self.signals:
                os.kill(os.getpid(), number)
        return self.scenes[index]


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT", "SIGUSR1"])
def test_a_stop_signal_saves_the_current_step_and_resume_is_exact(
    tmp_path, scenes, make_config, signal_name, same_state
):
    def config(steps):
        return make_config(max_steps=steps, checkpoint_every=100, optim__epochs=4, optim__decay_start_epoch=1)

    train(config(6), tmp_path / "straight", dataset=scenes)
    # One read for the image size and four for the sample grid come first; batch 2: read 11 is in step 3.
    stopper = _SignalAt(scenes, 1 + 4 + 2 * 2 + 2, (getattr(signal, signal_name),))
    with pytest.raises(TrainingInterrupted, match=rf"stopped by {signal_name} at step 3; checkpoint .*step_00000003"):
        train(config(6), tmp_path / "resumed", dataset=stopper)
    assert [s for s, _ in list_checkpoints(tmp_path / "resumed" / "checkpoints")] == [3]
    assert load_generator(tmp_path / "resumed").metadata["step"] == 3
    train(config(6), tmp_path / "resumed", dataset=scenes)
    straight, _ = load_latest_checkpoint(tmp_path / "straight" / "checkpoints")
    resumed, _ = load_latest_checkpoint(tmp_path / "resumed" / "checkpoints")
    same_state(straight, resumed)


def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path, scenes, make_config):
    stopper = _SignalAt(scenes, 1 + 4 + 2 * 2 + 1, (signal.SIGINT, signal.SIGINT))  # during step 3
    with pytest.raises(KeyboardInterrupt):
        train(make_config(max_steps=6, checkpoint_every=2), tmp_path / "run", dataset=stopper)
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [2]
    # The run directory was released: the same command resumes.
    train(make_config(max_steps=3, checkpoint_every=2), tmp_path / "run", dataset=scenes)


def test_sigterm_on_the_command_line(tmp_path, folder_data, make_config_dict):
    config = make_config_dict(max_steps=100000, checkpoint_every=100000, log_every=1)
    config["data"] = {"dataset": "folder", "root": str(folder_data), "split": "train"}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "pansynth", "train", "--config", str(tmp_path / "tiny.yaml"), "--out", str(run)],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().count("\n") >= 2):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err
    step = list_checkpoints(run / "checkpoints")[-1][0]
    assert step >= 2 and f"stopped by SIGTERM at step {step}" in err
    assert load_generator(run).metadata["step"] == step


@pytest.mark.parametrize("kind", ["garbage", "truncated", "malicious"])
def test_checkpoint_errors_are_one_line_and_never_advise_unsafe_loading(tmp_path, scenes, make_config, capsys, kind):
    from pansynth.cli import main

    run = tmp_path / "run"
    train(make_config(max_steps=1), run, dataset=scenes)
    bad = tmp_path / "bad.pt"
    if kind == "garbage":
        bad.write_bytes(b"\x00not a checkpoint" * 50)
    elif kind == "truncated":
        bad.write_bytes((run / "checkpoints" / "step_00000001.pt").read_bytes()[:2000])
    else:

        class Payload:
            def __reduce__(self):
                return (os.system, ("echo owned > " + str(tmp_path / "owned"),))

        torch.save({"step": 1, "payload": Payload()}, bad)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(bad)
    message = str(error.value)
    assert message.startswith(str(bad)) and "\n" not in message and "weights_only" not in message
    capsys.readouterr()
    assert main(["synthesize", "--checkpoint", str(bad), "--input", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "weights_only" not in err
    assert not (tmp_path / "owned").exists()
