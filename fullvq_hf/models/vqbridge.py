"""VQBridge (FVQ): a compress -> process -> recover transformer over the codebook itself.

The raw codebook ``C`` (K, D) is laid out as one picture of D channels on a (H, W) grid of codes (row-major:
code ``k`` sits at row ``k // W``, column ``k % W``), cut into p x p patches (compress: one token per patch),
processed by pre-LN transformer blocks and mapped back to p x p codes per token (recover). The recover layer is
zero-initialised (weight and bias), so the projected codebook ``C' = VQBridge(C)`` is exactly zero at step 0.

Module names follow the official FVQ code (``x_embedder.proj``, ``blocks.{i}.attn.qkv``, ``blocks.{i}.mlp.fc1``,
``final_layer.linear``) so its checkpoints load one-to-one.

Grid rule for codebook sizes: the grid is (H, W) with ``H * W == K``, both multiples of the patch size ``p``, and
H the largest such value not above sqrt(K). A perfect square whose root is a multiple of p (16384, 65536, 262144)
gives the official square grid. Any K divisible by p**2 has such a grid (possibly elongated, e.g. 32768 = 128 x 256
at p = 8); since the bridge has no positional embedding, the grid shape only decides which codes share a token.
K not divisible by p**2 is rejected with the nearest valid sizes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# name -> hidden width (always 4 heads); the official presets also fix patch size and depth, e.g. "L/4".
BRIDGE_WIDTHS = {"S": 64, "B": 128, "L": 256, "XL": 512}


def parse_bridge_preset(name: str) -> dict:
    """``"L/8"`` -> ``{"bridge_hidden_size": 256, "bridge_patch_size": 8}`` (depth stays at its default, 2)."""
    try:
        size, patch = name.split("/")
        return {"bridge_hidden_size": BRIDGE_WIDTHS[size], "bridge_patch_size": int(patch)}
    except (ValueError, KeyError):
        raise ValueError(
            f"Unknown VQBridge preset {name!r}: use '<size>/<patch>' with size in {sorted(BRIDGE_WIDTHS)} "
            "and patch in {2, 4, 8}, e.g. 'L/4'."
        ) from None


def bridge_grid(codebook_size: int, patch_size: int) -> tuple[int, int]:
    """The (H, W) code grid of the rule in the module docstring; ValueError when none exists."""
    p2 = patch_size * patch_size
    if patch_size < 1 or codebook_size % p2 != 0:
        lower = (codebook_size // p2) * p2
        upper = lower + p2
        options = " or ".join(str(k) for k in (lower, upper) if k > 0)
        raise ValueError(
            f"codebook_size={codebook_size} cannot be laid out for a VQBridge with bridge_patch_size={patch_size}: "
            f"it must be divisible by bridge_patch_size**2 = {p2}. Use codebook_size {options}, "
            f"or a smaller bridge_patch_size."
        )
    m = codebook_size // p2  # number of bridge tokens
    a = max(d for d in range(1, math.isqrt(m) + 1) if m % d == 0)
    return a * patch_size, (m // a) * patch_size


class PatchEmbed(nn.Module):
    """p x p codes -> one token (a stride-p conv, as timm's PatchEmbed)."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, D, H, W) -> (1, T, hidden)
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"bridge_hidden_size={hidden_size} must be divisible by bridge_num_heads={num_heads}.")
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=True)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, C)
        n, t, c = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, heads, T, C/heads)
        return self.proj(out.transpose(1, 2).reshape(n, t, c))


class Mlp(nn.Module):
    def __init__(self, hidden_size: int, mlp_hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_hidden)
        self.fc2 = nn.Linear(mlp_hidden, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class VQBridgeBlock(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)); x + MLP(LN(x)); LayerNorm without affine, eps 1e-6."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, T, hidden) -> (1, T, p*p*D)
        return self.linear(self.norm_final(x))


class VQBridge(nn.Module):
    """Projects a raw codebook (K, D) to the codebook used for search (K, D)."""

    def __init__(
        self,
        codebook_size: int,
        codebook_dim: int,
        patch_size: int = 4,
        hidden_size: int = 256,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
    ):
        super().__init__()
        self.codebook_size, self.codebook_dim, self.patch_size = codebook_size, codebook_dim, patch_size
        self.grid = bridge_grid(codebook_size, patch_size)
        self.x_embedder = PatchEmbed(patch_size, codebook_dim, hidden_size)
        self.blocks = nn.ModuleList([VQBridgeBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, codebook_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # like a Linear over the flattened patch
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.zeros_(self.final_layer.linear.weight)  # C' == 0 at step 0: no skip path
        nn.init.zeros_(self.final_layer.linear.bias)

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:  # (K, D) -> (K, D)
        (gh, gw), p, d = self.grid, self.patch_size, self.codebook_dim
        picture = codebook.view(1, gh, gw, d).permute(0, 3, 1, 2)  # (1, D, H, W) channels-last view, no copy
        x = self.x_embedder(picture)  # (1, T, hidden), T = (H/p) * (W/p)
        for block in self.blocks:
            x = block(x)
        x = self.final_layer(x)  # (1, T, p*p*D), ordered (p_row, p_col, D)
        x = x.reshape(gh // p, gw // p, p, p, d).permute(0, 2, 1, 3, 4)  # (H/p, p, W/p, p, D)
        return x.reshape(self.codebook_size, d)
