"""Losses around the reconstruction loss of a VQ tokenizer: PatchGAN discriminator, GAN losses, VQGAN's adaptive
GAN weight and an LPIPS-style perceptual loss on VGG16 features, all in plain torch (no torchvision / lpips).

Typical generator objective (VQGAN / LlamaGen / FVQ)::

    rec = (pixels - recon).abs().mean()  # or MSE
    p = perceptual(recon, pixels) if perceptual is not None else 0.0
    g = hinge_g_loss(discriminator(recon))
    w = adaptive_gan_weight(rec + p_weight * p, g, last_layer=model.decoder.conv_out.weight)
    loss = rec + p_weight * p + disc_weight * w * g + vq_loss

and for the discriminator ``disc_weight * hinge_d_loss(*discriminator(pixels.detach(), recon.detach()))`` (real and
fake in separate passes: see ``PatchGANDiscriminator.forward``).

Perceptual weights are never downloaded implicitly: ``PerceptualLoss.from_pretrained`` reads a file (local or from
a Hub repo) holding torchvision's VGG16 weights and optionally LPIPS' learned ``lin`` weights, and
``build_perceptual_loss(None)`` returns ``None`` with a one-time warning instead of training on a random VGG.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DISCRIMINATOR_NORMS",
    "GAN_LOSSES",
    "NO_PERCEPTUAL_MESSAGE",
    "PERCEPTUAL_WEIGHTS_FILENAME",
    "TAP_CHANNELS",
    "VGG16_CFG",
    "VGG16_TAPS",
    "PatchGANDiscriminator",
    "PerceptualLoss",
    "adaptive_gan_weight",
    "build_perceptual_loss",
    "hinge_d_loss",
    "hinge_g_loss",
    "non_saturating_d_loss",
    "non_saturating_g_loss",
]

_logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- discriminator
DISCRIMINATOR_NORMS = ("batch", "group", "none")


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    return nn.Identity()


class PatchGANDiscriminator(nn.Module):
    """PatchGAN discriminator of pix2pix, as used by taming's VQGAN and LlamaGen (``NLayerDiscriminator``).

    Layout of ``self.main`` (an ``nn.Sequential``; ``m = min(2**i, 8)``, all convs 4x4 with padding 1)::

        0: Conv(in_channels -> ndf, stride 2, bias)          1: LeakyReLU(0.2)
        for i in 1 .. n_layers-1:  Conv(ndf*m(i-1) -> ndf*m(i), stride 2), Norm, LeakyReLU(0.2)
        then:                      Conv(ndf*m(n-1) -> ndf*m(n), stride 1), Norm, LeakyReLU(0.2)
        last: Conv(-> 1 channel, stride 1, bias)

    so the module names (``main.0``, ``main.2``, ``main.3``, ...) and, with ``norm="batch"``, every state-dict key
    and shape match LlamaGen's / taming's discriminator one to one: their checkpoints load with
    ``load_state_dict``. Convs followed by a norm have no bias (the norm's affine shift replaces it); with
    ``norm="none"`` the norm slots are ``nn.Identity`` (indices unchanged) and those convs keep a bias.

    Init: conv weights ~ N(0, 0.02), norm weights ~ N(1, 0.02), norm biases 0 (conv biases keep PyTorch's
    default), as in the reference.

    Distributed training: ``BatchNorm2d`` computes its statistics per process, as in the official trainers
    (LlamaGen / FVQ wrap it in DDP without SyncBatchNorm; DDP broadcasts rank 0's running statistics at each forward).
    For statistics over the global batch convert it with ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` (GPUs)
    before wrapping; ``norm="group"`` has per-sample statistics (but keys no longer match LlamaGen's checkpoints).

    Args:
        in_channels: Image channels (3 for RGB).
        ndf: Width of the first conv; later widths are ``ndf * min(2**i, 8)``.
        n_layers: Number of stride-2 convs. The output has ``H / 2**n_layers - 2`` rows (30 x 30 for 256 px and
            the default 3), so inputs must be at least ``3 * 2**n_layers`` pixels on each side.
        norm: ``"batch"`` (reference), ``"group"`` (``GroupNorm(gcd(32, C), C)``) or ``"none"``.

    Shapes: ``(B, in_channels, H, W)`` -> logits ``(B, 1, H / 2**n_layers - 2, W / 2**n_layers - 2)``.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        if norm not in DISCRIMINATOR_NORMS:
            raise ValueError(f"norm must be one of {DISCRIMINATOR_NORMS}, got {norm!r}.")
        if in_channels < 1 or ndf < 1 or n_layers < 1:
            raise ValueError(
                f"in_channels, ndf and n_layers must be positive, got {in_channels}, {ndf} and {n_layers}."
            )
        self.in_channels, self.ndf, self.n_layers, self.norm = in_channels, ndf, n_layers, norm
        bias = norm == "none"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for i in range(1, n_layers + 1):
            prev, mult = mult, min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                _norm_layer(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)

    @property
    def min_input_size(self) -> int:
        """Smallest image side that still gives a 1 x 1 logit map."""
        return 3 * 2**self.n_layers

    def forward(self, images: torch.Tensor, *more_images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """``(B, in_channels, H, W)`` images (same range as the tokenizer's, e.g. [-1, 1]) -> ``(B, 1, h, w)``
        patch logits (positive = "real").

        With more batches (``disc(real, fake)``) each goes through the network in its OWN pass and a tuple of their
        logits comes back: BatchNorm then normalises real and fake images with their own batch statistics (and
        updates its running statistics once per batch), as the official trainers (taming, LlamaGen, FVQ,
        VQGAN-LC) call the discriminator; one concatenated batch would mix the statistics. One call, so a
        DDP-wrapped discriminator still sees one forward per backward."""
        if more_images:
            return tuple(self._logits(x) for x in (images, *more_images))
        return self._logits(images)

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"The discriminator expects NCHW images with {self.in_channels} channels, got shape "
                f"{tuple(images.shape)}; pass (B, {self.in_channels}, H, W) tensors (permute channels-last input)."
            )
        side = min(images.shape[-2:])
        if side < self.min_input_size:
            fits = int(math.log2(side // 3)) if side >= 6 else 0  # largest n_layers with 3 * 2**n <= side
            raise ValueError(
                f"Images of {images.shape[-2]}x{images.shape[-1]} px are too small for a {self.n_layers}-layer "
                f"PatchGAN (needs at least {self.min_input_size} px per side); use larger images"
                + (f" or n_layers <= {fits}." if fits else ".")
            )
        return self.main(images)


# ---------------------------------------------------------------------------------------------------- GAN losses
def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: ``0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))`` (scalar)."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: ``-mean(fake)`` (scalar)."""
    return -logits_fake.mean()


def non_saturating_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator cross-entropy ("vanilla") loss: ``0.5 * (mean(softplus(-real)) + mean(softplus(fake)))``."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def non_saturating_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: ``mean(softplus(-fake))`` = BCE of the fake logits against "real"."""
    return F.softplus(-logits_fake).mean()


# name -> (discriminator loss, generator loss)
GAN_LOSSES = {
    "hinge": (hinge_d_loss, hinge_g_loss),
    "non-saturating": (non_saturating_d_loss, non_saturating_g_loss),
}


def adaptive_gan_weight(
    rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """VQGAN's adaptive weight of the generator's GAN loss: ``||d rec / d W|| / (||d gan / d W|| + 1e-4)``.

    ``W`` is the last layer of the decoder (e.g. ``decoder.conv_out.weight``); the ratio balances the two
    gradients there. The result is clamped to ``[0, max_weight]`` and detached (a 0-d float32 tensor on
    ``rec_loss``'s device); multiply it with your own discriminator weight.

    Both gradients are taken with ``retain_graph=True`` and do not touch ``.grad``, so the backward pass of the
    total loss still works afterwards. When the weight cannot be computed, i.e. under ``torch.no_grad`` /
    evaluation, or when either loss does not depend on ``last_layer``, it returns ``1.0``.
    """
    one = torch.ones((), dtype=torch.float32, device=rec_loss.device)
    if not (torch.is_grad_enabled() and last_layer.requires_grad and rec_loss.requires_grad and gan_loss.requires_grad):
        return one
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True, allow_unused=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True, allow_unused=True)[0]
    if rec_grad is None or gan_grad is None:
        return one
    weight = rec_grad.float().norm() / (gan_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


# ---------------------------------------------------------------------------------------------------- perceptual
# torchvision's vgg16 "D" configuration: numbers are 3x3 conv widths (each followed by a ReLU), "M" a 2x2 max-pool.
VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# Indices in torchvision's ``vgg16().features`` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (LPIPS' taps).
VGG16_TAPS = (3, 8, 15, 22, 29)
TAP_CHANNELS = (64, 128, 256, 512, 512)
PERCEPTUAL_WEIGHTS_FILENAME = "vgg16_lpips.safetensors"  # what save_pretrained writes into a directory
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
# LPIPS' full-model key layout: net.slice{k}.{i} = features.{i}
_LPIPS_NET_KEY = re.compile(r"^net\.slice[1-5]\.(\d+)\.(weight|bias)$")
_LIN_KEY = re.compile(r"^lins?\.?([0-4])\.model\.[01]\.weight$")


def _vgg16_features() -> nn.Sequential:
    """``torchvision.models.vgg16().features`` up to relu5_3 (indices 0..29; the final max-pool is not needed)."""
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            channels = int(item)
    return nn.Sequential(*layers[: VGG16_TAPS[-1] + 1])


class _LinLayer(nn.Module):
    """LPIPS' ``NetLinLayer``: a bias-free 1x1 conv C -> 1 at index 1 of ``model`` (index 0 is LPIPS' dropout,
    an identity here since the loss is always evaluated), so keys read ``lin{k}.model.1.weight``."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))
        nn.init.constant_(self.model[1].weight, 1.0 / channels)


class PerceptualLoss(nn.Module):
    """LPIPS-style perceptual distance on VGG16 features (Zhang et al., 2018), frozen, in plain torch.

    For images ``x, y`` in [-1, 1]: both are shifted/scaled to ImageNet statistics (LPIPS' ``ScalingLayer``:
    ``(x - shift) / scale`` with shift (-0.030, -0.088, -0.188), scale (0.458, 0.448, 0.450)), run through VGG16's
    conv stack, and at each of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 the features are unit-normalised over
    channels, their squared difference is weighted per channel by a 1x1 conv ``lin{k}`` (C -> 1), averaged over
    space, and the five taps are summed.

    Weights: build it with ``PerceptualLoss.from_pretrained(...)``; a bare ``PerceptualLoss()`` has a random VGG
    and is only useful for tests. The ``lin`` weights are LPIPS' learned ones when the weights file has them,
    otherwise uniform: ``1 / C`` per channel, i.e. the channel mean of the squared difference of normalised
    features (an unlearned VGG perceptual distance, smaller in scale than LPIPS).

    The state dict uses torchvision's keys (``features.0.weight`` ... ``features.28.bias``) and LPIPS' keys
    (``lin0.model.1.weight`` ... ``lin4.model.1.weight``, shape (1, C, 1, 1)). Every parameter is frozen and the
    module stays in eval mode (``train()`` is a no-op), so it can live inside a model that is switched to training.
    Gradients still flow to the *input* images.

    Shapes: ``forward(input, target)`` with ``(B, 3 or 1, H, W)`` images (1 channel is repeated to 3), ``H, W >= 16``
    -> a scalar (``reduction="mean"``, the batch mean), or ``(B,)`` with ``reduction="none"``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = _vgg16_features()
        for k, channels in enumerate(TAP_CHANNELS):
            self.add_module(f"lin{k}", _LinLayer(channels))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.has_learned_lin = False  # True once LPIPS lin weights were loaded
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Always stays in eval mode (the loss is a fixed function)."""
        return super().train(False)

    @property
    def lins(self) -> list[nn.Module]:
        return [getattr(self, f"lin{k}") for k in range(len(TAP_CHANNELS))]

    # ------------------------------------------------------------------------------------------------ forward
    def _taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        h = (images - self.shift.to(images.dtype)) / self.scale.to(images.dtype)
        taps = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in VGG16_TAPS:
                taps.append(h)
        return taps

    def _check(self, name: str, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"PerceptualLoss expects NCHW images with 3 (or 1) channels in [-1, 1]; {name} has shape "
                f"{tuple(images.shape)}. Permute channels-last input to (B, C, H, W)."
            )
        if not images.is_floating_point():
            raise ValueError(f"{name} has dtype {images.dtype}; pass float images scaled to [-1, 1].")
        if min(images.shape[-2:]) < 16:
            raise ValueError(
                f"{name} is {images.shape[-2]}x{images.shape[-1]} px; VGG16's four max-pools before relu5_3 need "
                "at least 16 px per side. Upsample small images (e.g. F.interpolate) before the perceptual loss."
            )
        return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images

    def forward(self, input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Perceptual distance between ``input`` and ``target`` (both ``(B, C, H, W)`` in [-1, 1]).

        ``reduction``: ``"mean"`` (scalar, batch mean), ``"sum"`` (scalar) or ``"none"`` (``(B,)``).
        """
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        if input.shape != target.shape:
            raise ValueError(
                f"input and target must have the same shape, got {tuple(input.shape)} and {tuple(target.shape)}."
            )
        x, y = self._check("input", input), self._check("target", target)
        n = x.shape[0]
        feats = self._taps(torch.cat([x, y], dim=0))  # one pass for both halves
        total = x.new_zeros(n)
        for feat, lin in zip(feats, self.lins):
            fx, fy = _unit_normalize(feat[:n]), _unit_normalize(feat[n:])
            total = total + lin.model((fx - fy) ** 2).mean(dim=(1, 2, 3))
        if reduction == "mean":
            return total.mean()
        if reduction == "sum":
            return total.sum()
        return total

    # ------------------------------------------------------------------------------------------------ weights
    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str | os.PathLike | Sequence[str | os.PathLike],
        filename: str | None = None,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> PerceptualLoss:
        """Load VGG16 (and optionally LPIPS lin) weights from one or more files, local or on the Hub.

        Args:
            path_or_repo: One source or a list of sources whose tensors are merged (later ones win), e.g.
                ``["vgg16-397923af.pth", "vgg_lpips.pth"]`` for torchvision's VGG16 plus LPIPS' lin weights.
                A source is
                - a local file: ``.safetensors`` (read with safetensors), anything else with
                  ``torch.load(weights_only=True)``;
                - a local directory: its ``filename``, else ``vgg16_lpips.safetensors``, else its only weights file;
                - a Hub repo id ``"owner/name"`` with ``filename``, or ``"owner/name/path/in/repo.safetensors"``,
                  fetched with ``huggingface_hub.hf_hub_download`` (cached; offline mode uses the cache only).
            filename: File inside a directory or Hub repo.
            revision, cache_dir: Passed to ``hf_hub_download``.

        Recognised keys (others, such as torchvision's ``classifier.*``, are ignored; a ``module.`` prefix is
        stripped): torchvision ``features.{i}.weight/bias``; LPIPS ``net.slice{k}.{i}.weight/bias``; LPIPS
        ``lin{k}.model.1.weight`` (or ``.model.0.`` without dropout, or ``lins.{k}.``). All 13 VGG16 convs must be
        present; the lin weights are optional (uniform ``1/C`` when absent, see the class docstring).
        """
        sources = [path_or_repo] if isinstance(path_or_repo, (str, os.PathLike)) else list(path_or_repo)
        if not sources:
            raise ValueError("from_pretrained needs at least one weights file (path, directory or Hub repo).")
        merged: dict[str, torch.Tensor] = {}
        for source in sources:
            path = _resolve_weights_file(source, filename, revision=revision, cache_dir=cache_dir)
            merged.update(_canonical_keys(_read_weights(path)))
        model = cls()
        model.load_weights(merged, source=", ".join(os.fspath(s) for s in sources))
        return model

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], source: str = "the state dict") -> None:
        """Copy torchvision/LPIPS-keyed tensors (already canonical, see ``from_pretrained``) into the module.

        Raises ``ValueError`` when a VGG16 conv is missing or any shape differs; lin weights are all-or-none.
        """
        state_dict = _canonical_keys(state_dict)
        own = self.state_dict()
        vgg_keys = [k for k in own if k.startswith("features.")]
        lin_keys = [k for k in own if k.startswith("lin")]
        missing = [k for k in vgg_keys if k not in state_dict]
        if missing:
            hint = (
                " It holds only LPIPS lin weights: pass torchvision's VGG16 weights as well, e.g. "
                "from_pretrained(['vgg16-397923af.pth', 'vgg_lpips.pth'])."
                if len(missing) == len(vgg_keys) and any(k in state_dict for k in lin_keys)
                else ""
            )
            raise ValueError(
                f"{source} lacks VGG16 weights {missing[:4]}{' ...' if len(missing) > 4 else ''} ({len(missing)} of "
                f"{len(vgg_keys)} tensors missing; expected torchvision's vgg16 keys features.0.weight ... "
                f"features.28.bias).{hint}"
            )
        present_lin = [k for k in lin_keys if k in state_dict]
        if present_lin and len(present_lin) != len(lin_keys):
            raise ValueError(
                f"{source} has only some LPIPS lin weights ({present_lin}); provide all of {lin_keys} or none."
            )
        for key in vgg_keys + present_lin:
            if tuple(state_dict[key].shape) != tuple(own[key].shape):
                raise ValueError(
                    f"{source}: {key} has shape {tuple(state_dict[key].shape)}, expected {tuple(own[key].shape)} "
                    "(torchvision vgg16 / LPIPS-vgg layout)."
                )
        with torch.no_grad():
            for key in vgg_keys + present_lin:
                own[key].copy_(state_dict[key].to(own[key].dtype))
        self.has_learned_lin = bool(present_lin)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write VGG16 + lin weights to one safetensors file (torchvision / LPIPS keys) that ``from_pretrained``
        reads back. ``path`` is a ``.safetensors`` file or a directory (``vgg16_lpips.safetensors`` inside).
        Lin weights are written only if learned ones were loaded, so uniform weights stay uniform on reload."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path.mkdir(parents=True, exist_ok=True)
            path = path / PERCEPTUAL_WEIGHTS_FILENAME
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            k: v.detach().cpu().contiguous()
            for k, v in self.state_dict().items()
            if k.startswith("features.") or self.has_learned_lin
        }
        save_file(tensors, str(path))
        return path


def _unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide by the L2 norm over channels (LPIPS' ``normalize_tensor``)."""
    return x / (torch.sqrt((x**2).sum(dim=1, keepdim=True)) + eps)


def _canonical_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map torchvision / LPIPS key variants to ``features.{i}.*`` and ``lin{k}.model.1.weight``; drop the rest."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            continue
        key = key.removeprefix("module.")
        if key.startswith("features."):
            out[key] = value
        elif match := _LPIPS_NET_KEY.match(key):
            out[f"features.{match.group(1)}.{match.group(2)}"] = value
        elif match := _LIN_KEY.match(key):
            out[f"lin{match.group(1)}.model.1.weight"] = value
    return out


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, pickle with non-tensor objects, ...
        raise ValueError(
            f"Could not read perceptual weights from {path} ({type(err).__name__}: {err}). Use a safetensors file or "
            "a plain state-dict .pth (readable with torch.load(weights_only=True))."
        ) from err
    if isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        for nested in ("state_dict", "model"):
            if isinstance(state.get(nested), Mapping):
                state = state[nested]
                break
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__}).")
    return dict(state)


def _resolve_weights_file(
    source: str | os.PathLike,
    filename: str | None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """A local path for ``source`` (file, directory or Hub repo; see ``PerceptualLoss.from_pretrained``)."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if filename is not None:
            if (path / filename).is_file():
                return path / filename
            raise ValueError(f"No file {filename!r} in directory {path}.")
        if (path / PERCEPTUAL_WEIGHTS_FILENAME).is_file():
            return path / PERCEPTUAL_WEIGHTS_FILENAME
        found = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
        if len(found) == 1:
            return found[0]
        raise ValueError(
            f"Directory {path} holds {len(found)} weights files ({[p.name for p in found]}); name one with "
            f"filename=... or pass the file path."
        )
    parts = text.split("/")
    if isinstance(source, Path) or os.path.isabs(text) or text.startswith((".", "~")) or "\\" in text or len(parts) < 2:
        raise ValueError(
            f"Perceptual weights file {text!r} not found. Pass an existing .safetensors/.pth file with torchvision's "
            "VGG16 weights (optionally LPIPS lin weights), a directory, or a Hub repo 'owner/name' + filename."
        )
    repo_id, in_repo = "/".join(parts[:2]), filename
    if len(parts) > 2:
        in_repo = "/".join(parts[2:]) if filename is None else "/".join(parts[2:] + [filename])
    if in_repo is None:
        in_repo = PERCEPTUAL_WEIGHTS_FILENAME
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, in_repo, revision=revision, cache_dir=cache_dir))
    except Exception as err:  # offline cache miss, unknown repo/file, no network, invalid id, ...
        raise ValueError(
            f"Perceptual weights {text!r}: no such local file, and downloading {in_repo!r} from the Hub repo "
            f"{repo_id!r} failed ({type(err).__name__}: {err}). Pass an existing local file, or a Hub repo id plus "
            "the file name ('owner/name/file.safetensors'), with network access or a warm cache."
        ) from err


_warned_no_perceptual = False
NO_PERCEPTUAL_MESSAGE = "no perceptual weights given (--perceptual-weights); training without the perceptual loss"


def build_perceptual_loss(
    weights: str | os.PathLike | Sequence[str | os.PathLike] | None, logger: logging.Logger | None = None
) -> PerceptualLoss | None:
    """The trainer's entry point: ``PerceptualLoss.from_pretrained(weights)``, or ``None`` for ``weights=None``.

    ``weights`` is what ``--perceptual-weights`` gave: a file, directory, ``owner/name/file`` Hub path or a list of
    them; a comma-separated string is split into such a list (``"vgg16.pth,vgg_lpips.pth"``). Without weights the
    perceptual term is skipped rather than computed on a random VGG: the first such call per process emits the
    warning ``NO_PERCEPTUAL_MESSAGE`` (through ``logger.warning`` when a logger is given, else ``warnings.warn``);
    later calls are silent.
    """
    global _warned_no_perceptual
    log = logger if logger is not None else _logger
    if weights is None or (isinstance(weights, str) and not weights.strip()):
        if not _warned_no_perceptual:
            _warned_no_perceptual = True
            if logger is not None:
                logger.warning(NO_PERCEPTUAL_MESSAGE)
            else:
                warnings.warn(NO_PERCEPTUAL_MESSAGE, UserWarning, stacklevel=2)
        return None
    if isinstance(weights, str) and "," in weights:
        weights = [part.strip() for part in weights.split(",") if part.strip()]
    loss = PerceptualLoss.from_pretrained(weights)
    log.info(
        "perceptual loss: VGG16 weights from %s, %s",
        weights,
        "LPIPS lin weights" if loss.has_learned_lin else "uniform 1/C channel weights (no LPIPS lin weights in the file)",
    )
    return loss
