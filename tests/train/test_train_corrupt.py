"""The label-map augmentation of data.corrupt: used by the loader, off by default, exact resume kept."""

from __future__ import annotations

import pytest

from pansynth.data.corrupt import CorruptAugment
from pansynth.train.checkpoint import load_latest_checkpoint
from pansynth.train.config import load_config
from pansynth.train.loop import train


def test_presets_keep_the_paper_recipe():
    for preset in ("demo", "cityscapes", "coco-stuff", "coco-panoptic"):
        corrupt = load_config(preset).data.corrupt
        assert corrupt.warp_prob == 0 and corrupt.unknown_prob == 0
    with pytest.raises(ValueError, match=r"data.corrupt.warp_prob must be a probability in \[0, 1\], got 1.5"):
        load_config("demo", ["data.corrupt.warp_prob=1.5"])


def test_resume_with_the_augmentation_is_exact(tmp_path, scenes, make_config, same_state, monkeypatch):
    seen = []
    call = CorruptAugment.__call__

    def recording(self, sample):
        out = call(self, sample)
        seen.append(bool((out["semantic"] == -1).any()) and bool((out["panoptic"] == -1).any()))
        return out

    monkeypatch.setattr(CorruptAugment, "__call__", recording)

    def config(steps: int):
        return make_config(max_steps=steps, checkpoint_every=3, data__corrupt={"warp_prob": 0.5, "unknown_prob": 1.0})

    # 5 scenes, batch 2: 2 steps per epoch, so the interruption at step 3 falls inside an epoch.
    train(config(4), tmp_path / "straight", dataset=scenes)
    assert len(seen) == 4 * 2 and all(seen)  # every sample of every batch got unknown regions
    train(config(3), tmp_path / "resumed", dataset=scenes)
    train(config(4), tmp_path / "resumed", dataset=scenes)
    straight, _ = load_latest_checkpoint(tmp_path / "straight" / "checkpoints")
    resumed, _ = load_latest_checkpoint(tmp_path / "resumed" / "checkpoints")
    same_state(straight, resumed)
    assert straight["config"]["data"]["corrupt"]["unknown_prob"] == 1.0
