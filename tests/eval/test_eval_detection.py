import pytest
import torch

from pansynth.eval.detection import DetectionAP, boxes_from_panoptic, coco_label_map, load_detector


def _crafted_maps():
    semantic = torch.zeros(8, 8, dtype=torch.long)  # class 0: stuff
    panoptic = torch.full((8, 8), 100, dtype=torch.long)
    semantic[1:3, 1:4] = 1  # a person, rows 1-2, cols 1-3
    panoptic[1:3, 1:4] = 5
    semantic[4:7, 5:7] = 2  # a car, rows 4-6, cols 5-6
    panoptic[4:7, 5:7] = 6
    semantic[6:8, 0:2] = 3  # a thing class the detector does not know
    panoptic[6:8, 0:2] = 7
    return panoptic, semantic


def test_boxes_from_crafted_panoptic_map():
    panoptic, semantic = _crafted_maps()
    boxes, labels = boxes_from_panoptic(panoptic, semantic, {1: 1, 2: 3})
    order = labels.argsort()
    assert labels[order].tolist() == [1, 3]
    assert boxes[order].tolist() == [[1.0, 1.0, 4.0, 3.0], [5.0, 4.0, 7.0, 7.0]]


def test_boxes_use_majority_class_and_touching_instances():
    panoptic, semantic = _crafted_maps()
    panoptic[1:3, 4:6] = 8  # a second person touching the first one
    semantic[1:3, 4:6] = 1
    semantic[1, 1] = 0  # one mislabelled pixel does not change the segment's class
    boxes, labels = boxes_from_panoptic(panoptic, semantic, {1: 1})
    assert sorted(boxes.tolist()) == [[1.0, 1.0, 4.0, 3.0], [4.0, 1.0, 6.0, 3.0]]
    assert labels.tolist() == [1, 1]


def test_coco_label_map_by_names():
    names = ["road", "person", "rider", "car", "caravan", "bicycle"]
    assert coco_label_map(names, [1, 2, 3, 4, 5]) == {1: 1, 2: 1, 3: 3, 5: 2}


def _gt():
    return [
        {
            "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 40.0]]),
            "labels": torch.tensor([1, 3]),
        }
    ]


def test_perfect_predictions_give_ap_one():
    metric = DetectionAP(labels=[1, 3])
    gt = _gt()
    metric.update([{"boxes": gt[0]["boxes"], "scores": torch.tensor([0.9, 0.8]), "labels": gt[0]["labels"]}], gt)
    result = metric.compute()
    assert result["detAP"] == pytest.approx(1.0)
    assert result["detAP50"] == pytest.approx(1.0)
    assert result["gt_boxes"] == 2


def test_shifted_box_gives_exact_fraction():
    # The only prediction overlaps its box with IoU 0.72: a hit at IoU thresholds 0.50 ... 0.70
    # (5 of the 10 COCO thresholds), a miss at 0.75 ... 0.95 -> AP = 0.5, AP50 = 1.
    gt = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1])}]
    prediction = {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 7.2]]),
        "scores": torch.tensor([0.9]),
        "labels": torch.tensor([1]),
    }
    # a confident detection of a category that is not evaluated is dropped
    extra = {
        "boxes": torch.tensor([[50.0, 50.0, 60.0, 60.0]]),
        "scores": torch.tensor([0.99]),
        "labels": torch.tensor([17]),
    }
    merged = {k: torch.cat([prediction[k], extra[k]]) for k in prediction}
    metric = DetectionAP(labels=[1])
    metric.update([merged], gt)
    result = metric.compute()
    assert result["detAP"] == pytest.approx(0.5)
    assert result["detAP50"] == pytest.approx(1.0)


def test_missed_instance_halves_recall():
    # One of two boxes detected, no false positive: precision 1 up to recall 0.5 -> AP 0.5 (101-point).
    metric = DetectionAP(labels=[1])
    gt = [
        {
            "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]]),
            "labels": torch.tensor([1, 1]),
        }
    ]
    metric.update([{"boxes": gt[0]["boxes"][:1], "scores": torch.tensor([0.5]), "labels": torch.tensor([1])}], gt)
    assert metric.compute()["detAP"] == pytest.approx(51 / 101)


def test_load_detector_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="fasterrcnn_resnet50_fpn_coco"):
        load_detector(tmp_path / "missing.pth")


def test_load_detector_reads_local_weights(tmp_path):
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    torch.manual_seed(0)
    network = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=64)
    network.eval()
    path = tmp_path / "det.pth"
    torch.save(network.state_dict(), path)
    detector = load_detector(path, num_classes=3, min_size=64)
    assert torch.equal(
        detector.network.roi_heads.box_predictor.cls_score.weight,
        network.roi_heads.box_predictor.cls_score.weight,
    )
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        expected = network([(image[0] + 1) / 2])[0]
    got = detector(image)[0]
    assert set(got) == {"boxes", "scores", "labels"}
    torch.testing.assert_close(got["scores"], expected["scores"])
    with pytest.raises(ValueError, match="does not fit Faster R-CNN"):
        load_detector(path, num_classes=91)
