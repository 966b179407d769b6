"""A few training steps of the baseline and of the paper's model on CPU."""

from __future__ import annotations

import json

import pytest
import torch

from pansynth.inference import load_generator
from pansynth.train.checkpoint import list_checkpoints, load_generator_from_checkpoint, load_latest_checkpoint
from pansynth.train.loop import Trainer, train
from pansynth.train.monitor import sample_grid


@pytest.mark.parametrize(("conv", "upsample"), [("standard", "nearest"), ("panoptic", "panoptic")])
def test_few_steps_train_and_write_the_run(tmp_path, scenes, make_config, conv, upsample):
    config = make_config(max_steps=3, checkpoint_every=2, sample_every=2, model__conv=conv, model__upsample=upsample)
    run = tmp_path / "run"
    trainer = Trainer(config, run, dataset=scenes)
    initial_G = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    initial_D = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    trainer.run()

    # Weights changed, every logged loss is finite, one metrics line per step.
    changed_G = [k for k, v in trainer.generator.state_dict().items() if not torch.equal(v, initial_G[k])]
    changed_D = [k for k, v in trainer.D.state_dict().items() if not torch.equal(v, initial_D[k])]
    assert any("conv_img" in k for k in changed_G) and any(k.startswith("first_layer") for k in changed_G)
    assert len(changed_D) > 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    for line in lines:
        for name in ("G_gan", "G_feat", "G_total", "D_real", "D_fake", "D_total"):
            assert torch.isfinite(torch.tensor(line[name]))
        assert line["G_total"] == pytest.approx(line["G_gan"] + line["G_feat"], rel=1e-5)
        assert line["D_total"] == pytest.approx(line["D_real"] + line["D_fake"], rel=1e-5)

    # Checkpoints at step 2 (every 2) and at the end; export; samples; resolved config.
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [2, 3]
    state, _ = load_latest_checkpoint(run / "checkpoints")
    assert state["step"] == 3 and state["config"] == config.to_dict()
    assert state["generator_config"]["conv"] == conv and state["generator_config"]["upsample"] == upsample
    assert (run / "config.yaml").is_file() and (run / "samples" / "step_00000002.png").is_file()
    assert list((run / "tb").iterdir())

    # The export holds the EMA generator: same outputs as the EMA weights of the checkpoint.
    exported = load_generator(run / "export")
    from_checkpoint = load_generator_from_checkpoint(run / "checkpoints" / "step_00000003.pt")
    sample = scenes[0]
    semantic, panoptic = sample["semantic"][None], sample["panoptic"][None]
    with torch.no_grad():
        expected = trainer.ema.model(semantic, panoptic)
        torch.testing.assert_close(exported(semantic, panoptic), expected)
        torch.testing.assert_close(from_checkpoint(semantic, panoptic), expected)
    for name, value in state["G_ema"].items():
        torch.testing.assert_close(exported.state_dict()[name], value)


def test_ema_is_the_literal_moving_average(tmp_path, scenes, make_config):
    # With decay d and warm-up, after one step: ema = w0 + (1 - min(d, 1/10)) * (w1 - w0).
    trainer = Trainer(make_config(max_steps=1, ema=0.5), tmp_path / "run", dataset=scenes)
    before = {k: v.clone() for k, v in trainer.generator.named_parameters()}
    trainer.run()
    decay = min(0.5, 1.0 / 10.0)
    for name, value in trainer.ema.model.named_parameters():
        after = dict(trainer.generator.named_parameters())[name].detach()
        torch.testing.assert_close(value, decay * before[name] + (1 - decay) * after)


def test_missing_vgg_weights_fail_before_anything_is_written(tmp_path, scenes, make_config):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="loss.vgg_weights=PATH"):
        train(make_config(loss__lambda_vgg=10.0), run, dataset=scenes)
    with pytest.raises(FileNotFoundError, match="vgg19"):
        train(make_config(loss__lambda_vgg=10.0, loss__vgg_weights=str(tmp_path / "nope.pth")), run, dataset=scenes)
    assert not run.exists()


def test_sample_grid_layout():
    panoptic = torch.tensor([[[1, 2], [1, 2]]])
    fake = -torch.ones(1, 3, 2, 2)
    real = torch.ones(1, 3, 2, 2)
    grid = sample_grid(panoptic, fake, real)
    assert grid.shape == (2, 6, 3) and grid.dtype.name == "uint8"
    assert (grid[:, 2:4] == 0).all() and (grid[:, 4:6] == 255).all()
    # Same id, same colour; different ids, different colours.
    assert (grid[0, 0] == grid[1, 0]).all() and not (grid[0, 0] == grid[0, 1]).all()


def test_train_command_with_a_config_file(tmp_path, make_config_dict, capsys):
    import yaml

    from pansynth.cli import main
    from pansynth.data.synthetic import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", 5, 64, seed=0, val_fraction=0.2)
    config_path = tmp_path / "tiny.yaml"
    values = make_config_dict(max_steps=1)
    values["data"] = {"dataset": "folder", "split": "train"}
    config_path.write_text(yaml.safe_dump(values))
    run = tmp_path / "run"
    argv = ["train", "--config", str(config_path), "--out", str(run), f"data.root={data}"]
    assert main(argv) == 0
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [1]
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored["data"]["root"] == str(data) and stored["model"]["ngf"] == 4
    capsys.readouterr()
    assert main([*argv, "max_steps=2"]) == 0
    assert "resuming from step 1" in capsys.readouterr().out
    assert main([*argv, "model.conv=standard"]) == 2
    assert "different configuration (model.conv: 'panoptic' -> 'standard')" in capsys.readouterr().err
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [1, 2]


def test_the_export_and_checkpoints_carry_the_class_names(tmp_path, make_config):
    from pansynth.data import build_dataset, write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "data", 4, 64, seed=0, val_fraction=0.25)
    dataset = build_dataset("folder", root, split="train")
    train(make_config(max_steps=1), tmp_path / "run", dataset=dataset)
    exported = load_generator(tmp_path / "run")
    assert exported.metadata["class_names"] == dataset.class_names
    assert exported.metadata["thing_classes"] == dataset.thing_classes and exported.metadata["step"] == 1
    rebuilt = load_generator_from_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000001.pt")
    assert rebuilt.metadata == {k: exported.metadata[k] for k in ("step", "class_names", "thing_classes")}


def test_bf16_mixed_precision_trains_on_cpu(tmp_path, make_config):
    """precision=bf16 autocasts the steps (on CPU too) at a map size where the PyTorch engine corrects
    boundary pixels sparsely, the path that crashed in bf16 before."""
    from pansynth.data.synthetic import SyntheticScenes

    scenes = SyntheticScenes(4, 128, seed=1)
    trainer = Trainer(make_config(max_steps=2, precision="bf16"), tmp_path / "bf16", dataset=scenes)
    with trainer._autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    trainer.run()
    fp32 = Trainer(make_config(max_steps=2), tmp_path / "fp32", dataset=scenes)
    fp32.run()
    lines = [json.loads(line) for line in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (tmp_path / "fp32" / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(line["G_total"])) for line in lines)
    # Same data, seed and initial weights: the losses differ by bf16 rounding only.
    assert lines[0]["G_total"] != reference[0]["G_total"]
    assert abs(lines[0]["G_total"] - reference[0]["G_total"]) < 0.05 * abs(reference[0]["G_total"])
