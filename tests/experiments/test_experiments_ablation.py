import json
import re

import pytest

from pansynth.experiments.ablation import VARIANTS, run_ablation

TINY = [
    "model.ngf=4",
    "model.ndf=4",
    "model.norm=batch",
    "batch_size=2",
    "data.load_size=[32, 32]",
    "ema=null",
]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from pansynth.data import write_synthetic_dataset

    return write_synthetic_dataset(
        tmp_path_factory.mktemp("data") / "scenes", num=6, size=32, seed=1, val_fraction=0.34
    )


def test_ablation_trains_four_variants_one_switch_apart_and_resumes(synthetic_root, tmp_path):
    from pansynth.train.loop import train

    calls = []

    def counting_train(config, run_dir):
        calls.append((config.model.conv, config.model.upsample, config.model.boundary, config.max_steps))
        return train(config, run_dir)

    out = tmp_path / "ablation"
    summary = run_ablation("demo", synthetic_root, 2, out, overrides=TINY, train_fn=counting_train)
    assert calls == [
        ("standard", "nearest", True, 2),
        ("panoptic", "nearest", True, 2),
        ("panoptic", "nearest", False, 2),
        ("panoptic", "panoptic", False, 2),
    ]
    # Each row differs from the row above in exactly one switch, and names it.
    for (_, label, _), before, after in zip(VARIANTS[1:], calls, calls[1:]):
        changed = [name for name, a, b in zip(("conv", "upsample", "boundary"), before[:3], after[:3]) if a != b]
        assert len(changed) == 1 and f"[{changed[0]}=" in label
    table = (out / "ablation.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| Method")]
    assert [row.split("|")[1].strip() for row in rows] == [label for _, label, _ in VARIANTS]
    for row in rows:
        cells = [c.strip() for c in row.split("|")[2:-1]]
        assert len(cells) == 2 and all(re.fullmatch(r"\d+(\.\d+)?", c) for c in cells), row
    stored = json.loads((out / "ablation.json").read_text())
    assert [v["variant"] for v in stored["variants"]] == [
        "baseline",
        "panoptic_conv",
        "panoptic_conv_no_boundary",
        "panoptic_upsampling",
    ]
    _check_separation_against_the_images(stored, out, synthetic_root)
    assert "mIoU" in stored["skipped"]
    assert summary["budget"] == 2

    # a re-run resumes the finished runs (no new checkpoint) and reuses their evaluations
    checkpoints = sorted(p.name for p in out.glob("*/checkpoints/*.pt"))
    run_ablation("demo", synthetic_root, 2, out, overrides=TINY, train_fn=counting_train)
    assert sorted(p.name for p in out.glob("*/checkpoints/*.pt")) == checkpoints
    assert not list(out.glob("*/eval.bak*"))
    assert (out / "ablation.md").read_text() == table
    assert not (out / "ablation.md.bak").exists()  # same content: nothing to keep


def _check_separation_against_the_images(stored, out, root):
    """Each row's separation, recomputed from the images its evaluation wrote: the mean contrast
    over every touching pair of the split (pooled over images, not a mean of image means), and
    its ratio to the same figure on the real images."""
    import torch

    from pansynth.data import build_dataset
    from pansynth.data.transforms import PairedTransform
    from pansynth.eval.evaluate import read_png
    from pansynth.eval.separation import pair_contrasts

    val = build_dataset("folder", root, split="val", transform=PairedTransform(size=(32, 32)))
    samples = [val[index] for index in range(len(val))]

    def pooled(image_of):
        contrasts = [pair_contrasts(image_of(s), s["panoptic"], s["semantic"], val.thing_classes) for s in samples]
        assert len({len(c) for c in contrasts}) > 1  # images with different numbers of pairs
        return torch.cat(contrasts).mean().item()

    real = pooled(lambda sample: sample["image"])
    assert real > 0
    for row in stored["variants"]:
        images = out / f"{row['variant']}-seed0" / "eval" / "images"
        fake = pooled(lambda sample, images=images: read_png(images / f"{sample['name']}.png"))
        assert row["per_seed"]["separation"] == [pytest.approx(fake)]
        assert row["metrics"]["separation"] == pytest.approx(fake)
        assert row["metrics"]["separation_ratio"] == pytest.approx(fake / real)


def test_ablation_rejects_bad_budget(tmp_path):
    with pytest.raises(ValueError, match="--budget"):
        run_ablation("demo", tmp_path, 0, tmp_path / "out")


def test_table_mean_and_std_over_seeds():
    from pansynth.experiments.ablation import format_table

    rows = [
        {
            "label": "A",
            "metrics": {},
            "per_seed": {"mIoU": [60.0, 62.0, 64.0], "separation": [0.25, 0.35, 0.3]},
        },
        {"label": "B", "metrics": {}, "per_seed": {"mIoU": [70.0]}},
    ]
    lines = format_table(rows).splitlines()
    assert lines[0] == "| Method | mIoU ↑ | separation ↑ |"
    assert lines[2] == "| A | 62.00 ± 2.00 | 0.300 ± 0.050 |"  # sample standard deviation
    assert lines[3] == "| B | 70.00 | n/a |"
