"""Fréchet Inception Distance (FID).

The math lives in two small pieces that need no network:

* :class:`FeatureStats` accumulates the mean and covariance of feature vectors in
  float64, batch by batch, and can be merged, saved to and loaded from ``.npz``;
* :func:`frechet_distance` is the closed form
  ``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (Heusel et al., 2017).

The features are the 2048-d pool features of the standard FID Inception-v3
(torch-fidelity's port of the TensorFlow graph, used through torchmetrics), built by
:func:`load_inception` from a local weights file: nothing is downloaded.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pansynth.eval.metric import EvalBatch, MetricResult
from pansynth.viz import images_to_uint8
from pansynth.weights import read_state_dict

INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_WEIGHTS_FILE
INCEPTION_HELP = (
    f"FID needs the standard FID Inception-v3 weights ({INCEPTION_WEIGHTS_FILE}, 91 MB). "
    f"Download it once on a machine with network access from {INCEPTION_WEIGHTS_URL} "
    "and pass its path with --inception-weights PATH"
)

# A feature extractor maps uint8 images (N, 3, H, W) to features (N, D).
FeatureExtractor = Callable[[Tensor], Tensor]


class FeatureStats:
    """Streaming mean / covariance of feature vectors (float64).

    Args:
        dim: feature dimension D.

    Example:
        >>> stats = FeatureStats(4)
        >>> stats.update(torch.randn(10, 4)); stats.update(torch.randn(5, 4))
        >>> stats.count, stats.mean().shape, stats.cov().shape
        (15, (4,), (4, 4))
    """

    def __init__(self, dim: int) -> None:
        if dim <= 0:
            raise ValueError(f"feature dimension must be positive, got {dim}")
        self.dim = dim
        self.count = 0
        self._sum = np.zeros(dim, dtype=np.float64)
        self._outer_sum = np.zeros((dim, dim), dtype=np.float64)

    def update(self, features: Tensor | np.ndarray) -> None:
        """Add a batch of features (Tensor[N, D])."""
        if isinstance(features, Tensor):
            features = features.detach().to("cpu", torch.float64).numpy()
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must be (N, {self.dim}), got {tuple(features.shape)}")
        self.count += features.shape[0]
        self._sum += features.sum(axis=0)
        self._outer_sum += features.T @ features

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Add the samples of ``other`` to these statistics (returns self)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
        self.count += other.count
        self._sum += other._sum
        self._outer_sum += other._outer_sum
        return self

    def mean(self) -> np.ndarray:
        """Mean feature, float64 array (D,)."""
        if self.count == 0:
            raise ValueError("no features were accumulated")
        return self._sum / self.count

    def cov(self) -> np.ndarray:
        """Unbiased covariance (divides by N - 1, as ``numpy.cov``), float64 array (D, D)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.count}")
        mean = self.mean()
        return (self._outer_sum - self.count * np.outer(mean, mean)) / (self.count - 1)

    def save(self, path: str | Path) -> Path:
        """Write ``mu``, ``sigma`` and ``count`` to an ``.npz`` file (never overwrites)."""
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path} already exists; remove it or choose another --out")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("xb") as handle:
            np.savez(handle, mu=self.mean(), sigma=self.cov(), count=np.int64(self.count))
        return path


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read reference statistics ``(mu (D,), sigma (D, D))`` written by :meth:`FeatureStats.save`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID statistics file {path} not found (create it with `pansynth fid-stats`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    except (KeyError, ValueError, OSError) as error:
        raise ValueError(f"{path} is not an FID statistics .npz with arrays 'mu' and 'sigma': {error}") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{path}: expected mu (D,) and sigma (D, D), got {mu.shape} and {sigma.shape}")
    return mu, sigma


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64.

    ``d = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``; the last
    trace equals ``tr((sigma1^(1/2) sigma2 sigma1^(1/2))^(1/2))``, which is computed from the
    eigenvalues of a symmetric PSD matrix (stable, no complex parts).

    Args:
        mu1, mu2: means (D,).
        sigma1, sigma2: covariances (D, D), symmetric positive semi-definite.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"means must both be (D,), got {mu1.shape} and {mu2.shape}")
    dim = mu1.shape[0]
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(f"covariances must be ({dim}, {dim}), got {sigma1.shape} and {sigma2.shape}")
    sqrt_sigma1 = _sqrt_psd(sigma1)
    middle = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


class InceptionFeatures(nn.Module):
    """FID Inception-v3 (torch-fidelity / torchmetrics) returning 2048-d pool features.

    ``forward(images uint8 Tensor[N, 3, H, W]) -> Tensor[N, 2048]`` (resized to 299 inside).
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.num_features = 2048

    def forward(self, images: Tensor) -> Tensor:
        return self.network(images).reshape(images.shape[0], -1)


def load_inception(weights_path: str | Path | None) -> InceptionFeatures:
    """Build the FID Inception-v3 from a local weights file (never downloads).

    The file is first read with ``torch.load(weights_only=True)`` (or safetensors); only the
    tensors read that way are handed to torch-fidelity, so no untrusted pickle is executed.
    """
    if weights_path is None:
        raise FileNotFoundError(INCEPTION_HELP)
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights {path} not found. {INCEPTION_HELP}")
    state = read_state_dict(path, "Inception weights file")
    from torchmetrics.image.fid import NoTrainInceptionV3  # pulls in torch-fidelity: only when FID is asked for

    with tempfile.TemporaryDirectory() as tmp:
        # torch-fidelity reads the file with weights_only=False: give it a file holding only
        # the tensors we read safely.
        safe_path = Path(tmp) / "inception.pth"
        torch.save(state, safe_path)
        try:
            network = NoTrainInceptionV3(
                name="inception-v3-compat",
                features_list=["2048"],
                feature_extractor_weights_path=str(safe_path),
            )
        except RuntimeError as error:
            raise ValueError(f"{path} does not match the FID Inception-v3: {error}") from None
    return InceptionFeatures(network)


@torch.no_grad()
def accumulate_features(
    images: Iterable[Tensor], extractor: FeatureExtractor, stats: FeatureStats | None = None
) -> FeatureStats:
    """Feed batches of images in [-1, 1] (Tensor[N, 3, H, W]) through ``extractor`` into ``stats``."""
    for batch in images:
        features = extractor(images_to_uint8(batch))
        if stats is None:
            stats = FeatureStats(features.shape[1])
        stats.update(features.reshape(features.shape[0], -1))
    if stats is None:
        raise ValueError("no images to compute FID features from")
    return stats


def fid_from_stats(stats: FeatureStats, mu_ref: np.ndarray, sigma_ref: np.ndarray) -> float:
    """FID between accumulated statistics and reference ``(mu, sigma)``."""
    if stats.dim != mu_ref.shape[0]:
        raise ValueError(f"feature dimension {stats.dim} does not match reference statistics ({mu_ref.shape[0]})")
    return frechet_distance(stats.mean(), stats.cov(), mu_ref, sigma_ref)


def dataset_image_batches(
    dataset, batch_size: int = 16, device: str | torch.device = "cpu", limit: int | None = None
) -> Iterable[Tensor]:
    """Yield the real images of a pansynth dataset as batches (Tensor[B, 3, H, W] in [-1, 1])."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    batch = []
    for index in range(count):
        image = dataset[index]["image"]
        if batch and image.shape != batch[0].shape:  # images of another size start a new batch
            yield torch.stack(batch).to(device)
            batch = []
        batch.append(image)
        if len(batch) == batch_size:
            yield torch.stack(batch).to(device)
            batch = []
    if batch:
        yield torch.stack(batch).to(device)


class FIDMetric:
    """FID of the generated images against reference statistics, or against the real images seen.

    Args:
        inception: feature extractor (uint8 images -> features), e.g. :func:`load_inception`.
        reference: ``(mu, sigma)`` from ``pansynth fid-stats``; None compares with the real
            images of the evaluated batches.
    """

    names = ("FID",)

    def __init__(self, inception: FeatureExtractor, reference: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.inception = inception
        self.reference = reference
        self.fake: FeatureStats | None = None
        self.real: FeatureStats | None = None

    @torch.no_grad()
    def update(self, batch: EvalBatch) -> None:
        count = batch.fake.shape[0]
        features = self.inception(images_to_uint8(batch.fake)).reshape(count, -1).cpu()
        self.fake = self.fake or FeatureStats(features.shape[1])
        self.fake.update(features)
        if self.reference is None:
            real = self.inception(images_to_uint8(batch.real)).reshape(count, -1).cpu()
            self.real = self.real or FeatureStats(real.shape[1])
            self.real.update(real)

    def compute(self) -> MetricResult:
        if self.fake is None or self.fake.count < 2:
            return MetricResult(skipped={"FID": "FID needs at least 2 images"})
        if self.reference is not None:
            return MetricResult(
                {"FID": fid_from_stats(self.fake, *self.reference)}, {"fid_reference": "statistics file"}
            )
        value = frechet_distance(self.fake.mean(), self.fake.cov(), self.real.mean(), self.real.cov())
        return MetricResult(
            {"FID": value}, {"fid_reference": f"the {self.real.count} real images of the evaluated split"}
        )
