"""LPIPS (Zhang et al. 2018, v0.1), the learned perceptual distance on AlexNet or VGG16 features, as the papers
report it ("LPIPS" in FVQ's tables is the AlexNet variant).

    d(x, y) = sum_l mean_{h,w} sum_c w_{l,c} (f_l(x) / |f_l(x)| - f_l(y) / |f_l(y)|)^2_{c,h,w}

with ``f_l`` the ReLU outputs of five backbone stages (AlexNet: relu1-relu5, 64/192/384/256/256 channels; VGG16:
relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, 64/128/256/512/512 channels), normalised over channels (eps 1e-10 on
the norm), and ``w_l`` the learned non-negative 1x1 "lin" weights. Images in [-1, 1] are first scaled per channel,
``(x - shift) / scale`` with shift (-0.030, -0.088, -0.188) and scale (0.458, 0.448, 0.450).

Weights are never downloaded. Keys (the ``lpips`` package's ``LPIPS`` state dict):
``net.slice{k}.{i}.weight/bias`` for the backbone, where ``i`` is the layer's index in torchvision's
``alexnet().features`` / ``vgg16().features`` (so torchvision's ``features.{i}.weight`` maps to it one to one),
and ``lin{k}.model.1.weight`` (1, C_k, 1, 1) for the lin layers (pyiqa's ``lins.{k}.model.1.weight`` too).
``LPIPS.from_pretrained`` accepts one full LPIPS state dict, or several files merged, e.g. torchvision's backbone
file plus the lpips package's lin file: ``["alexnet-owt-7be5be79.pth", "alex.pth"]`` or
``["vgg16-397923af.pth", "vgg.pth"]``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ._weights import read_state_dict, resolve_weights_file

# backbone layer list (torchvision ``features`` indices) and the five stage boundaries (exclusive ends)
# AlexNet: conv11/4 relu pool conv5 relu pool conv3 relu conv3 relu conv3 relu
_ALEX_CONVS = {0: (3, 64, 11, 4, 2), 3: (64, 192, 5, 1, 2), 6: (192, 384, 3, 1, 1), 8: (384, 256, 3, 1, 1),
               10: (256, 256, 3, 1, 1)}  # fmt: skip
_ALEX_POOLS = (2, 5)
_ALEX_SLICES = (2, 5, 8, 10, 12)
_VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_VGG_SLICES = (4, 9, 16, 23, 30)
LPIPS_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
LPIPS_WEIGHTS_NAMES = {
    "alex": ("lpips_alex.safetensors", "LPIPS_v0.1_alex-df73285e.pth"),
    "vgg": ("lpips_vgg.safetensors", "LPIPS_v0.1_vgg-a78928a0.pth"),
}
_NET_KEY = re.compile(r"^net\.slice([1-5])\.(\d+)\.(weight|bias)$")
_FEATURES_KEY = re.compile(r"^features\.(\d+)\.(weight|bias)$")
_LIN_KEY = re.compile(r"^lins?\.?([0-4])\.model\.[01]\.weight$")


def _backbone_layers(net: str) -> list[nn.Module]:
    """torchvision's ``alexnet().features`` / ``vgg16().features`` layer list (index = torchvision index)."""
    layers: list[nn.Module] = []
    if net == "alex":
        for i in range(12):
            if i in _ALEX_CONVS:
                c_in, c_out, k, s, p = _ALEX_CONVS[i]
                layers.append(nn.Conv2d(c_in, c_out, k, stride=s, padding=p))
            elif i in _ALEX_POOLS:
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
            else:
                layers.append(nn.ReLU())
        return layers
    c_in = 3
    for v in _VGG_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU()]
            c_in = v
    return layers


class _Backbone(nn.Module):
    """Five ``slice{k}`` Sequentials whose children keep torchvision's indices as names."""

    def __init__(self, net: str):
        super().__init__()
        layers = _backbone_layers(net)
        ends = _ALEX_SLICES if net == "alex" else _VGG_SLICES
        start = 0
        for k, end in enumerate(ends, start=1):
            stage = nn.Sequential()
            for i in range(start, end):
                stage.add_module(str(i), layers[i])
            self.add_module(f"slice{k}", stage)
            start = end

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for k in range(1, 6):
            x = getattr(self, f"slice{k}")(x)
            taps.append(x)
        return taps


class _LinLayer(nn.Module):
    """LPIPS' ``NetLinLayer``: (dropout at ``model.0``, inactive in eval) then a 1x1 conv to 1 channel, no bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance (module docstring), frozen and in eval mode; gradients flow to the input images.

    A bare ``LPIPS(net)`` has random weights (for tests); use ``from_pretrained`` for real numbers.

    Args:
        net: ``"alex"`` or ``"vgg"``.

    Shapes: ``forward(x, y)`` with (B, 3 or 1, H, W) images in [-1, 1] (grey is repeated to RGB; at least 32 px
    per side for AlexNet, 16 for VGG16) -> (B,) distances.
    """

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in LPIPS_CHANNELS:
            raise ValueError(f"net must be one of {tuple(LPIPS_CHANNELS)}, got {net!r}.")
        self.net_name = net
        self.net = _Backbone(net)
        for k, channels in enumerate(LPIPS_CHANNELS[net]):
            self.add_module(f"lin{k}", _LinLayer(channels))
        self.register_buffer(
            "shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> LPIPS:
        """Always stays in eval mode (a fixed function)."""
        return super().train(False)

    def _check(self, name: str, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"LPIPS expects (B, 3 or 1, H, W) images in [-1, 1]; {name} has shape {shape}.")
        if not images.is_floating_point():
            raise ValueError(f"LPIPS expects float images in [-1, 1]; {name} has dtype {images.dtype}.")
        smallest = 32 if self.net_name == "alex" else 16
        if min(images.shape[-2:]) < smallest:
            raise ValueError(
                f"{name} is {images.shape[-2]}x{images.shape[-1]} px; LPIPS-{self.net_name} needs at least "
                f"{smallest} px per side. Upsample small images (e.g. F.interpolate) first."
            )
        return images.expand(-1, 3, -1, -1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per image pair: (B,)."""
        if x.shape != y.shape:
            raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}.")
        x, y = self._check("x", x), self._check("y", y)
        n = x.shape[0]
        h = torch.cat([x, y]).to(self.shift.device)
        h = (h - self.shift.to(h.dtype)) / self.scale.to(h.dtype)
        total = h.new_zeros(n)
        for k, feat in enumerate(self.net(h)):
            fx, fy = _unit_normalize(feat[:n]), _unit_normalize(feat[n:])
            total = total + getattr(self, f"lin{k}")((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return total

    # ------------------------------------------------------------------------------------------------ weights
    @classmethod
    def from_pretrained(
        cls,
        sources: str | os.PathLike | Sequence[str | os.PathLike],
        net: str = "alex",
        filename: str | None = None,
        revision: str | None = None,
        option: str = "LPIPS.from_pretrained",
    ) -> LPIPS:
        """Build LPIPS-``net`` from one or more weights files merged (later ones win): local files, folders (holding
        one of ``LPIPS_WEIGHTS_NAMES[net]``) or Hub repos ``"owner/name[/file]"``. Key layouts: see the module
        docstring; backbone and lin weights must both be complete. ``option`` names the setting in errors."""
        items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
        if not items:
            raise ValueError(f"{option}: give at least one LPIPS-{net} weights file.")
        if net not in LPIPS_CHANNELS:
            raise ValueError(f"net must be one of {tuple(LPIPS_CHANNELS)}, got {net!r}.")
        merged: dict[str, torch.Tensor] = {}
        for item in items:
            path = resolve_weights_file(
                item, LPIPS_WEIGHTS_NAMES[net], f"LPIPS-{net}", option, filename, revision
            )
            merged.update(lpips_canonical_keys(read_state_dict(path, f"LPIPS-{net}"), net))
        model = cls(net)
        model.load_weights(merged, source=", ".join(os.fspath(i) for i in items), option=option)
        return model

    def load_weights(
        self, state_dict: Mapping[str, torch.Tensor], source: str = "the state dict", option: str = "weights"
    ) -> None:
        """Copy LPIPS- or torchvision-keyed tensors in (``lpips_canonical_keys``); every backbone and lin tensor
        must be present with the right shape."""
        given = lpips_canonical_keys(state_dict, self.net_name)
        own = self.state_dict()
        net_keys = [k for k in own if k.startswith("net.")]
        lin_keys = [k for k in own if k.startswith("lin")]
        backbone = "alexnet-owt-7be5be79.pth" if self.net_name == "alex" else "vgg16-397923af.pth"
        lins = "alex.pth" if self.net_name == "alex" else "vgg.pth"
        problems = []
        missing_net = [k for k in net_keys if k not in given]
        if missing_net:
            problems.append(
                f"no {self.net_name} backbone weights ({len(missing_net)} of {len(net_keys)} tensors missing, e.g. "
                f"{missing_net[0]}; give torchvision's {backbone} or a full LPIPS state dict too)"
            )
        missing_lin = [k for k in lin_keys if k not in given]
        if missing_lin:
            problems.append(
                f"no learned lin weights ({missing_lin}; give the lpips package's weights/v0.1/{lins} too) - "
                "without them the number is not LPIPS"
            )
        wrong = [f"{k} {tuple(given[k].shape)} (expected {tuple(v.shape)})" for k, v in own.items()
                 if k in given and tuple(given[k].shape) != tuple(v.shape)]  # fmt: skip
        if wrong:
            problems.append(f"wrong shapes, not LPIPS-{self.net_name}: {wrong[:3]}")
        unexpected = [k for k in given if k not in own and k.startswith(("net.", "features."))]
        if unexpected:
            problems.append(
                f"backbone tensors LPIPS-{self.net_name} does not have ({unexpected[:3]}): another network?"
            )
        if problems:
            raise ValueError(f"{option} {source}: " + "; ".join(problems) + ".")
        with torch.no_grad():
            for key, tensor in own.items():
                tensor.copy_(given[key].to(tensor.dtype))

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write backbone + lin weights (LPIPS keys) to one safetensors file that ``from_pretrained`` reads back;
        a folder gets ``lpips_{net}.safetensors``. Written to a temporary name and moved into place."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path / LPIPS_WEIGHTS_NAMES[self.net_name][0]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(tmp))
        os.replace(tmp, path)
        return path


def _unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide by the L2 norm over channels (plus eps), as LPIPS' ``normalize_tensor``."""
    return x / (x.square().sum(dim=1, keepdim=True).sqrt() + eps)


def lpips_canonical_keys(state_dict: Mapping[str, torch.Tensor], net: str) -> dict[str, torch.Tensor]:
    """Map the known key layouts of LPIPS-``net`` weights to this module's (= the lpips package's) keys; drop
    what LPIPS does not use (torchvision's ``classifier.*``, LPIPS' ``scaling_layer.*`` constants).

    - ``features.{i}.weight/bias`` (torchvision ``alexnet`` / ``vgg16``) -> ``net.slice{k}.{i}.*``, ``k`` the stage
      holding torchvision layer ``i``;
    - ``net.slice{k}.{i}.*`` (lpips, pyiqa) kept;
    - ``lin{k}.model.1.weight`` (lpips with dropout), ``lin{k}.model.0.weight`` (without), ``lins.{k}.model.1.weight``
      -> ``lin{k}.model.1.weight``.
    """
    if net not in LPIPS_CHANNELS:
        raise ValueError(f"net must be one of {tuple(LPIPS_CHANNELS)}, got {net!r}.")
    ends = _ALEX_SLICES if net == "alex" else _VGG_SLICES
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if _NET_KEY.match(key):
            out[key] = value
        elif m := _FEATURES_KEY.match(key):
            index = int(m.group(1))
            k = next((s for s, end in enumerate(ends, start=1) if index < end), None)
            out[f"net.slice{k}.{index}.{m.group(2)}" if k else key] = (
                value  # beyond the taps: kept to be reported
            )
        elif m := _LIN_KEY.match(key):
            out[f"lin{m.group(1)}.model.1.weight"] = value
    return out
