"""Exact resume, interrupted saves, refusal to mix runs, and NaN losses."""

from __future__ import annotations

import pytest
import torch
import yaml

from pansynth.train.checkpoint import list_checkpoints, load_checkpoint, load_latest_checkpoint
from pansynth.train.loop import TrainingDiverged, train


def test_interrupted_then_resumed_run_matches_an_uninterrupted_one(tmp_path, scenes, make_config, capsys, same_state):
    # 5 scenes, batch 2 -> 2 steps per epoch: the interruption at step 3 falls inside epoch 1,
    # and the linear decay starting at epoch 1 makes the schedulers' state matter.
    def config(steps: int):
        return make_config(max_steps=steps, checkpoint_every=3, optim__epochs=4, optim__decay_start_epoch=1)

    train(config(6), tmp_path / "straight", dataset=scenes)
    train(config(3), tmp_path / "resumed", dataset=scenes)
    first, _ = load_latest_checkpoint(tmp_path / "resumed" / "checkpoints")
    assert (first["step"], first["epoch"], first["batch_in_epoch"]) == (3, 1, 1)
    capsys.readouterr()
    train(config(6), tmp_path / "resumed", dataset=scenes)  # same command with a larger max_steps
    assert "resuming from step 3" in capsys.readouterr().out

    straight, _ = load_latest_checkpoint(tmp_path / "straight" / "checkpoints")
    resumed, _ = load_latest_checkpoint(tmp_path / "resumed" / "checkpoints")
    assert straight["step"] == resumed["step"] == 6
    assert straight["opt_G"]["param_groups"][0]["lr"] < 1e-4  # decaying
    same_state(straight, resumed)
    # metrics.jsonl has every step once.
    steps = [yaml.safe_load(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    # The stored config now records the new max_steps.
    assert yaml.safe_load((tmp_path / "resumed" / "config.yaml").read_text())["max_steps"] == 6


def test_interrupted_save_leaves_the_previous_checkpoint_in_use(tmp_path, scenes, make_config, capsys):
    run = tmp_path / "run"
    train(make_config(max_steps=4, checkpoint_every=2), run, dataset=scenes)
    directory = run / "checkpoints"
    assert [s for s, _ in list_checkpoints(directory)] == [2, 4]
    # Simulate a save killed half-way: a truncated newest file and a stray temporary file.
    newest = directory / "step_00000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    (directory / "step_00000006.pt.tmp").write_bytes(b"partial")
    reference = load_checkpoint(directory / "step_00000002.pt")
    assert reference["opt_G"]["state"][0]["step"] == 2
    capsys.readouterr()

    train(make_config(max_steps=4, checkpoint_every=2), run, dataset=scenes)
    captured = capsys.readouterr()
    assert "step_00000004.pt is unreadable" in captured.err
    assert "resuming from step 2" in captured.out
    assert not (directory / "step_00000006.pt.tmp").exists()
    assert (directory / "step_00000004.pt.corrupt").is_file()  # kept aside, never deleted
    state = load_checkpoint(directory / "step_00000004.pt")  # rewritten by the resumed run
    assert state["step"] == 4
    # Steps 3-4 of the first attempt were logged again, not twice.
    steps = [yaml.safe_load(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    # The resumed run went on from step 2's weights and optimizer state, not from scratch.
    assert reference["step"] == 2 and state["opt_G"]["state"][0]["step"] == 4


def test_a_run_with_another_config_is_refused(tmp_path, scenes, make_config):
    run = tmp_path / "run"
    train(make_config(max_steps=1), run, dataset=scenes)
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(ValueError, match=r"different configuration \(model.ngf: 4 -> 8\)"):
        train(make_config(max_steps=2, model__ngf=8), run, dataset=scenes)
    assert sorted(p.name for p in run.rglob("*")) == before


def test_a_foreign_directory_is_refused(tmp_path, scenes, make_config):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="not a pansynth run directory"):
        train(make_config(), folder, dataset=scenes)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


class _PoisonedScenes(torch.utils.data.Dataset):
    """The scenes with NaN images: every loss that sees the real image becomes NaN."""

    def __init__(self, scenes):
        self.scenes = scenes
        self.num_classes, self.ignore_index = scenes.num_classes, scenes.ignore_index

    def __len__(self):
        return len(self.scenes)

    def __getitem__(self, index):
        sample = dict(self.scenes[index])
        sample["image"] = torch.full_like(sample["image"], float("nan"))
        return sample


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, scenes, make_config, same_state):
    run = tmp_path / "run"
    train(make_config(max_steps=2, checkpoint_every=2), run, dataset=scenes)
    good = load_checkpoint(run / "checkpoints" / "step_00000002.pt")
    with pytest.raises(TrainingDiverged, match=r"loss G_feat is nan at step 3.*step_00000002\.pt"):
        train(make_config(max_steps=4, checkpoint_every=1), run, dataset=_PoisonedScenes(scenes))
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [2]
    same_state(load_latest_checkpoint(run / "checkpoints")[0], good)
