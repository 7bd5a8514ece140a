"""Codebook statistics (``CodebookUsage``) and image-quality metrics: ``psnr``, ``ssim``, ``frechet_distance``
with the streaming ``FeatureStatistics`` and ``FrechetDistance`` in the feature space of any extractor module.

Metrics take modules: which networks exist (the shipped Fashion-MNIST classifier, ...) and how they load is
``fullvq_hf.evaluation``'s business (``fullvq_hf.evaluation.load_feature_extractor``)."""

from __future__ import annotations

import math
import os
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


class CodebookUsage:
    """Exact codebook usage: a count per code over any number of batches (no FIFO window).

    ``update(indices)`` adds a batch of token ids (any shape); ``compute()`` all-reduces the counts across
    processes when ``torch.distributed`` is initialised (every rank must call it) and returns:
    ``usage`` (fraction of codes hit at least once), ``perplexity`` (exp of the entropy of the code histogram),
    ``dead_codes`` (codes never hit), ``num_tokens`` and ``codebook_size``.
    """

    def __init__(self, codebook_size: int, device: torch.device | str | None = None):
        if codebook_size < 1:
            raise ValueError(f"codebook_size must be positive, got {codebook_size}.")
        self.codebook_size = codebook_size
        self.counts = torch.zeros(codebook_size, dtype=torch.long, device=device)

    def reset(self) -> None:
        self.counts.zero_()

    @torch.no_grad()
    def update(self, indices: torch.Tensor) -> None:
        flat = indices.reshape(-1).to(device=self.counts.device, dtype=torch.long)
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.codebook_size):
            raise ValueError(
                f"Token ids must lie in [0, {self.codebook_size - 1}]; got values in [{int(flat.min())}, {int(flat.max())}]."
            )
        self.counts += torch.bincount(flat, minlength=self.codebook_size)

    def synced_counts(self) -> torch.Tensor:
        """Counts summed over all processes (a copy; the local counts are untouched)."""
        counts = self.counts.clone()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        return counts

    def compute(self, sync: bool = True) -> dict[str, float]:
        counts = self.synced_counts() if sync else self.counts
        total = int(counts.sum())
        used = int((counts > 0).sum())
        if total:
            probs = counts.double() / total
            nz = probs[probs > 0]
            perplexity = float(torch.exp(-(nz * nz.log()).sum()))
        else:
            perplexity = 0.0
        return {
            "usage": used / self.codebook_size,
            "perplexity": perplexity,
            "dead_codes": self.codebook_size - used,
            "used_codes": used,
            "num_tokens": total,
            "codebook_size": self.codebook_size,
        }


# ----------------------------------------------------------------------------------------------------------------
# Image-quality metrics: PSNR, SSIM, and Frechet distances in the feature space of a pluggable extractor.
# ----------------------------------------------------------------------------------------------------------------

def _check_image_pair(x: torch.Tensor, y: torch.Tensor, data_range: float) -> None:
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a (B, C, H, W) image tensor, got {shape}; add a batch axis with {name}[None].")
        if not t.is_floating_point():
            raise ValueError(f"{name} has dtype {t.dtype}; pass float pixels (in [-1, 1] for the default data_range=2).")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}.")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive (max - min of the pixel range, 2 for [-1, 1]), got {data_range}.")


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB: ``10 log10(data_range^2 / MSE)``.

    Args:
        x, y: Images (B, C, H, W), by default in [-1, 1] (``data_range=2``, the peak-to-peak value).

    Returns:
        (B,) float tensor (float64 for float64 input, else float32). Identical images have MSE 0 and give
        ``+inf``; filter those (``torch.isfinite``) before averaging over a data set.
    """
    _check_image_pair(x, y, data_range)
    dtype = _work_dtype(x)
    mse = (x.to(dtype) - y.to(dtype)).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_window(window_size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r = window_size // 2
    coords = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, window_size: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004): Gaussian-weighted local means, variances and covariance
    (population, K1=0.01, K2=0.03), the SSIM map over the "valid" region (no padding: a border of
    ``window_size // 2`` pixels is left out), averaged over pixels and channels.

    Equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range, channel_axis=...)`` for the default 11-pixel window.

    Args:
        x, y: Images (B, C, H, W), by default in [-1, 1]; H and W must be at least ``window_size``.
        window_size: Odd width of the Gaussian window (truncated and renormalised).
        sigma: Its standard deviation in pixels.

    Returns:
        (B,) float tensor in [-1, 1]; 1 for identical images.
    """
    _check_image_pair(x, y, data_range)
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be a positive odd number, got {window_size}.")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}.")
    b, c, h, w = x.shape
    if h < window_size or w < window_size:
        raise ValueError(
            f"Images of {h}x{w} pixels are smaller than the {window_size}x{window_size} SSIM window; "
            "pass a smaller odd window_size (and sigma) or larger images."
        )
    dtype = _work_dtype(x)
    g = _gaussian_window(window_size, sigma, dtype, x.device)
    kh = g.view(1, 1, window_size, 1).expand(c, 1, window_size, 1)
    kw = g.view(1, 1, 1, window_size).expand(c, 1, 1, window_size)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian, per channel, valid region only
        return nn.functional.conv2d(nn.functional.conv2d(t, kh, groups=c), kw, groups=c)

    x, y = x.to(dtype), y.to(dtype)
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov_xy = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3))


def _as_float64(a: torch.Tensor | np.ndarray, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().to(torch.float64).numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}.")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has NaN or inf entries; check the features it was computed from.")
    return a


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix; rounding's negative eigenvalues -> 0."""
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    # tr sqrtm(s1 s2) = tr sqrtm(s1^1/2 s2 s1^1/2) = sum of the singular values of s1^1/2 s2^1/2 (its eigenvalues
    # are the squares of those). The SVD keeps small ones accurate, where eigenvalues of the product would lose
    # half the digits (sqrt of rounding noise), and it is real by construction.
    return float(np.linalg.svd(_sqrt_psd(s1) @ _sqrt_psd(s2), compute_uv=False).sum())


def frechet_distance(
    mu1: torch.Tensor | np.ndarray,
    sigma1: torch.Tensor | np.ndarray,
    mu2: torch.Tensor | np.ndarray,
    sigma2: torch.Tensor | np.ndarray,
    eps: float = 1e-6,
) -> float:
    """Frechet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2), as in FID:
    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr sqrtm(sigma1 @ sigma2)``.

    Computed in float64. The covariances are symmetrised, and ``tr sqrtm(sigma1 @ sigma2)`` is taken as the sum of
    singular values of ``sqrt(sigma1) @ sqrt(sigma2)`` (symmetric eigendecompositions), which is exact for
    singular covariances too (e.g. fewer samples than feature dimensions). Should a decomposition still fail or
    give non-finite values, ``eps`` is added to both diagonals and it is retried (as pytorch-fid does).
    Rounding can make the result a hair below zero; it is clamped to 0.

    Args:
        mu1, mu2: Means (D,).
        sigma1, sigma2: Covariances (D, D).

    Returns:
        The distance, a Python float.
    """
    m1 = np.asarray(mu1.detach().cpu() if isinstance(mu1, torch.Tensor) else mu1)
    if m1.ndim != 1:
        raise ValueError(f"mu1 must be a vector (D,), got shape {m1.shape}.")
    d = m1.shape[0]
    m1 = _as_float64(m1, "mu1", (d,))
    m2 = _as_float64(mu2, "mu2", (d,))
    s1 = _as_float64(sigma1, "sigma1", (d, d))
    s2 = _as_float64(sigma2, "sigma2", (d, d))
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    try:
        tr_covmean = _trace_sqrt_product(s1, s2)
    except np.linalg.LinAlgError:
        tr_covmean = math.nan
    if not math.isfinite(tr_covmean):
        offset = eps * np.eye(d)
        tr_covmean = _trace_sqrt_product(s1 + offset, s2 + offset) - d * eps  # trace terms get the same eps
    diff = m1 - m2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(value, 0.0)


class FeatureStatistics:
    """Streaming mean and covariance of (N, dim) features over any number of batches.

    Keeps the sample count, the sum and the sum of outer products in float64 (exact enough for features of
    ordinary magnitude; no per-batch means are averaged). ``compute()`` (and the ``mean`` / ``cov`` properties,
    which call it) all-reduce them across processes when ``torch.distributed`` is initialised, so every rank must
    call it. The covariance is the unbiased one (divided by N - 1), as ``numpy.cov`` and FID implementations use.
    """

    def __init__(self, dim: int, device: torch.device | str | None = None):
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}.")
        self.dim = dim
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.sum_outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def reset(self) -> None:
        self.count.zero_()
        self.sum.zero_()
        self.sum_outer.zero_()

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> None:
        """Add a batch of features (N, dim)."""
        if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[1] != self.dim:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"Expected features of shape (N, {self.dim}), got {shape}; flatten them to (N, dim) first.")
        f = features.detach().to(device=self.sum.device, dtype=torch.float64)
        if not torch.isfinite(f).all():
            raise ValueError("Features contain NaN or inf; check the images and the feature extractor.")
        self.count += f.shape[0]
        self.sum += f.sum(0)
        self.sum_outer += f.T @ f

    @property
    def num_samples(self) -> int:
        """Samples seen by this process (not synchronised)."""
        return int(self.count)

    def compute(self, sync: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (dim,) and unbiased covariance (dim, dim), float64, over all processes when ``sync``."""
        packed = torch.cat([self.count.view(1), self.sum, self.sum_outer.reshape(-1)])
        if sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        n = float(packed[0])
        if n < 2:
            raise ValueError(f"A covariance needs at least 2 samples, got {int(n)}; call update() with more features.")
        total = packed[1 : 1 + self.dim]
        outer = packed[1 + self.dim :].view(self.dim, self.dim)
        mean = total / n
        cov = (outer - n * torch.outer(mean, mean)) / (n - 1)
        return mean, (cov + cov.T) / 2

    @property
    def mean(self) -> torch.Tensor:
        """Synchronised mean (dim,), float64 (a collective call under torch.distributed)."""
        return self.compute()[0]

    @property
    def cov(self) -> torch.Tensor:
        """Synchronised unbiased covariance (dim, dim), float64 (a collective call under torch.distributed)."""
        return self.compute()[1]


@runtime_checkable
class FeatureExtractor(Protocol):
    """What ``FrechetDistance`` needs: a module (usually an ``nn.Module``) mapping images in [-1, 1]
    (B, C, H, W) to features (B, F). An optional ``feature_dim`` attribute gives F up front."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class FrechetDistance:
    """Frechet distance between real and generated images in an extractor's feature space (FID with Inception
    features; e.g. ``FrechetDistance(fullvq_hf.evaluation.load_feature_extractor("fashion-mnist-classifier"))``).

    ``update(real=..., fake=...)`` runs the extractor (no gradient, in eval mode, on its own device) on either or
    both batches of images in [-1, 1] (B, C, H, W) and accumulates ``FeatureStatistics``; ``compute()`` synchronises
    them across processes (every rank must call it) and returns ``frechet_distance`` of the two Gaussians.
    Under torch.distributed give ``feature_dim`` (or use an extractor with a ``feature_dim`` attribute) so that
    a rank that saw no images can still take part.

    Args:
        extractor: An ``nn.Module`` (or callable) of the ``FeatureExtractor`` kind.
        feature_dim: F, if the extractor does not say (otherwise learned from the first batch).
    """

    def __init__(self, extractor: nn.Module, feature_dim: int | None = None):
        if isinstance(extractor, (str, os.PathLike)):
            raise ValueError(
                f"FrechetDistance takes the extractor module, not a name ({os.fspath(extractor)!r}); load a named one "
                "with fullvq_hf.evaluation.load_feature_extractor(name) and pass the module."
            )
        if not callable(extractor):
            raise ValueError(
                f"extractor must be a module mapping images (B, C, H, W) to features (B, F), got {type(extractor).__name__}."
            )
        if isinstance(extractor, nn.Module):
            extractor.eval()
        self.extractor = extractor
        self.feature_dim = feature_dim if feature_dim is not None else getattr(extractor, "feature_dim", None)
        self.real: FeatureStatistics | None = None
        self.fake: FeatureStatistics | None = None
        if self.feature_dim is not None:
            self.real, self.fake = FeatureStatistics(self.feature_dim), FeatureStatistics(self.feature_dim)

    def reset(self, real: bool = True) -> None:
        """Forget the generated images' statistics, and the real ones too unless ``real=False`` (to reuse them)."""
        if self.fake is not None:
            self.fake.reset()
        if real and self.real is not None:
            self.real.reset()

    @torch.no_grad()
    def _features(self, images: torch.Tensor, which: str) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"{which} must be float images (B, C, H, W) in [-1, 1], got {shape}.")
        params = list(self.extractor.parameters()) if isinstance(self.extractor, nn.Module) else []
        if params:
            images = images.to(params[0].device)
        feats = self.extractor(images)
        if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or feats.shape[0] != images.shape[0]:
            shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
            raise ValueError(
                f"The feature extractor must return (B, F) features for (B, C, H, W) images; for {which} images of "
                f"shape {tuple(images.shape)} it returned {shape}. Pool or flatten its output to (B, F)."
            )
        return feats

    def _stats(self, which: str, dim: int) -> FeatureStatistics:
        if self.feature_dim is None:
            self.feature_dim = dim
            self.real, self.fake = FeatureStatistics(dim), FeatureStatistics(dim)
        stats = self.real if which == "real" else self.fake
        assert stats is not None
        return stats

    def update(self, real: torch.Tensor | None = None, fake: torch.Tensor | None = None) -> None:
        """Add a batch of real images and/or a batch of generated (reconstructed) images, (B, C, H, W) in [-1, 1]."""
        if real is None and fake is None:
            raise ValueError("Pass real=... and/or fake=... images to update().")
        for which, images in (("real", real), ("fake", fake)):
            if images is not None:
                feats = self._features(images, which)
                self._stats(which, feats.shape[1]).update(feats)

    def compute(self) -> float:
        """The Frechet distance between the real and generated feature Gaussians (needs >= 2 images of each)."""
        if self.real is None or self.fake is None:
            raise ValueError("No images seen yet: call update(real=..., fake=...) first.")
        mu_r, sigma_r = self.real.compute()
        mu_f, sigma_f = self.fake.compute()
        return frechet_distance(mu_r, sigma_r, mu_f, sigma_f)
