"""VQBridge (FVQ): a compress -> process -> recover transformer over the codebook itself. Two kinds:

* ``VQBridge`` (``bridge_type="vit"``): the paper's ViT bridge (``qbridge_ViT.py``), pre-LN blocks, no position
  embedding, no conditioning.
* ``DiTVQBridge`` (``bridge_type="dit"``): the bridge the official training recipes build (``qbridge.py``, used by
  ``scripts/recon/FVQ-*.sh``): a fixed 2D sin-cos position embedding ``pos_embed`` added to the patch tokens, and
  DiT blocks whose LayerNorms are modulated (adaLN-Zero) by a conditioning vector read from
  ``y_embedder.embedding_table``: one row for the unconditional bridge (the recipes' ``--is_uncondition``), or
  ``num_classes`` (+1 null row with label dropout) rows for the class-conditional one (one codebook per class).

The raw codebook ``C`` (K, D) is laid out as one picture of D channels on a (H, W) grid of codes (row-major:
code ``k`` sits at row ``k // W``, column ``k % W``), cut into p x p patches (compress: one token per patch),
processed by pre-LN transformer blocks and mapped back to p x p codes per token (recover). The recover layer is
zero-initialised (weight and bias), so the projected codebook ``C' = VQBridge(C)`` is exactly zero at step 0.

Module names follow the official FVQ code (``x_embedder.proj``, ``blocks.{i}.attn.qkv``, ``blocks.{i}.mlp.fc1``,
``final_layer.linear``; for the DiT bridge also ``pos_embed``, ``y_embedder.embedding_table``,
``blocks.{i}.adaLN_modulation.1``, ``final_layer.adaLN_modulation.1``) so its checkpoints load one-to-one.

Grid rule for codebook sizes: the grid is (H, W) with ``H * W == K``, both multiples of the patch size ``p``, and
H the largest such value not above sqrt(K). A perfect square whose root is a multiple of p (16384, 65536, 262144)
gives the official square grid. Any K divisible by p**2 has such a grid (possibly elongated, e.g. 32768 = 128 x 256
at p = 8); since the bridge has no positional embedding, the grid shape only decides which codes share a token.
K not divisible by p**2 is rejected with the nearest valid sizes. The DiT bridge's position embedding is defined
on a square grid (as the official one), so it needs K = (n * p)**2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# name -> hidden width (always 4 heads); the official presets also fix patch size and depth, e.g. "L/4".
BRIDGE_WIDTHS = {"S": 64, "B": 128, "L": 256, "XL": 512}


# The official DiT-bridge presets of qbridge.py's ``QBridge_models`` (the names its ``--QB_type`` takes):
# name -> (hidden width = 4 heads x head width, patch size, depth, label-dropout probability, num_classes or None).
# The dropout and class count only matter for a class-conditional bridge (num_classes None: DiT's default 1000).
QBRIDGE_MODELS: dict[str, tuple[int, int, int, float, int | None]] = {
    "QBridge-XS/2": (32, 2, 2, 0.1, None),
    "QBridge-S/2": (64, 2, 2, 0.1, None),
    "QBridge-S/4": (64, 4, 2, 0.1, None),
    "QBridge-S/8": (64, 8, 2, 0.1, None),
    "Qbridge-S/4-d4": (64, 4, 4, 0.1, None),
    "QBridge-B/2": (128, 2, 2, 0.1, None),
    "QBridge-B/4": (128, 4, 2, 0.1, None),
    "QBridge-B/8": (128, 8, 2, 0.1, None),
    "QBridge-B/4-d1": (128, 4, 1, 0.1, None),
    "QBridge-B/4-d4": (128, 4, 4, 0.1, None),
    "QBridge-L/2": (256, 2, 2, 0.1, None),
    "QBridge-L/4": (256, 4, 2, 0.1, None),
    "QBridge-L/8": (256, 8, 2, 0.1, None),
    "QBridge-L/4-d1": (256, 4, 1, 0.1, None),
    "QBridge-L/4-d4": (256, 4, 4, 0.1, None),
    "QBridge-L/2-d4": (256, 2, 4, 0.1, None),
    "QBridge-XL/4": (512, 4, 2, 0.1, None),
    "QBridge-XL/4-d4": (512, 4, 4, 0.1, None),
    "QBridge-L/4-cdp-001": (256, 4, 2, 0.01, None),
    "QBridge-L/4-cdp-005": (256, 4, 2, 0.05, None),
    "QBridge-L/4-cdp-02": (256, 4, 2, 0.2, None),
    "QBridge-L/4-cdp-05": (256, 4, 2, 0.5, None),
    "QBridge-L/4-cdp-07": (256, 4, 2, 0.7, None),
    "QBridge-L/4-cdp-09": (256, 4, 2, 0.9, None),
    "QBridge-L/2-cdp-02": (256, 2, 2, 0.2, None),
    "QBridge-L/8-cdp-02": (256, 8, 2, 0.2, None),
    "QBridge-L/4-cdp-02-100": (256, 4, 2, 0.2, 100),
    "QBridge-L/4-cdp-02-1000": (256, 4, 2, 0.2, 1000),
    "QBridge-L/4-cdp-02-5000": (256, 4, 2, 0.2, 5000),
    "QBridge-L/4-cdp-02-10000": (256, 4, 2, 0.2, 10000),
    "QBridge-XL/4-cdp-02": (512, 4, 2, 0.2, None),
    "QBridge-XL/8-cdp-02": (512, 8, 2, 0.2, None),
    "QBridge-XXL/4-d4-02": (1024, 4, 4, 0.2, None),
    "QBridge-siglip2-B-p16-256/4": (768, 4, 2, 0.2, None),
    "QBridge-d4-siglip2-B-p16-256/4": (768, 4, 4, 0.2, None),
}
# qbridge.py's DiT default, used by conditional presets that do not name a count
DIT_DEFAULT_NUM_CLASSES = 1000


def qbridge_preset(name: str, conditional: bool = False) -> dict:
    """An official ``QB_type`` name -> ``FVQModel`` bridge config of the DiT bridge.

    ``conditional=False`` is the official recipes' ``--is_uncondition`` (``bridge_num_classes=0``); with True the
    preset's class count (DiT's default 1000 when the name gives none) and label dropout are used.
    """
    key = next((k for k in QBRIDGE_MODELS if k.lower() == name.lower()), None)
    if key is None:
        linear = (
            " (the linear / MLP / identity 'Qbridge-lin/*', 'Qbridge-none' are not bridges this package has)"
        )
        raise ValueError(
            f"Unknown official DiT-bridge preset {name!r}{linear if name.lower().startswith('qbridge-') else ''}; "
            f"choose one of {sorted(QBRIDGE_MODELS)}."
        )
    hidden, patch, depth, dropout, classes = QBRIDGE_MODELS[key]
    return dict(
        bridge_type="dit",
        bridge_hidden_size=hidden,
        bridge_patch_size=patch,
        bridge_depth=depth,
        bridge_num_heads=4,
        bridge_mlp_ratio=2.0,
        bridge_num_classes=(classes or DIT_DEFAULT_NUM_CLASSES) if conditional else 0,
        bridge_class_dropout_prob=dropout,
    )


def parse_bridge_preset(name: str) -> dict:
    """``"L/8"`` -> ``{"bridge_hidden_size": 256, "bridge_patch_size": 8}`` (the ViT bridge; depth stays at its
    default, 2). An official DiT name (``"QBridge-L/8"``, see ``QBRIDGE_MODELS``) gives the unconditional DiT
    bridge of that preset (``qbridge_preset``)."""
    if name.lower().startswith("qbridge-"):
        return qbridge_preset(name)
    try:
        size, patch = name.split("/")
        return {"bridge_hidden_size": BRIDGE_WIDTHS[size], "bridge_patch_size": int(patch)}
    except (ValueError, KeyError):
        raise ValueError(
            f"Unknown VQBridge preset {name!r}: use '<size>/<patch>' with size in {sorted(BRIDGE_WIDTHS)} "
            "and patch in {2, 4, 8}, e.g. 'L/4' (ViT bridge), or an official DiT-bridge name such as 'QBridge-L/4'."
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
            raise ValueError(
                f"bridge_hidden_size={hidden_size} must be divisible by bridge_num_heads={num_heads}."
            )
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


class BridgePositions:
    """What both bridges share about the positions inside a patch: the final layer turns each p x p patch token
    into p*p codes, with its own block of D weight rows (and biases) per position, so the codes at one position form
    a sub-codebook of K / p^2 codes (one affine image of the patch features). A position's rows learn only when one
    of its codes is picked: a position none of whose codes is picked stays dead as a whole."""

    def _code_rows_and_columns(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(K,) each: the grid row and column of every code index (row-major, see the module docstring)."""
        k = torch.arange(self.codebook_size)
        return k // self.grid[1], k % self.grid[1]

    def code_positions(self) -> torch.Tensor:
        """(K,) int64: the position inside its patch, ``p_row * p + p_col``, of every code index."""
        rows, cols, p = *self._code_rows_and_columns(), self.patch_size
        return (rows % p) * p + cols % p

    def code_patches(self) -> torch.Tensor:
        """(K,) int64: the patch (bridge token, row-major over the patch grid) that makes each code index."""
        rows, cols, p = *self._code_rows_and_columns(), self.patch_size
        return (rows // p) * (self.grid[1] // p) + cols // p

    @torch.no_grad()
    def copy_position(self, source: int, targets: list[int], noise: float = 0.1) -> None:
        """Give each position in ``targets`` the final-layer rows (weight and bias) of position ``source``, the
        weight plus Gaussian noise of ``noise`` x its standard deviation (drawn from torch's global generator, one
        draw per target in order): the targets' sub-codebooks become near-copies of the source's."""
        d = self.codebook_dim
        weight, bias = self.final_layer.linear.weight, self.final_layer.linear.bias
        src_w, src_b = weight[source * d : (source + 1) * d].clone(), bias[source * d : (source + 1) * d].clone()
        for j in targets:
            weight[j * d : (j + 1) * d] = src_w + noise * src_w.std() * torch.randn_like(src_w)
            bias[j * d : (j + 1) * d] = src_b


class VQBridge(BridgePositions, nn.Module):
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


# ---------------------------------------------------------------------------------------------------- DiT bridge
def sincos_pos_embed_2d(hidden_size: int, grid_size: int) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding (MAE / DiT) of a square ``grid_size`` x ``grid_size`` token grid.

    Returns ``(grid_size**2, hidden_size)`` float32, tokens row-major. The first half of the channels encodes the
    column, the second half the row; each half is ``[sin(pos * w), cos(pos * w)]`` with
    ``w_i = 10000 ** (-i / (hidden_size / 4))``, computed in float64.
    """
    if hidden_size % 4:
        raise ValueError(
            f"The sin-cos position embedding needs bridge_hidden_size divisible by 4, got {hidden_size}."
        )
    quarter = hidden_size // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (hidden/4,)
    index = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(index, index, indexing="ij")  # (g, g) each

    def one_axis(pos: torch.Tensor) -> torch.Tensor:  # (g, g) -> (g*g, hidden/2)
        angles = pos.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([one_axis(cols), one_axis(rows)], dim=1).float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x * (1 + scale) + shift`` with per-sample (N, C) shift / scale over tokens x (N, T, C)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class LabelEmbedder(nn.Module):
    """Conditioning vectors ``embedding_table`` (num_classes + 1 null row when ``dropout_prob > 0``, hidden).

    In training, each label is replaced by the null row ``num_classes`` with probability ``dropout_prob``.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.num_classes, self.dropout_prob = num_classes, dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)

    def forward(self, labels: torch.LongTensor) -> torch.Tensor:  # (N,) -> (N, hidden)
        if self.training and self.dropout_prob > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return self.embedding_table(labels)


class DiTBlock(nn.Module):
    """adaLN-Zero block: ``x + gate * f(LN(x) * (1 + scale) + shift)`` for f = attention, then MLP; the six
    (shift, scale, gate) vectors come from ``adaLN_modulation`` = SiLU -> Linear(hidden, 6 * hidden) of c."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # x (N, T, C), c (N, C)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate1.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))


class DiTFinalLayer(nn.Module):
    """Modulated LayerNorm (``adaLN_modulation`` = SiLU -> Linear(hidden, 2 * hidden)) -> Linear(hidden, p*p*D)."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # (N, T, C) -> (N, T, p*p*D)
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiTVQBridge(BridgePositions, nn.Module):
    """The official recipes' bridge: raw codebook (K, D) -> projected codebook (K, D), or one per class label.

    Args:
        codebook_size: K, a perfect square whose root is a multiple of ``patch_size``.
        codebook_dim: D.
        patch_size, hidden_size, depth, num_heads, mlp_ratio: transformer shape (official presets:
            ``QBRIDGE_MODELS``).
        num_classes: 0 for the unconditional bridge (one conditioning row, label always 0); otherwise the number of
            classes of the class-conditional bridge.
        class_dropout_prob: label dropout of the class-conditional bridge in training (adds the null row
            ``num_classes`` when > 0).

    ``pos_embed`` (1, T, hidden) is a persistent buffer: saved and loaded with the weights, never trained. At
    initialisation every adaLN Linear and the final Linear are zero, so the projected codebook is exactly 0.
    """

    def __init__(
        self,
        codebook_size: int,
        codebook_dim: int,
        patch_size: int = 4,
        hidden_size: int = 256,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        num_classes: int = 0,
        class_dropout_prob: float = 0.1,
    ):
        super().__init__()
        side = math.isqrt(codebook_size)
        if side * side != codebook_size or side % patch_size:
            roots = [r for r in (side - side % patch_size, side - side % patch_size + patch_size) if r > 0]
            options = " or ".join(str(r * r) for r in roots)
            raise ValueError(
                f"codebook_size={codebook_size} cannot be laid out for the DiT VQBridge with "
                f"bridge_patch_size={patch_size}: its position embedding needs a square grid, codebook_size = "
                f"(n * {patch_size})**2. Use codebook_size {options}, or the ViT bridge (bridge_type='vit')."
            )
        if num_classes < 0:
            raise ValueError(f"bridge_num_classes must be 0 (unconditional) or positive, got {num_classes}.")
        self.codebook_size, self.codebook_dim, self.patch_size = codebook_size, codebook_dim, patch_size
        self.grid = (side, side)
        self.num_classes = num_classes
        self.x_embedder = PatchEmbed(patch_size, codebook_dim, hidden_size)
        if num_classes == 0:  # the official --is_uncondition: one row, no dropout
            self.y_embedder = LabelEmbedder(1, hidden_size, 0.0)
        else:
            self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        tokens = (side // patch_size) ** 2
        self.register_buffer("pos_embed", torch.zeros(1, tokens, hidden_size), persistent=True)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = DiTFinalLayer(hidden_size, patch_size, codebook_dim)
        self.reset_parameters()

    @property
    def is_conditional(self) -> bool:
        return self.num_classes > 0

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        side = self.grid[0] // self.patch_size
        self.pos_embed.copy_(sincos_pos_embed_2d(self.pos_embed.shape[-1], side)[None])
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        for layer in [block.adaLN_modulation[-1] for block in self.blocks] + [
            self.final_layer.adaLN_modulation[-1],
            self.final_layer.linear,
        ]:
            nn.init.zeros_(layer.weight)  # adaLN-Zero, and C' == 0 at step 0 (no skip path)
            nn.init.zeros_(layer.bias)

    def forward(self, codebook: torch.Tensor, class_labels: torch.LongTensor | None = None) -> torch.Tensor:
        """(K, D) -> (K, D) for the default label 0 (what the official bridge uses when given no label), or
        (N, K, D), one codebook per entry of ``class_labels`` (N,). The unconditional bridge ignores labels."""
        (gh, gw), p, d = self.grid, self.patch_size, self.codebook_dim
        labels = class_labels
        if labels is None or not self.is_conditional:
            n = 1 if class_labels is None else class_labels.shape[0]
            labels = torch.zeros(n, dtype=torch.long, device=codebook.device)
        picture = codebook.view(1, gh, gw, d).permute(0, 3, 1, 2)  # (1, D, H, W)
        x = self.x_embedder(picture) + self.pos_embed.to(codebook.dtype)  # (1, T, hidden)
        c = self.y_embedder(labels)  # (N, hidden)
        x = x.expand(c.shape[0], -1, -1)
        for block in self.blocks:
            x = block(x, c)
        x = self.final_layer(x, c)  # (N, T, p*p*D), ordered (p_row, p_col, D)
        x = x.reshape(-1, gh // p, gw // p, p, p, d).permute(0, 1, 3, 2, 4, 5)  # (N, H/p, p, W/p, p, D)
        x = x.reshape(-1, self.codebook_size, d)
        return x[0] if class_labels is None else x


BRIDGE_CLASSES = {"vit": VQBridge, "dit": DiTVQBridge}
