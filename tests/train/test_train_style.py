"""Training with per-segment styles: E trains under G's optimiser, is checkpointed and exported, the KL term is
logged, and an interrupted run resumes bit-identically."""

from __future__ import annotations

import json

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pansynth.models import Generator
from pansynth.train.checkpoint import load_generator_from_checkpoint, load_latest_checkpoint
from pansynth.train.loop import train


def test_style_run_trains_the_encoder_logs_kl_exports_and_resumes_exactly(tmp_path, scenes, make_config, same_state):
    def config(steps: int):
        return make_config(
            max_steps=steps, checkpoint_every=1, model__style="instance", model__style_dim=3, loss__lambda_kld=0.05
        )

    train(config(2), tmp_path / "straight", dataset=scenes)
    train(config(1), tmp_path / "resumed", dataset=scenes)
    train(config(2), tmp_path / "resumed", dataset=scenes)
    straight, path = load_latest_checkpoint(tmp_path / "straight" / "checkpoints")
    resumed, _ = load_latest_checkpoint(tmp_path / "resumed" / "checkpoints")
    same_state(straight, resumed)

    # E is part of G: in its state, its optimiser (every parameter got a gradient) and its export.
    encoder_keys = [key for key in straight["G"] if key.startswith("style_encoder.")]
    assert encoder_keys and any(key.startswith("first_layer_style.") for key in straight["G"])
    generator = load_generator_from_checkpoint(path)
    assert len(straight["opt_G"]["state"]) == len(list(generator.parameters()))
    assert all(float(slots["exp_avg"].abs().sum()) > 0 for slots in straight["opt_G"]["state"].values())
    exported = Generator.from_pretrained(tmp_path / "straight" / "export")
    assert exported.config["style"] == "instance" and exported.config["style_dim"] == 3
    for key in encoder_keys:
        torch.testing.assert_close(exported.state_dict()[key], straight["G_ema"][key], rtol=0, atol=0)
    sample = scenes[0]
    semantic, panoptic = sample["semantic"][None], sample["panoptic"][None]
    with torch.no_grad():
        torch.testing.assert_close(exported(semantic, panoptic), generator(semantic, panoptic), rtol=0, atol=0)

    # The KL term is in the total, in metrics.jsonl and in TensorBoard.
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(r["G_kld"] > 0 for r in records)
    events = EventAccumulator(str(tmp_path / "straight" / "tb"))
    events.Reload()
    assert len(events.Scalars("loss/G_kld")) == 2
