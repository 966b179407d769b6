"""Two CPU processes with gloo under torchrun: the ranks read different samples and DDP keeps their
weights identical."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import torch

from pansynth.train.checkpoint import list_checkpoints, load_checkpoint

SCRIPT = textwrap.dedent(
    """
    import os, sys, json, torch
    from pansynth.data.synthetic import SyntheticScenes
    from pansynth.train.config import config_from_dict
    from pansynth.train.loop import Trainer
    from pansynth.train import distributed

    torch.set_num_threads(1)
    config = config_from_dict(json.loads(sys.argv[1]))
    out = sys.argv[2]
    trainer = Trainer(config, out, dataset=SyntheticScenes(8, 64, seed=1))
    info = distributed.info()
    assert info.world_size == 2 and info.distributed, info
    rank = info.rank
    names = []  # the samples this rank trained on, batch by batch
    train_step = trainer.train_step
    trainer.train_step = lambda batch: names.append(list(batch["name"])) or train_step(batch)
    trainer.run()
    torch.save({"G": trainer.generator.state_dict(), "D": trainer.D.module.state_dict(),
                "seen": trainer.step, "names": names,
                "all_names": [trainer.dataset[i]["name"] for i in range(len(trainer.dataset))]},
               os.path.join(out, f"rank{rank}.pt"))
    distributed.cleanup()
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_end_with_identical_weights(tmp_path, make_config_dict):
    import json

    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    config = make_config_dict(
        max_steps=2, checkpoint_every=2, batch_size=4, model__conv="panoptic", model__upsample="panoptic"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        str(script),
        json.dumps(config),
        str(out),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    rank0 = torch.load(out / "rank0.pt", weights_only=True)
    rank1 = torch.load(out / "rank1.pt", weights_only=True)
    assert rank0["seen"] == rank1["seen"] == 2
    # Each rank trained on 2 batches of 2; together the two ranks read the 8 scenes once each (one epoch).
    assert [len(batch) for batch in rank0["names"]] == [len(batch) for batch in rank1["names"]] == [2, 2]
    seen0 = [name for batch in rank0["names"] for name in batch]
    seen1 = [name for batch in rank1["names"] for name in batch]
    assert len(set(rank0["all_names"])) == 8
    assert not set(seen0) & set(seen1), (seen0, seen1)
    assert sorted(seen0 + seen1) == sorted(rank0["all_names"])
    for key in ("G", "D"):
        for name, value in rank0[key].items():
            torch.testing.assert_close(value, rank1[key][name], rtol=0, atol=0, msg=f"{key}.{name}")
    # Rank 0 alone wrote the checkpoint (global batch 4 = 2 per rank) and the export.
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [2]
    state = load_checkpoint(out / "checkpoints" / "step_00000002.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    for name, value in state["G"].items():
        torch.testing.assert_close(value, rank0["G"][name], rtol=0, atol=0)
    assert (out / "export" / "model.safetensors").is_file()
    # The two ranks drew different augmentation streams (per-rank seeds).
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
