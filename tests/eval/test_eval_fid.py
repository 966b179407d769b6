import numpy as np
import pytest
import scipy.linalg
import torch

from pansynth.eval.fid import (
    FeatureStats,
    accumulate_features,
    fid_from_stats,
    frechet_distance,
    load_inception,
    load_stats,
)
from pansynth.viz import images_to_uint8 as to_uint8


def _random_gaussian(rng, dim):
    mu = rng.normal(size=dim)
    a = rng.normal(size=(dim, dim))
    return mu, a @ a.T + 0.1 * np.eye(dim)


def _reference_fid(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.mark.parametrize("dim", [1, 3, 8])
def test_frechet_distance_matches_scipy_closed_form(dim):
    rng = np.random.default_rng(dim)
    mu1, s1 = _random_gaussian(rng, dim)
    mu2, s2 = _random_gaussian(rng, dim)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_reference_fid(mu1, s1, mu2, s2), rel=1e-9, abs=1e-9)


def test_frechet_distance_diagonal_by_hand():
    # For diagonal covariances the trace term is sum (sqrt(a) - sqrt(b))^2.
    mu1, mu2 = np.array([0.0, 1.0]), np.array([3.0, 1.0])
    s1, s2 = np.diag([4.0, 9.0]), np.diag([1.0, 1.0])
    expected = 9.0 + (2 - 1) ** 2 + (3 - 1) ** 2
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, abs=1e-12)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="covariances must be"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


def test_feature_stats_streaming_and_merge_match_numpy():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(50, 5)) * np.arange(1, 6) + 3
    first, second = FeatureStats(5), FeatureStats(5)
    for chunk in np.array_split(data[:30], 4):
        first.update(torch.from_numpy(chunk))
    second.update(data[30:])
    merged = first.merge(second)
    np.testing.assert_allclose(merged.mean(), data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(merged.cov(), np.cov(data, rowvar=False), rtol=1e-10, atol=1e-12)
    assert merged.count == 50
    with pytest.raises(ValueError, match=r"features must be \(N, 5\)"):
        merged.update(np.zeros((2, 4)))


def test_stats_file_round_trip_and_no_overwrite(tmp_path):
    rng = np.random.default_rng(1)
    stats = FeatureStats(3)
    stats.update(rng.normal(size=(10, 3)))
    path = stats.save(tmp_path / "ref.npz")
    mu, sigma = load_stats(path)
    np.testing.assert_allclose(mu, stats.mean())
    np.testing.assert_allclose(sigma, stats.cov())
    assert fid_from_stats(stats, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(FileExistsError, match="already exists"):
        stats.save(path)
    with pytest.raises(FileNotFoundError, match="fid-stats"):
        load_stats(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", foo=np.zeros(2))
    with pytest.raises(ValueError, match="'mu' and 'sigma'"):
        load_stats(tmp_path / "bad.npz")


class ChannelMeans(torch.nn.Module):
    """Tiny feature extractor: per-channel mean and max of a uint8 image."""

    def forward(self, images):
        assert images.dtype == torch.uint8
        x = images.double()
        return torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)


def test_accumulate_features_with_injected_extractor():
    torch.manual_seed(0)
    batches = [torch.rand(4, 3, 8, 8) * 2 - 1, torch.rand(3, 3, 8, 8) * 2 - 1]
    stats = accumulate_features(iter(batches), ChannelMeans())
    images = np.concatenate([to_uint8(b).numpy().astype(np.float64) for b in batches])
    features = np.concatenate([images.mean((2, 3)), images.max((2, 3))], 1)
    np.testing.assert_allclose(stats.mean(), features.mean(0))
    np.testing.assert_allclose(stats.cov(), np.cov(features, rowvar=False), atol=1e-9)


def test_load_inception_missing_file_explains(tmp_path):
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05"):
        load_inception(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="--inception-weights"):
        load_inception(None)


def test_load_inception_rejects_pickled_code(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"fn": ChannelMeans()}, path)  # a pickled module, not plain tensors
    with pytest.raises(ValueError, match="holds Python objects .* besides tensors"):
        load_inception(path)


def test_load_inception_reads_a_local_state_dict(tmp_path, monkeypatch):
    """Plumbing with random weights: the file given is the one loaded (no download, weights_only)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
    from torchmetrics.image.fid import NoTrainInceptionV3

    with monkeypatch.context() as patch:
        # build a randomly initialised network without touching the network or a file
        patch.setattr(tf_inception, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        torch.manual_seed(0)
        random_net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])
    weights = tmp_path / "inception.pth"
    torch.save(random_net.state_dict(), weights)

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(tf_inception, "load_state_dict_from_url", no_download)
    extractor = load_inception(weights)
    images = to_uint8(torch.rand(2, 3, 32, 32) * 2 - 1)
    features = extractor(images)
    assert features.shape == (2, 2048)
    torch.testing.assert_close(features, random_net(images).reshape(2, -1))
