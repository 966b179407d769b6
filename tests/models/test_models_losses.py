"""Hinge, feature-matching and VGG perceptual losses on hand-made inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pansynth.models.losses import (
    GANHingeLoss,
    VGGPerceptualLoss,
    feature_matching_loss,
    hinge_loss_d,
    hinge_loss_g,
)
from pansynth.models.vgg import build_vgg19_features, load_vgg19_features


def test_hinge_losses_hand_computed():
    # Two scales; the features before the logits are ignored by the GAN loss.
    real = [[torch.zeros(1, 2, 2, 2), torch.tensor([0.5, 2.0, -1.0, 1.0])], [torch.tensor([[3.0, 0.0]])]]
    fake = [[torch.zeros(1), torch.tensor([-2.0, 0.0, 1.0, -0.5])], [torch.tensor([[-1.0, 1.0]])]]
    # real: scale 0 mean(relu(1 - x)) = (0.5 + 0 + 2 + 0) / 4 = 0.625; scale 1 (0 + 1) / 2 = 0.5
    # fake: scale 0 mean(relu(1 + x)) = (0 + 1 + 2 + 0.5) / 4 = 0.875; scale 1 (0 + 2) / 2 = 1
    loss = GANHingeLoss()
    assert loss(real, target_is_real=True).item() == pytest.approx((0.625 + 0.5) / 2)
    assert loss(fake, target_is_real=False).item() == pytest.approx((0.875 + 1.0) / 2)
    assert hinge_loss_d(real, fake).item() == pytest.approx((0.625 + 0.5) / 2 + (0.875 + 1.0) / 2)
    # generator: -mean(fake) per scale: scale 0 -(-1.5 / 4) = 0.375, scale 1 -(0 / 2) = 0
    assert hinge_loss_g(fake).item() == pytest.approx((0.375 + 0.0) / 2)
    assert loss(torch.tensor([0.5, 2.0]), target_is_real=True).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="target_is_real=True only"):
        loss(fake, target_is_real=False, for_discriminator=False)
    with pytest.raises(ValueError, match="non-empty list"):
        hinge_loss_g([])


def test_hinge_gradient_sign():
    fake = torch.tensor([0.3, -0.2], requires_grad=True)
    hinge_loss_g([[fake]]).backward()
    torch.testing.assert_close(fake.grad, torch.tensor([-0.5, -0.5]))


def test_feature_matching_hand_computed_and_detached():
    real = [
        [torch.tensor([1.0, 2.0]), torch.tensor([[0.0, 0.0], [0.0, 4.0]]), torch.tensor([9.0])],
        [torch.tensor([3.0]), torch.tensor([100.0])],
    ]
    fake = [
        [torch.tensor([2.0, 0.0]), torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([-9.0])],
        [torch.tensor([1.0]), torch.tensor([-100.0])],
    ]
    real = [[t.clone().requires_grad_(True) for t in scale] for scale in real]
    # scale 0: L1 = (1 + 2) / 2 + (1 + 4) / 4 = 2.75; scale 1: 2; logits ignored; mean over 2 scales
    loss = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx((2.75 + 2.0) / 2)
    assert not loss.requires_grad  # the real features are detached and the fake ones need no grad here
    with pytest.raises(ValueError, match="same, non-zero number of scales"):
        feature_matching_loss(real, fake[:1])


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A randomly initialised VGG19 state dict in torchvision's key layout (a full model's keys)."""
    torch.manual_seed(0)
    features = build_vgg19_features()
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # a full model's classifier is ignored
    path = tmp_path_factory.mktemp("vgg") / "vgg19-random.pth"
    torch.save(state, path)
    return path, features


def test_vgg_layout_matches_torchvision():
    import torchvision

    with torch.device("meta"):
        reference = torchvision.models.vgg19(weights=None).features
    ours = build_vgg19_features()
    assert {k: tuple(v.shape) for k, v in reference.state_dict().items()} == {
        k: tuple(v.shape) for k, v in ours.state_dict().items()
    }
    assert [type(m).__name__ for m in reference] == [type(m).__name__ for m in ours]


@pytest.mark.parametrize("vgg_input", ["raw", "imagenet"])
def test_vgg_perceptual_loss_matches_literal(vgg_file, tmp_path, vgg_input):
    path, features = vgg_file
    loss_fn = VGGPerceptualLoss(path, input=vgg_input)
    assert list(loss_fn.parameters()) == []  # frozen: nothing for an optimizer to pick up
    torch.manual_seed(1)
    fake = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    loss = loss_fn(fake, real)

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def activations(image):
        # SPADE's VGGLoss feeds the [-1, 1] images unchanged; "imagenet" normalises them first.
        x, out = (image if vgg_input == "raw" else ((image + 1) / 2 - mean) / std), []
        for index, layer in enumerate(features):
            x = layer(x)
            if index in (1, 6, 11, 20, 29):  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
                out.append(x)
        return out

    expected = sum(
        w * F.l1_loss(a, b)
        for w, a, b in zip([1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0], activations(fake), activations(real))
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert loss_fn(real, real).item() == 0.0

    # The same weights as .safetensors, keys of the features module alone.
    from safetensors.torch import save_file

    st_path = tmp_path / "vgg19.safetensors"
    save_file({k: v.contiguous() for k, v in features.state_dict().items()}, str(st_path))
    torch.testing.assert_close(VGGPerceptualLoss(st_path, input=vgg_input)(fake, real), loss)


def test_vgg_input_switch_changes_the_loss_and_is_checked(vgg_file):
    path, _ = vgg_file
    torch.manual_seed(2)
    fake, real = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    raw, imagenet = VGGPerceptualLoss(path), VGGPerceptualLoss(path, input="imagenet")
    assert raw.input == "raw"  # SPADE's choice is the default
    assert not torch.allclose(raw(fake, real), imagenet(fake, real))
    with pytest.raises(ValueError, match="input must be one of 'raw', 'imagenet'"):
        VGGPerceptualLoss(path, input="caffe")


def test_vgg_missing_or_wrong_file(tmp_path):
    missing = tmp_path / "no-such-vgg19.pth"
    with pytest.raises(FileNotFoundError, match=r"no-such-vgg19\.pth not found.*IMAGENET1K_V1"):
        VGGPerceptualLoss(missing)
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(3, 3, 3, 3)}, wrong)
    with pytest.raises(ValueError, match="not a torchvision VGG19 state dict"):
        load_vgg19_features(wrong)
    not_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_dict)
    with pytest.raises(ValueError, match="holds a list, not a VGG19 weights file"):
        load_vgg19_features(not_dict)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="is not a readable VGG19 weights file"):
        load_vgg19_features(garbage)
