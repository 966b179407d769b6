import pytest
import torch
import torch.nn.functional as F

from pansynth.eval.segmentation import (
    ConfusionMatrix,
    apply_mapping,
    cityscapes_train_ids,
    load_segmentation_model,
)

TARGET = torch.tensor([[0, 0, 1], [1, 2, 255]])
PREDICTION = torch.tensor([[0, 1, 1], [2, 2, 0]])

# torch.jit is deprecated in recent PyTorch but remains the portable format for --seg-model
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def test_confusion_matrix_by_hand():
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(PREDICTION, TARGET)
    # counted pixels: (gt, pred) = (0,0) (0,1) (1,1) (1,2) (2,2); the 255 pixel is ignored
    expected = torch.tensor([[1, 1, 0], [0, 1, 1], [0, 0, 1]])
    assert torch.equal(cm.matrix, expected)
    result = cm.compute()
    # IoU: class 0 = 1/2, class 1 = 1/3, class 2 = 1/2
    assert result["per_class_iou"] == pytest.approx([0.5, 1 / 3, 0.5])
    assert result["miou"] == pytest.approx(4 / 9)
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["pixels"] == 5


def test_absent_classes_are_excluded_and_batches_accumulate():
    cm = ConfusionMatrix(5, ignore_index=255)
    cm.update(PREDICTION[None], TARGET[None])  # classes 3 and 4 appear nowhere
    cm.update(torch.tensor([[4]]), torch.tensor([[255]]))  # ignored pixel predicted as 4: not counted
    result = cm.compute()
    assert result["per_class_iou"][3:] == [None, None]
    assert result["miou"] == pytest.approx(4 / 9)
    # a class only predicted (never in the ground truth) has union > 0 and IoU 0: it counts
    cm.update(torch.tensor([[3]]), torch.tensor([[0]]))
    result = cm.compute()
    assert result["per_class_iou"][3] == 0.0
    assert result["per_class_iou"][0] == pytest.approx(1 / 3)
    assert result["miou"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2 + 0) / 4)
    assert result["accuracy"] == pytest.approx(3 / 6)


def test_negative_targets_ignored_and_out_of_range_predictions_wrong():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 9, 1, 1]), torch.tensor([0, 1, -1, 1]))
    result = cm.compute()
    assert result["pixels"] == 3
    assert result["accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no labelled pixels"):
        ConfusionMatrix(2, ignore_index=0).compute()


def test_cityscapes_mapping():
    mapping = cityscapes_train_ids()
    assert len(mapping) == 19 and sorted(mapping.values()) == list(range(19))
    labels = torch.tensor([[7, 8, 26], [0, 33, -1]])
    assert apply_mapping(labels, mapping).tolist() == [[0, 1, 13], [-1, 18, -1]]


class RedIsClassOne(torch.nn.Module):
    """Logits at half resolution: class 1 where the normalised red channel is positive."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, 0:1]
        return F.avg_pool2d(torch.cat([-red, red], 1), 2)


def test_torchscript_model_path(tmp_path):
    path = tmp_path / "seg.pt"
    torch.jit.script(RedIsClassOne()).save(str(path))
    model = load_segmentation_model(seg_model=path)
    image = torch.full((1, 3, 8, 8), -1.0)
    image[:, 0, :, :4] = 1.0  # left half red
    labels = model(image, (8, 8))
    expected = torch.zeros(1, 8, 8, dtype=torch.long)
    expected[:, :, :4] = 1
    assert torch.equal(labels, expected)
    # mid-grey red (0 in [-1, 1] -> 0.5 in [0, 1]) is above the ImageNet mean 0.485: class 1 everywhere
    assert torch.equal(model(torch.zeros(1, 3, 8, 8)), torch.ones(1, 8, 8, dtype=torch.long))


def test_torchvision_arch_with_local_weights(tmp_path):
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(0)
    network = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3).eval()
    torch.save(network.state_dict(), tmp_path / "seg.pth")
    model = load_segmentation_model(
        seg_arch="lraspp_mobilenet_v3_large", seg_weights=tmp_path / "seg.pth", num_classes=3
    )
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    normalised = ((image + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = network(normalised)["out"].argmax(1)
    assert torch.equal(model(image), expected)


def test_segmentation_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="TorchScript"):
        load_segmentation_model(seg_model=tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        load_segmentation_model(seg_model=tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="--seg-arch must be one of"):
        load_segmentation_model(seg_arch="drn_d_105", seg_weights=tmp_path / "x.pth", num_classes=19)
    with pytest.raises(FileNotFoundError, match="--seg-weights"):
        load_segmentation_model(seg_arch="fcn_resnet50", num_classes=19)


class _ColourDataset:
    """Class 1 where the pixel is red, 0 where blue; class 2 is the ignore label on a green strip."""

    num_classes = 2
    ignore_index = 2

    def __init__(self):
        torch.manual_seed(0)
        self.samples = []
        for _ in range(4):
            semantic = (torch.rand(4, 4) < 0.5).long().repeat_interleave(4, 0).repeat_interleave(4, 1)
            image = torch.where(
                semantic.bool(),
                torch.tensor([1.0, -1, -1]).view(3, 1, 1),
                torch.tensor([-1.0, -1, 1]).view(3, 1, 1),
            )
            semantic[:, :2] = 2
            image[:, :, :2] = torch.tensor([-1.0, 1, -1]).view(3, 1, 1)
            self.samples.append({"image": image, "semantic": semantic})

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index]


def test_proxy_segmenter_learns_colours_and_round_trips(tmp_path):
    from pansynth.eval.segmentation import save_torchscript, train_proxy_segmenter

    dataset = _ColourDataset()
    model = train_proxy_segmenter(dataset, steps=40, batch_size=4, width=8)
    cm = ConfusionMatrix(2, ignore_index=2)
    images = torch.stack([s["image"] for s in dataset.samples])
    targets = torch.stack([s["semantic"] for s in dataset.samples])
    cm.update(model(images), targets)
    assert cm.compute()["accuracy"] > 0.9
    path = save_torchscript(model, tmp_path / "proxy.pt")
    assert torch.equal(load_segmentation_model(seg_model=path)(images), model(images))
    with pytest.raises(FileExistsError):
        save_torchscript(model, path)
