"""Per-segment styles: the instance-wise style encoder and the codes it reads (paper section 5, future work).

The paper's future work is multi-modal synthesis through an encoder-decoder as in pix2pixHD,
with the panoptic-aware layers on the feature maps that decode styles. With
``Generator(..., style="instance")``:

- :class:`StyleEncoder` E maps a real image to a feature map of ``2 * style_dim`` channels.
  Its convolutions, downsampling and upsampling are panoptic-aware whenever the generator's are
  (and it has no normalisation), so a segment's features are computed from that segment's own
  pixels only.
- :func:`segment_mean` averages that map over every panoptic segment (a segment reduction over
  compact ids, :func:`segment_index`): one mean ``mu`` and one log-variance ``logvar`` per
  segment. :func:`kl_divergence` pulls them to N(0, I), so codes can be drawn without a reference.
- :func:`sample_codes` draws a segment's code from ``(seed, segment id)`` alone: a counter-based
  hash, so that redrawing one segment (another seed for its id) changes its code only, and a
  newly painted segment gets a fresh code while every other keeps its own.
- The generator takes the code map (:func:`code_map`: each pixel carries its segment's code) as
  extra input channels of its first layer and of every SPADE modulation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pansynth.choices import ConvKind, UpsampleKind
from pansynth.models.spade import PlanCache, apply_conv, is_channels_last, make_conv3x3
from pansynth.ops import Backend, panoptic_upsample
from pansynth.ops.maps import check_map, downsample_map

__all__ = [
    "StyleEncoder",
    "code_map",
    "kl_divergence",
    "reparameterize",
    "sample_codes",
    "segment_index",
    "segment_mean",
    "style_hole_features",
]

_LRELU_SLOPE = 0.2


# --------------------------------------------------------------------------- segment reductions
def segment_index(panoptic: Tensor) -> tuple[Tensor, Tensor]:
    """Compact segment numbers of a batch of panoptic maps.

    A segment is one id in one image: the same id in two images of the batch is two segments.

    Args:
        panoptic (Tensor[N, H, W]): integer ids (any int64 values).

    Returns:
        ``(index, keys)``: index (Tensor[N, H, W] int64) numbers the segments 0..S-1 in the order
        of their (image, id) keys; keys (Tensor[S, 2] int64) holds each segment's (image, id).

    Example:
        >>> index, keys = segment_index(torch.tensor([[[7, 7, -3]]]))
        >>> index.tolist(), keys.tolist()
        ([[[1, 1, 0]]], [[0, -3], [0, 7]])
    """
    check_map(panoptic, "panoptic")
    n = panoptic.shape[0]
    image = torch.arange(n, device=panoptic.device).view(n, 1, 1).expand_as(panoptic)
    pairs = torch.stack([image.reshape(-1), panoptic.long().reshape(-1)], dim=1)
    keys, inverse = torch.unique(pairs, dim=0, return_inverse=True)
    return inverse.view(panoptic.shape), keys


def segment_mean(features: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """Mean of ``features`` over every segment: Tensor[S, C].

    Args:
        features (Tensor[N, C, H, W]): a feature map (accumulated in float32 at least).
        index (Tensor[N, H, W] int64): compact segment numbers in ``[0, num_segments)`` (:func:`segment_index`).
        num_segments: S; every segment must have a pixel.
    """
    if features.dim() != 4 or tuple(index.shape) != (features.shape[0], *features.shape[2:]):
        raise ValueError(
            f"features must be (N, C, H, W) and index (N, H, W) of the same N, H, W; got "
            f"{tuple(features.shape)} and {tuple(index.shape)}"
        )
    channels = features.shape[1]
    dtype = torch.promote_types(features.dtype, torch.float32)
    flat = features.permute(0, 2, 3, 1).reshape(-1, channels).to(dtype)
    flat_index = index.reshape(-1)
    sums = flat.new_zeros(num_segments, channels).index_add_(0, flat_index, flat)
    counts = torch.bincount(flat_index, minlength=num_segments).to(dtype)
    return sums / counts.unsqueeze(1)


def code_map(codes: Tensor, index: Tensor) -> Tensor:
    """Spread one code per segment over its pixels.

    Args:
        codes (Tensor[S, D]): a code per compact segment number.
        index (Tensor[N, H, W] int64): compact segment numbers.

    Returns:
        Tensor[N, D, H, W]: each pixel carries its segment's code.
    """
    return codes[index].permute(0, 3, 1, 2)


def kl_divergence(mu: Tensor, logvar: Tensor, num_images: int = 1) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) of all the codes of a batch, per image.

    ``-0.5 * sum_s sum_d (1 + logvar - mu^2 - exp(logvar)) / num_images`` (Kingma & Welling, 2014,
    appendix B): SPADE's encoder loss (summed over the code channels, per image) with a code per
    segment, so every segment's code is pulled to N(0, I) with the same weight however many
    segments its image has.

    Args:
        mu, logvar (Tensor[S, D]): the codes of the batch's segments.
        num_images: the batch size N.

    Returns:
        a 0-d tensor (float32 at least).
    """
    dtype = torch.promote_types(mu.dtype, torch.float32)
    mu, logvar = mu.to(dtype), logvar.to(dtype)
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum() / num_images


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    """A code drawn from N(mu, exp(logvar)) as ``mu + eps * exp(logvar / 2)``, eps from torch's global generator.

    Differentiable in mu and logvar (Kingma & Welling's reparameterisation); the global generator is
    the one training checkpoints save, so a resumed run draws the same codes.
    """
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


# --------------------------------------------------------------------------- sampling by (seed, id)
_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_MIX_1 = _U64(0xBF58476D1CE4E5B9)
_MIX_2 = _U64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea & Flood 2014): a bijective 64-bit hash, wrapping arithmetic."""
    x = x ^ (x >> _U64(30))
    x = x * _MIX_1
    x = x ^ (x >> _U64(27))
    x = x * _MIX_2
    return x ^ (x >> _U64(31))


def sample_codes(ids: Tensor | Sequence[int], dim: int, seed: int | Tensor | Sequence[int] = 0) -> Tensor:
    """Standard normal codes, one per segment id, each a function of its own (seed, id) only.

    Counter-based: the d-th value of id ``i`` with seed ``s`` is Box-Muller on two uniforms hashed
    from ``(s, i, 2d)`` and ``(s, i, 2d + 1)``. The same (seed, id) gives the same code in any map,
    batch or order, on any machine.

    Args:
        ids (Tensor[S] or sequence): segment ids (any int64 values).
        dim: code channels D.
        seed: one seed for all ids, or one per id (Tensor[S] / sequence, e.g. a restyled segment's own seed).

    Returns:
        Tensor[S, D] float32 on the CPU.

    Example:
        >>> a = sample_codes([5, 9], 4, seed=1)
        >>> torch.equal(a[1], sample_codes([9], 4, seed=1)[0])
        True
    """
    ids_np = torch.as_tensor(ids, dtype=torch.int64).cpu().numpy().reshape(-1)
    seeds_np = torch.as_tensor(seed, dtype=torch.int64).cpu().numpy().reshape(-1)
    if seeds_np.size not in (1, ids_np.size):
        raise ValueError(f"seed must be one int or one per id ({ids_np.size}), got {seeds_np.size} values")
    seeds_np = np.broadcast_to(seeds_np, ids_np.shape)
    with np.errstate(over="ignore"):
        key = _mix(_mix(seeds_np.astype(_U64) * _GOLDEN + _U64(1)) ^ ids_np.astype(_U64))
        counters = (np.arange(2 * dim, dtype=_U64) + _U64(1)) * _GOLDEN
        bits = _mix(key[:, None] + counters[None, :])
    uniform = (bits >> _U64(11)).astype(np.float64) * 2.0**-53  # [0, 1)
    radius = np.sqrt(-2.0 * np.log1p(-uniform[:, 0::2]))  # 1 - u in (0, 1]
    normal = radius * np.cos(2.0 * np.pi * uniform[:, 1::2])
    return torch.from_numpy(normal.astype(np.float32))


# --------------------------------------------------------------------------- the encoder
class StyleEncoder(nn.Module):
    """pix2pixHD's instance-wise feature encoder, panoptic-aware: image -> per-segment (mu, logvar).

    An encoder-decoder with skip connections (a U-Net): a stem convolution, ``num_down`` stride-2
    stages, as many x2 upsampling stages, each taking the skip of its scale, and a head giving
    ``2 * style_dim`` channels, averaged over every segment. With ``conv="panoptic"`` every
    convolution is eq. 2's partial convolution; a stride-2 stage is the convolution at the finer
    scale read at ``[::2, ::2]`` (the maps the generator uses at the coarser scale). With
    ``upsample="panoptic"`` the upsampling is Algorithm 1 (a pixel whose segment is new at the
    finer scale gets zero there; its skip still carries its own features). The only normalisation
    is per pixel (each pixel's feature vector scaled to unit RMS, ProGAN's pixel norm): no statistics
    are shared between pixels, so nothing mixes segments and a segment's code depends on its own
    pixels only. It is needed: eq. 2 rescales a window by k²/sum(M), up to 9x per layer on a
    one-pixel segment, which would compound over unnormalised layers.

    Args:
        style_dim: code channels D.
        channels: width of the stem; it doubles at each stride-2 stage, up to ``4 * channels``.
        num_down: stride-2 stages (the map's height and width must be multiples of 2**num_down).
        conv: ``"panoptic"`` | ``"standard"``; upsample: ``"panoptic"`` | ``"nearest"``.
        backend: engine of the panoptic layers.

    Shapes:
        forward(image (Tensor[N, 3, H, W]), panoptic (Tensor[N, H, W]) int) -> (mu, logvar, index, keys)
        with mu, logvar (Tensor[S, D]) per segment and index, keys from :func:`segment_index`.

    Example:
        >>> encoder = StyleEncoder(4, channels=4, num_down=2)
        >>> ids = torch.zeros(1, 8, 8, dtype=torch.long); ids[:, :, 4:] = 3
        >>> mu, logvar, index, keys = encoder(torch.randn(1, 3, 8, 8), ids)
        >>> mu.shape, keys[:, 1].tolist()
        (torch.Size([2, 4]), [0, 3])
    """

    def __init__(
        self,
        style_dim: int,
        channels: int = 16,
        num_down: int = 3,
        conv: ConvKind = "panoptic",
        upsample: UpsampleKind = "panoptic",
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.style_dim = style_dim
        self.num_down = num_down
        self.upsample = upsample
        self.backend = backend
        widths = [min(channels * 2**level, 4 * channels) for level in range(num_down + 1)]
        self.stem = make_conv3x3(3, widths[0], conv, backend)
        self.down = nn.ModuleList(make_conv3x3(widths[i], widths[i + 1], conv, backend) for i in range(num_down))
        self.up = nn.ModuleList(
            make_conv3x3(widths[i + 1] + widths[i], widths[i], conv, backend) for i in range(num_down)
        )
        self.head = make_conv3x3(widths[0], 2 * style_dim, conv, backend)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation for the leaky ReLUs; a quieter head (codes near N(0, small) at the start)."""
        for module in self.modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, Tensor) and weight.dim() == 4:
                nn.init.kaiming_normal_(weight, a=_LRELU_SLOPE, nonlinearity="leaky_relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.head.weight.mul_(0.1)

    def feature_map(self, image: Tensor, panoptic: Tensor, plans: PlanCache | None = None) -> Tensor:
        """The map averaged per segment: Tensor[N, 2 * style_dim, H, W] (mu channels first)."""
        height, width = image.shape[-2:]
        factor = 2**self.num_down
        if height % factor or width % factor:
            raise ValueError(
                f"the style encoder needs images whose height and width are multiples of {factor}, got {height}x{width}"
            )
        maps = [downsample_map(panoptic, (height // 2**level, width // 2**level)) for level in range(self.num_down + 1)]
        x = _activate(apply_conv(self.stem, image, maps[0], plans))
        skips = [x]
        for level, conv in enumerate(self.down):
            x = _activate(apply_conv(conv, x, maps[level], plans))
            # the stride-2 convolution, panoptic-aware at the finer scale, read at [::2, ::2]; on NHWC
            # features as a 1x1 pooling (the same values), whose output and gradient stay dense NHWC
            x = F.avg_pool2d(x, 1, stride=2) if is_channels_last(x) else x[..., ::2, ::2]
            skips.append(x)
        for level in reversed(range(self.num_down)):
            if self.upsample == "panoptic":
                x, _ = panoptic_upsample(x, maps[level + 1], maps[level], backend=self.backend)
            else:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = torch.cat([x.to(skips[level].dtype), skips[level]], dim=1)
            x = _activate(apply_conv(self.up[level], x, maps[level], plans))
        return apply_conv(self.head, x, maps[0], plans)

    def forward(
        self, image: Tensor, panoptic: Tensor, plans: PlanCache | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if image.dim() != 4 or image.shape[1] != 3 or not image.is_floating_point():
            raise ValueError(f"image must be an (N, 3, H, W) floating-point tensor, got {tuple(image.shape)}")
        check_map(panoptic, "panoptic")
        if tuple(panoptic.shape) != (image.shape[0], *image.shape[2:]):
            raise ValueError(
                f"the image {tuple(image.shape)} and its panoptic map {tuple(panoptic.shape)} differ in size"
            )
        panoptic = panoptic.long()
        index, keys = segment_index(panoptic)
        stats = segment_mean(self.feature_map(image, panoptic, plans), index, len(keys))
        mu, logvar = stats.split(self.style_dim, dim=1)
        return mu, logvar, index, keys

    def extra_repr(self) -> str:
        return f"style_dim={self.style_dim}, num_down={self.num_down}, upsample={self.upsample!r}"


def _activate(x: Tensor) -> Tensor:
    """Leaky ReLU, then pixel norm: every pixel's feature vector to unit root mean square."""
    x = F.leaky_relu(x, _LRELU_SLOPE)
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


# --------------------------------------------------------------------------- hole filling of the code channels
def style_hole_features(codes: Tensor, panoptic: Tensor, positions: Tensor, weight: Tensor, partial: bool) -> Tensor:
    """The code channels' part of the first layer (no bias) at ``positions``: Tensor[n, O].

    The generator's first layer reads ``label ⊕ code map``; being linear, it is the label part
    (filled by :class:`~pansynth.models.hole_fill.HoleFillingUpsample`) plus this part, the
    convolution of the code map by its weight columns, at the hole pixels only: eq. 2's partial
    convolution (``partial``) or a zero-padded plain one.

    Args:
        codes (Tensor[N, D, H, W]): the code map at this scale.
        panoptic (Tensor[N, H, W]): ids at this scale.
        positions (Tensor[n, 3]): (image, y, x) of the pixels.
        weight (Tensor[O, D, k, k]): the code columns of the first layer.
    """
    kernel = weight.shape[-1]
    radius = kernel // 2
    height, width = panoptic.shape[-2:]
    offsets = torch.arange(-radius, radius + 1, device=positions.device)
    batch = positions[:, 0].view(-1, 1, 1)
    rows = positions[:, 1].view(-1, 1, 1) + offsets.view(1, -1, 1)  # (n, k, 1)
    cols = positions[:, 2].view(-1, 1, 1) + offsets.view(1, 1, -1)  # (n, 1, k)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)  # (n, k, k)
    rows_c, cols_c = rows.clamp(0, height - 1), cols.clamp(0, width - 1)
    mask = inside
    if partial:
        centre = panoptic[positions[:, 0], positions[:, 1], positions[:, 2]].view(-1, 1, 1)
        mask = inside & (panoptic[batch, rows_c, cols_c] == centre)
    window = codes.permute(0, 2, 3, 1)[batch, rows_c, cols_c]  # (n, k, k, D)
    window = window * mask.unsqueeze(-1).to(window.dtype)
    out = window.permute(0, 3, 1, 2).reshape(len(positions), -1) @ weight.reshape(weight.shape[0], -1).t()
    if partial:
        out = out * (kernel * kernel / mask.sum(dim=(1, 2)).to(out.dtype)).unsqueeze(1)
    return out


def codes_for_ids(
    ids: Tensor,
    dim: int,
    seed: int = 0,
    codes: Mapping[int, Tensor] | None = None,
    restyle: Mapping[int, int] | None = None,
) -> Tensor:
    """One code per id (Tensor[S, D] float32, CPU): ``codes`` where given, else drawn from (seed, id).

    ``restyle`` maps ids to their own seeds; a restyled id is drawn with its seed even when
    ``codes`` holds a code for it.
    """
    ids_list = [int(v) for v in ids.reshape(-1).tolist()]
    restyle = dict(restyle or {})
    seeds = torch.tensor([int(restyle.get(i, seed)) for i in ids_list], dtype=torch.int64)
    drawn = sample_codes(ids_list, dim, seeds)
    if codes:
        for row, identifier in enumerate(ids_list):
            if identifier in codes and identifier not in restyle:
                code = torch.as_tensor(codes[identifier], dtype=torch.float32).reshape(-1)
                if code.numel() != dim:
                    raise ValueError(f"the code of segment {identifier} has {code.numel()} values, expected {dim}")
                drawn[row] = code
    return drawn
