"""``channels_last``: G and D trained with NHWC weights, across resume, EMA, export and inference."""

from __future__ import annotations

import pytest
import torch

from pansynth.export.graph import graph_generator
from pansynth.inference import load_generator
from pansynth.models.spade import is_channels_last
from pansynth.train.checkpoint import list_checkpoints, load_generator_from_checkpoint, load_latest_checkpoint
from pansynth.train.config import load_config
from pansynth.train.loop import Trainer, train, use_channels_last


def test_the_key_is_true_false_or_null_for_cuda_only():
    assert load_config("demo").channels_last is None
    assert load_config("demo", ["channels_last=true"]).channels_last is True
    assert use_channels_last(None, torch.device("cuda")) and not use_channels_last(None, torch.device("cpu"))
    assert use_channels_last(True, torch.device("cpu")) and not use_channels_last(False, torch.device("cuda"))
    with pytest.raises(ValueError, match="channels_last must be bool, got 'auto'"):
        load_config("demo", ["channels_last=auto"])  # (null is auto)


def _conv_weights(state: dict) -> dict:
    # (a 1x1 kernel or a single input channel is also plainly contiguous in channels_last)
    return {name: t for name, t in state.items() if t.dim() == 4 and min(t.shape[1], t.shape[2] * t.shape[3]) > 1}


def test_a_channels_last_run_resumes_bit_identically_and_exports_plain_weights(
    tmp_path, scenes, make_config, same_state
):
    def config(steps: int, channels_last: bool | None = True):
        return make_config(max_steps=steps, checkpoint_every=2, channels_last=channels_last)

    train(config(4), tmp_path / "straight", dataset=scenes)
    train(config(2), tmp_path / "resumed", dataset=scenes)
    train(config(4), tmp_path / "resumed", dataset=scenes)
    straight, _ = load_latest_checkpoint(tmp_path / "straight" / "checkpoints")
    resumed, _ = load_latest_checkpoint(tmp_path / "resumed" / "checkpoints")
    assert straight["step"] == resumed["step"] == 4
    same_state(straight, resumed)
    # The networks (and so their checkpoints, the EMA copy and Adam's moments) hold NHWC weights.
    for key in ("G", "D", "G_ema"):
        weights = _conv_weights(straight[key])
        assert weights and all(is_channels_last(w) for w in weights.values()), key
    moments = _conv_weights({index: slots["exp_avg"] for index, slots in straight["opt_G"]["state"].items()})
    assert moments and all(is_channels_last(m) for m in moments.values())

    # The export (safetensors: contiguous tensors) and the checkpoint load into plain NCHW generators
    # that make the same images as the channels_last EMA generator.
    exported = load_generator(tmp_path / "resumed")
    assert all(w.is_contiguous() for w in exported.state_dict().values())
    for name, weight in exported.state_dict().items():
        torch.testing.assert_close(weight, straight["G_ema"][name], rtol=0, atol=0, msg=name)
    from_checkpoint = load_generator_from_checkpoint(list_checkpoints(tmp_path / "resumed" / "checkpoints")[-1][1])
    nhwc = load_generator_from_checkpoint(list_checkpoints(tmp_path / "straight" / "checkpoints")[-1][1])
    nhwc.to(memory_format=torch.channels_last)
    sample = scenes[0]
    semantic, panoptic = sample["semantic"][None], sample["panoptic"][None]
    with torch.no_grad():
        expected = nhwc(semantic, panoptic)
        torch.testing.assert_close(exported(semantic, panoptic), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(from_checkpoint(semantic, panoptic), expected, rtol=1e-5, atol=1e-5)
        # the graph engine's export rebuilds the generator from the channels_last one's state
        torch.testing.assert_close(graph_generator(nhwc)(semantic, panoptic), expected, rtol=1e-5, atol=1e-5)


def test_null_keeps_cpu_training_nchw(tmp_path, scenes, make_config):
    trainer = Trainer(make_config(max_steps=0), tmp_path / "run", dataset=scenes)
    try:
        assert not trainer.channels_last
        assert all(p.is_contiguous() for p in trainer.generator.parameters())
        assert all(p.is_contiguous() for p in trainer.D.parameters())
    finally:
        trainer.close()


def test_a_run_resumes_in_the_other_layout(tmp_path, scenes, make_config, capsys):
    # channels_last changes the layout, not what is trained: like device, it may differ on resume.
    train(make_config(max_steps=2, checkpoint_every=2, channels_last=True), tmp_path / "run", dataset=scenes)
    capsys.readouterr()
    train(make_config(max_steps=3, checkpoint_every=3, channels_last=False), tmp_path / "run", dataset=scenes)
    assert "resuming from step 2" in capsys.readouterr().out
    state, _ = load_latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert state["step"] == 3 and all(w.is_contiguous() for w in state["G"].values())
