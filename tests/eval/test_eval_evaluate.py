import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pansynth.eval.evaluate import MetricNetworks, evaluate_images, format_metrics
from pansynth.eval.fid import FeatureStats, frechet_distance
from pansynth.eval.segmentation import load_segmentation_model
from pansynth.viz import images_to_uint8 as to_uint8

RED, DARK_RED, BLUE = (255, 0, 0), (200, 0, 0), (0, 0, 255)

# torch.jit is deprecated in recent PyTorch but remains the portable format for --seg-model
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _maps():
    """16x16: left half two touching persons (ids 1 top, 2 bottom), right half sky (id 100)."""
    semantic = torch.zeros(16, 16, dtype=torch.long)
    semantic[:, :8] = 1
    panoptic = torch.full((16, 16), 100, dtype=torch.long)
    panoptic[:8, :8] = 1
    panoptic[8:, :8] = 2
    return semantic, panoptic


def _real_image_uint8():
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[:, 8:] = BLUE
    image[:8, :8] = RED
    image[8:, :8] = DARK_RED
    return image


def _to_tensor(array):
    return torch.from_numpy(array).permute(2, 0, 1).float() / 127.5 - 1


class ListDataset:
    """A dataset with the pansynth dataset interface, held in memory."""

    class_names = ["sky", "person"]
    thing_classes = [1]
    num_classes = 2
    ignore_index = None

    def __init__(self, names):
        semantic, panoptic = _maps()
        image = _to_tensor(_real_image_uint8())
        self.samples = [{"image": image, "semantic": semantic, "panoptic": panoptic, "name": n} for n in names]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return dict(self.samples[index])


class RedIsClassOne(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, 0:1]
        return F.avg_pool2d(torch.cat([-red, red], 1), 2)


class ChannelMeans(torch.nn.Module):
    def forward(self, images):
        x = images.double()
        return torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)


class StubDetector(torch.nn.Module):
    """Returns the two person boxes (COCO label 1), or only the first one with ``miss_second``."""

    def __init__(self, miss_second=False):
        super().__init__()
        self.miss_second = miss_second

    def forward(self, images):
        boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [0.0, 8.0, 8.0, 16.0]])
        keep = 1 if self.miss_second else 2
        return [
            {
                "boxes": boxes[:keep],
                "scores": torch.tensor([0.9, 0.8])[:keep],
                "labels": torch.tensor([1, 1])[:keep],
            }
            for _ in images
        ]


@pytest.fixture
def scene(tmp_path):
    """Sample 'good' generated = the real image; sample 'bad' generated = all blue."""
    images = tmp_path / "generated"
    images.mkdir()
    Image.fromarray(_real_image_uint8()).save(images / "good.png")
    Image.fromarray(np.full((16, 16, 3), BLUE, dtype=np.uint8)).save(images / "bad.png")
    seg_path = tmp_path / "seg.pt"
    torch.jit.script(RedIsClassOne()).save(str(seg_path))
    return ListDataset(["good", "bad"]), images, load_segmentation_model(seg_model=seg_path)


def test_all_metrics_on_crafted_scene(scene, tmp_path):
    dataset, images, segmenter = scene
    networks = MetricNetworks(inception=ChannelMeans(), seg_model=segmenter, detector=StubDetector())
    result = evaluate_images(dataset, images, networks, batch_size=1, grid_path=tmp_path / "out" / "grid.png")
    metrics = result["metrics"]
    # 'good' is segmented perfectly; on 'bad' the 128 person pixels are predicted as sky:
    # IoU sky = 256 / 384, IoU person = 128 / 256, accuracy = 384 / 512
    assert metrics["mIoU"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)
    assert metrics["accuracy"] == pytest.approx(75.0)
    assert metrics["detAP"] == pytest.approx(100.0) and metrics["detAP50"] == pytest.approx(100.0)
    assert result["gt_boxes"] == 4
    # FID against the real images of the split, from the same features computed by hand
    real = to_uint8(torch.stack([s["image"] for s in dataset.samples]))
    fake = torch.stack([_to_tensor(_real_image_uint8()), _to_tensor(np.full((16, 16, 3), BLUE, np.uint8))])
    stats_real, stats_fake = FeatureStats(6), FeatureStats(6)
    stats_real.update(ChannelMeans()(real))
    stats_fake.update(ChannelMeans()(to_uint8(fake)))
    expected_fid = frechet_distance(stats_fake.mean(), stats_fake.cov(), stats_real.mean(), stats_real.cov())
    assert metrics["FID"] == pytest.approx(expected_fid)
    assert metrics["FID"] > 1000
    # separation: 'good' keeps the red / dark red pair apart, 'bad' blends it (contrast 0)
    assert result["separation_pairs"] == 2
    assert metrics["separation_ratio"] == pytest.approx(0.5)
    assert metrics["separation"] == pytest.approx(0.5 * (55 / 127.5) * (1 + 0.0) * 1.0, rel=1e-6)
    assert result["skipped"] == {}
    with Image.open(tmp_path / "out" / "grid.png") as grid:
        assert grid.size == (3 * 16 + 2 * 2, 2 * 16 + 2)
    assert "mIoU" in format_metrics(result)


def test_missing_networks_are_listed_and_missed_detection(scene):
    dataset, images, _ = scene
    result = evaluate_images(dataset, images, MetricNetworks(detector=StubDetector(miss_second=True)))
    assert set(result["skipped"]) == {"FID", "mIoU", "accuracy"}
    assert "--inception-weights" in result["skipped"]["FID"]
    assert result["metrics"]["detAP"] == pytest.approx(100 * 51 / 101)  # recall 1/2, precision 1


def test_identical_images_give_zero_fid_and_ratio_one(tmp_path):
    dataset = ListDataset(["a", "b", "c"])
    images = tmp_path / "same"
    images.mkdir()
    rng = np.random.default_rng(0)
    for sample in dataset.samples:
        array = np.clip(_real_image_uint8().astype(int) + rng.integers(-20, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
        sample["image"] = _to_tensor(array)
        Image.fromarray(array).save(images / f"{sample['name']}.png")
    result = evaluate_images(dataset, images, MetricNetworks(inception=ChannelMeans()), batch_size=2)
    assert result["metrics"]["FID"] == pytest.approx(0.0, abs=1e-6)
    assert result["metrics"]["separation_ratio"] == pytest.approx(1.0)


def test_bad_image_folders(scene, tmp_path):
    dataset, images, _ = scene
    with pytest.raises(FileNotFoundError, match="'missing'"):
        evaluate_images(ListDataset(["good", "missing"]), images)
    Image.fromarray(np.zeros((8, 16, 3), dtype=np.uint8)).save(images / "good.png")
    with pytest.raises(ValueError, match="8x16"):
        evaluate_images(dataset, images)
    with pytest.raises(FileNotFoundError, match="--images"):
        evaluate_images(dataset, tmp_path / "nowhere")


def _write_folder_dataset(root):
    (root / "val").mkdir(parents=True)
    classes = {"classes": [{"name": "sky", "isthing": False}, {"name": "person", "isthing": True}]}
    (root / "classes.json").write_text(json.dumps({**classes, "ignore_index": None}))
    semantic, panoptic = _maps()
    for kind in ("images", "semantic", "panoptic"):
        (root / "val" / kind).mkdir()
    for name in ("good", "bad"):
        Image.fromarray(_real_image_uint8()).save(root / "val" / "images" / f"{name}.png")
        Image.fromarray(semantic.numpy().astype(np.uint8)).save(root / "val" / "semantic" / f"{name}.png")
        Image.fromarray(panoptic.numpy().astype(np.uint16)).save(root / "val" / "panoptic" / f"{name}.png")


def test_cli_evaluate_images(scene, tmp_path, capsys):
    from pansynth.cli import main

    _, images, _ = scene
    root = tmp_path / "data"
    _write_folder_dataset(root)
    seg_path = tmp_path / "seg.pt"
    out = tmp_path / "eval"
    argv = ["evaluate", "--images", str(images), "--dataset", "folder", "--root", str(root),
            "--seg-model", str(seg_path), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["metrics"]["mIoU"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)
    assert "detAP" in result["skipped"]
    assert "mIoU" in capsys.readouterr().out
    (out / "metrics.json").write_text('{"note": "earlier result"}')
    assert main(argv) == 0  # a second evaluation keeps the earlier file
    assert json.loads((out / "metrics.json.bak").read_text()) == {"note": "earlier result"}
    # user errors are one line, exit code 2
    assert main(["evaluate", "--dataset", "folder", "--root", str(root)]) == 2
    assert "either --checkpoint" in capsys.readouterr().err
    assert main([*argv[:-2], "--out", str(tmp_path / "o2"), "--det-weights", str(tmp_path / "no.pth")]) == 2
    assert "no.pth" in capsys.readouterr().err
