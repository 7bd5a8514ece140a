"""The FID Inception network (Inception-v3 as ported from TensorFlow's ``inception-2015-12-05`` graph, the network
behind every published FID and IS), the Inception Score, and Inception FID in one streaming metric.

Architecture (Szegedy et al. 2016, in the FID variant used by pytorch-fid and torch-fidelity): a stem of
conv-BN-ReLU blocks and two max-pools, three InceptionA blocks (Mixed_5b-d), a grid reduction (Mixed_6a), four
InceptionC blocks with factorised 7x7 convolutions (Mixed_6b-e), a second reduction (Mixed_7a), two InceptionE
blocks (Mixed_7b-c), a global average pool to 2048-d features and a 1008-way linear classifier. It differs from
torchvision's ImageNet Inception-v3 in three places, all facts of the TensorFlow graph: the pool branches of the
A, C and first E blocks average without counting the zero padding, the last E block max-pools in its pool branch,
and the classifier has 1008 outputs. BatchNorm eps is 1e-3; convolutions have no bias.

Weights are never downloaded. ``FIDInceptionV3.from_pretrained`` reads a local file, a folder or a Hub repo in
the key layout of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (identical to torch-fidelity's
``weights-inception-2015-12-05-6726825d.pth``, and to torchvision's ``Inception3`` names without ``AuxLogits``):
``Conv2d_1a_3x3.conv.weight``, ``Conv2d_1a_3x3.bn.{weight,bias,running_mean,running_var}``, ...,
``Mixed_7c.branch_pool.bn.running_var``, ``fc.weight`` (1008, 2048), ``fc.bias`` (1008,).
``save_pretrained`` writes the same keys to safetensors (e.g. to put the converted file on a Hub repo).

Preprocessing (``protocol``), for images in [-1, 1]:
  - ``"torch-fidelity"`` (default; what FVQ's and LlamaGen's evaluation scripts report): 8-bit pixel values
    resized to 299x299 with TensorFlow 1.x's bilinear resize (source coordinate ``dst * in / out``, no half-pixel
    offset), then ``(v - 128) / 128``;
  - ``"pytorch-fid"``: pixels in [0, 1] resized with ``F.interpolate(bilinear, align_corners=False)``, then
    ``2 x - 1``.
With ``quantize=True`` (default) the images are first rounded to 8 bits, as both tools read saved image files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..metrics import FeatureStatistics, frechet_distance
from ._weights import read_state_dict, resolve_weights_file

INCEPTION_WEIGHTS_NAMES = (
    "pt_inception-2015-12-05-6726825d.pth",  # pytorch-fid's release file
    "weights-inception-2015-12-05-6726825d.pth",  # torch-fidelity's copy (same bytes)
    "fid_inception_v3.safetensors",  # what save_pretrained writes into a folder
)
INCEPTION_PROTOCOLS = ("torch-fidelity", "pytorch-fid")
INCEPTION_SIZE = 299


# -------------------------------------------------------------------------------------------------------- layers
class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's SAME average pool divides by the number of real (not padded) pixels in the window
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg-pool -> 1x1. Out: 224 + pool_features channels."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([b1, b5, b3, bp], dim=1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: stride-2 3x3 | 1x1 -> 3x3 -> stride-2 3x3 | stride-2 max-pool. Out: 480 + in."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        b3d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, b3d, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionC(nn.Module):
    """17x17 block with 7x7 convolutions factorised into 1x7 and 7x1. Out: 768 channels."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        row, col = {"kernel_size": (1, 7), "padding": (0, 3)}, {"kernel_size": (7, 1), "padding": (3, 0)}
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b7d = layer(b7d)
        bp = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([b1, b7, b7d, bp], dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 1x1 -> stride-2 3x3 | 1x1 -> 1x7 -> 7x1 -> stride-2 3x3 | max-pool. Out: 512 + in."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionE(nn.Module):
    """8x8 block with expanded filter banks (1x3 and 3x1 side by side). Out: 2048 channels.

    ``pool``: ``"avg"`` (padding not counted; Mixed_7b) or ``"max"`` (Mixed_7c: the TensorFlow graph max-pools there).
    """

    def __init__(self, in_channels: int, pool: str = "avg"):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}.")
        self.pool = pool
        row, col = {"kernel_size": (1, 3), "padding": (0, 1)}, {"kernel_size": (3, 1), "padding": (1, 0)}
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, **row)
        self.branch3x3_2b = BasicConv2d(384, 384, **col)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, **row)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, **col)
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)
        b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3d = torch.cat([self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)], dim=1)
        pooled = (
            _avg_pool_3x3(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        )
        return torch.cat([b1, b3, b3d, self.branch_pool(pooled)], dim=1)


# --------------------------------------------------------------------------------------------------- resizing
def resize_bilinear_tf1(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize as TensorFlow 1.x ``tf.image.resize_bilinear(align_corners=False)`` computes it (the resize
    inside the FID Inception graph): output pixel ``i`` samples the input at ``i * in / out`` (no half-pixel
    offset), between its floor and the next pixel (clamped at the border).

    Args:
        images: (B, C, H, W) float.
        size: Output side, or (height, width).

    Returns:
        (B, C, out_h, out_w), same dtype.
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"resize_bilinear_tf1 needs float (B, C, H, W) images, got {tuple(images.shape)} {images.dtype}."
        )
    out_h, out_w = (size, size) if isinstance(size, int) else size

    def axis(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        frac = (src - lo.double()).to(device=images.device, dtype=images.dtype)
        return lo.to(images.device), hi.to(images.device), frac

    y0, y1, fy = axis(images.shape[-2], out_h)
    x0, x1, fx = axis(images.shape[-1], out_w)
    top, bottom = images.index_select(-2, y0), images.index_select(-2, y1)
    rows = top + (bottom - top) * fy.view(-1, 1)
    left, right = rows.index_select(-1, x0), rows.index_select(-1, x1)
    return left + (right - left) * fx


# ------------------------------------------------------------------------------------------------------ network
class FIDInceptionV3(nn.Module):
    """The FID Inception-v3 (see the module docstring), frozen and in eval mode.

    ``forward(images)`` maps images in [-1, 1] (B, 3 or 1, H, W) (grey is repeated to RGB) to the 2048-d pool
    features used by FID, so the module plugs into ``fullvq_hf.metrics.FrechetDistance``;
    ``features_and_logits(images)`` also gives the 1008-class logits used by the Inception Score.

    A bare ``FIDInceptionV3()`` has random weights (for tests); use ``from_pretrained`` for real numbers.

    Args:
        protocol: ``"torch-fidelity"`` or ``"pytorch-fid"`` preprocessing (module docstring).
        quantize: Round images to 8-bit values first, as the reference tools read saved image files.
    """

    feature_dim = 2048
    num_classes = 1008

    def __init__(self, protocol: str = "torch-fidelity", quantize: bool = True):
        super().__init__()
        if protocol not in INCEPTION_PROTOCOLS:
            raise ValueError(f"protocol must be one of {INCEPTION_PROTOCOLS}, got {protocol!r}.")
        self.protocol, self.quantize = protocol, quantize
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)  # 299 -> 149
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)  # -> 147
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)  # -> 147, then max-pool -> 73
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)  # -> 71, then max-pool -> 35
        self.Mixed_5b = InceptionA(192, pool_features=32)  # -> 256 x 35 x 35
        self.Mixed_5c = InceptionA(256, pool_features=64)  # -> 288
        self.Mixed_5d = InceptionA(288, pool_features=64)  # -> 288
        self.Mixed_6a = InceptionB(288)  # -> 768 x 17 x 17
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)  # -> 1280 x 8 x 8
        self.Mixed_7b = InceptionE(1280, pool="avg")  # -> 2048
        self.Mixed_7c = InceptionE(2048, pool="max")  # -> 2048 x 8 x 8, then global average -> 2048
        self.fc = nn.Linear(2048, 1008)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FIDInceptionV3:
        """Always stays in eval mode (BatchNorm uses the stored statistics)."""
        return super().train(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (B, 3 or 1, H, W) -> the network's input (B, 3, 299, 299) in [-1, 1]."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"FIDInceptionV3 expects (B, 3 or 1, H, W) images in [-1, 1], got {shape}.")
        if not images.is_floating_point():
            raise ValueError(f"FIDInceptionV3 expects float images in [-1, 1], got dtype {images.dtype}.")
        dtype = self.fc.weight.dtype
        images = images.to(device=self.fc.weight.device, dtype=dtype).expand(-1, 3, -1, -1)
        values = (images + 1) * 127.5  # 8-bit pixel scale
        if self.quantize:
            values = values.round().clamp(0, 255)
        if self.protocol == "torch-fidelity":
            return (resize_bilinear_tf1(values, INCEPTION_SIZE) - 128) / 128
        x = F.interpolate(
            values / 255, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False
        )
        return 2 * x - 1

    def pool_features(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed input (B, 3, 299, 299) -> 2048-d pool features (B, 2048)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (B, C, H, W) -> FID features (B, 2048)."""
        return self.pool_features(self.preprocess(images))

    def features_and_logits(
        self, images: torch.Tensor, logits_bias: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2048) pool features and (B, 1008) logits. The Inception Score reference (and torch-fidelity's
        ``logits_unbiased``) leaves out the classifier bias: ``logits = features @ fc.weight.T``; pass
        ``logits_bias=True`` for ``fc(features)``."""
        feats = self.forward(images)
        logits = F.linear(feats, self.fc.weight, self.fc.bias if logits_bias else None)
        return feats, logits

    # ------------------------------------------------------------------------------------------------ weights
    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        filename: str | None = None,
        protocol: str = "torch-fidelity",
        quantize: bool = True,
        revision: str | None = None,
        option: str = "FIDInceptionV3.from_pretrained",
    ) -> FIDInceptionV3:
        """Load FID Inception weights from a local file (``.pth`` read with ``torch.load(weights_only=True)``, or
        ``.safetensors``), a folder holding one of ``INCEPTION_WEIGHTS_NAMES``, or a Hub repo (``"owner/name"``
        with ``filename``, or ``"owner/name/file"``). Keys as pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``
        (module docstring). ``option`` names the setting in error messages (e.g. ``--inception-weights``)."""
        path = resolve_weights_file(
            source, INCEPTION_WEIGHTS_NAMES, "FID Inception", option, filename, revision
        )
        state_dict = read_state_dict(path, "FID Inception")
        with torch.device("meta"):  # no random init of 24M parameters that are overwritten next
            model = cls(protocol=protocol, quantize=quantize)
        model = model.to_empty(device="cpu")
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.num_batches_tracked.zero_()
        model.load_weights(state_dict, source=str(path))  # strict: every other tensor is filled or it raises
        return model

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], source: str = "the state dict") -> None:
        """Copy a pytorch-fid-layout state dict in, strictly: every tensor present (``num_batches_tracked`` is
        optional), no unknown keys (torchvision's ``AuxLogits.*`` are ignored), equal shapes."""
        own = {k: v for k, v in self.state_dict().items() if not k.endswith("num_batches_tracked")}
        given = {
            k.removeprefix("module."): v
            for k, v in state_dict.items()
            if not k.endswith("num_batches_tracked")
            and not k.removeprefix("module.").startswith("AuxLogits.")
        }
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        wrong = [f"{k} {tuple(given[k].shape)} (expected {tuple(own[k].shape)})" for k in own
                 if k in given and tuple(given[k].shape) != tuple(own[k].shape)]  # fmt: skip
        if missing or unexpected or wrong:
            hint = ""
            if "fc.weight" in given and tuple(given["fc.weight"].shape)[0] == 1000:
                hint = (" This looks like torchvision's ImageNet Inception-v3 (1000 classes); FID needs the TensorFlow "
                        "FID Inception (1008 classes), pytorch-fid's pt_inception-2015-12-05-6726825d.pth.")  # fmt: skip
            problems = [
                f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "",
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" if unexpected else "",
                f"wrong shapes: {wrong[:3]}" if wrong else "",
            ]
            raise ValueError(
                f"{source} is not an FID Inception state dict in pytorch-fid's layout: "
                + "; ".join(p for p in problems if p)
                + "."
                + hint
            )
        with torch.no_grad():
            for key, tensor in own.items():
                tensor.copy_(given[key].to(tensor.dtype))

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the weights (pytorch-fid keys, no ``num_batches_tracked``) to a safetensors file; a folder gets
        ``fid_inception_v3.safetensors``. Written to a temporary name and moved into place."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path / INCEPTION_WEIGHTS_NAMES[-1]
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                   if not k.endswith("num_batches_tracked")}  # fmt: skip
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
        return path


# ----------------------------------------------------------------------------------------------- Inception Score
def inception_score(
    logits: torch.Tensor | np.ndarray, splits: int = 10, shuffle_seed: int | None = None
) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y)`` the mean prediction,
    computed on each of ``splits`` equal consecutive chunks; returns the mean and (population) standard deviation
    over the chunks, as the reference implementations do.

    Args:
        logits: (N, C) class logits (``-inf`` allowed for impossible classes), e.g. ``features_and_logits``'
            1008-d output. Computed in float64.
        splits: Number of chunks (10 in the papers; N must be at least ``splits``).
        shuffle_seed: Permute the rows first with ``numpy.random.RandomState(seed).permutation(N)`` (as
            torch-fidelity does with its ``rng_seed``); ``None`` keeps the order.

    Returns:
        (mean, std). Uniform predictions give 1; N confident predictions of N distinct classes per chunk give N.
    """
    x = torch.as_tensor(logits).detach().cpu().to(torch.float64)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"logits must have shape (N, num_classes), got {tuple(x.shape)}.")
    if torch.isnan(x).any() or (x == float("inf")).any():
        raise ValueError("logits contain NaN or +inf; check the images and the network weights.")
    if splits < 1 or x.shape[0] < splits:
        raise ValueError(
            f"Need at least `splits` ({splits}) samples and splits >= 1, got {x.shape[0]} samples."
        )
    n = x.shape[0]
    if shuffle_seed is not None:
        x = x[torch.from_numpy(np.random.RandomState(shuffle_seed).permutation(n))]
    log_p = torch.log_softmax(x, dim=1)
    p = log_p.exp()
    scores = []
    for i in range(splits):
        p_c, log_p_c = (
            p[i * n // splits : (i + 1) * n // splits],
            log_p[i * n // splits : (i + 1) * n // splits],
        )
        log_q = p_c.mean(dim=0, keepdim=True).log()
        kl = torch.where(p_c > 0, p_c * (log_p_c - log_q), torch.zeros_like(p_c)).sum(dim=1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))


# ------------------------------------------------------------------------------------ streaming FID + IS metric
def _gather_rows(rows: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, rows.cpu())
        return torch.cat(parts)
    return rows


class InceptionMetrics:
    """Inception FID between real and generated (reconstructed) images, and the Inception Score of the generated
    ones, over any number of batches: FID statistics are streamed (``FeatureStatistics``), logits for IS are kept
    (N x 1008 float32, 4 KB per image).

    ``update(real=..., fake=...)`` takes (B, C, H, W) images in [-1, 1]; ``compute()`` returns
    ``{"inception_fid", "inception_score", "inception_score_std", "num_real", "num_fake"}`` (synchronised across
    processes under torch.distributed; every rank must call it). FID needs >= 2 images of each kind and IS at least
    ``is_splits`` generated images.
    """

    def __init__(self, network: FIDInceptionV3, is_splits: int = 10, is_shuffle_seed: int | None = 0):
        self.network = network.eval()
        self.is_splits, self.is_shuffle_seed = is_splits, is_shuffle_seed
        device = next(iter(network.parameters())).device  # statistics beside the network (NCCL all-reduces there)
        self.real = FeatureStatistics(network.feature_dim, device=device)
        self.fake = FeatureStatistics(network.feature_dim, device=device)
        self.fake_logits: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, real: torch.Tensor | None = None, fake: torch.Tensor | None = None) -> None:
        if real is None and fake is None:
            raise ValueError("Pass real=... and/or fake=... images to update().")
        if real is not None:
            self.real.update(self.network(real).double())
        if fake is not None:
            feats, logits = self.network.features_and_logits(fake)
            self.fake.update(feats.double())
            self.fake_logits.append(logits.float().cpu())

    def compute(self) -> dict:
        mu_r, sigma_r = self.real.compute()
        mu_f, sigma_f = self.fake.compute()
        local = torch.cat(self.fake_logits) if self.fake_logits else torch.zeros(0, self.network.num_classes)
        logits = _gather_rows(local)
        is_mean, is_std = inception_score(logits, self.is_splits, self.is_shuffle_seed)
        return {
            "inception_fid": frechet_distance(mu_r, sigma_r, mu_f, sigma_f),
            "inception_score": is_mean,
            "inception_score_std": is_std,
            "num_real": _count(self.real),
            "num_fake": int(logits.shape[0]),
        }


def _count(stats: FeatureStatistics) -> int:
    count = stats.count.clone()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(count)
    return int(count)


__all__ = [
    "FIDInceptionV3",
    "InceptionMetrics",
    "inception_score",
    "resize_bilinear_tf1",
    "INCEPTION_WEIGHTS_NAMES",
]
