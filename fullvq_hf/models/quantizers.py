"""Vector quantization: one core (chunked nearest-neighbour search, straight-through estimator, losses, stats)
and the codebook parametrisations built on it.

    VectorQuantizer          plain trainable codebook ``embedding`` (LlamaGen VQ, the baseline)
    VQBridgeQuantizer        FVQ: raw trainable codebook -> VQBridge -> projected codebook, recomputed every step
    FrozenCodebookQuantizer  VQGAN-LC: frozen feature codebook (K, F) buffer -> trainable Linear(F -> D)
    SimVQQuantizer           SimVQ: frozen Gaussian codebook (K, D) buffer -> trainable Linear(D -> D)

Each parametrisation only overrides ``project_codebook() -> (K, D)``; search, losses and statistics are shared.
With ``code_offsets=True`` a buffer ``code_offset`` (K, D), zero at the start, is added to it: dead-code restarts
(``fullvq_hf.training.restarts.CodeRestarts``) move single codes onto latents through it, leaving the
parametrisation (the bridge, the raw codebook) untouched.

The search never holds a tokens x codes matrix larger than ``max_search_elements`` float32 values: tokens and codes
are walked in blocks, keeping a running minimum of ``|e|^2 - 2 z.e`` (``|z|^2`` is constant per token), always in
float32 (autocast off), whatever the training precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput
from torch import nn
from torch.utils.checkpoint import checkpoint

from .vqbridge import BRIDGE_CLASSES

DEFAULT_MAX_SEARCH_ELEMENTS = 1 << 24  # upper bound on the float32 distances of one block (64 MiB)
# Cache-sized blocks: at small code dims (D = 8) the GEMM writes far more than it reads, so a block must stay in
# L2/L3; MKL's sgemm with a tiny inner dimension is also fastest for at most ~512 output columns.
_CODE_BLOCK, _BLOCK_ELEMENTS = 512, 1 << 20


def _search_blocks(num_tokens: int, num_codes: int, max_elements: int) -> tuple[int, int]:
    """(token block, code block) sizes whose product stays within ``max_elements`` (and ~4 MiB of float32)."""
    max_elements = max(1, int(max_elements))
    code_block = min(num_codes, _CODE_BLOCK, max_elements)
    token_block = min(num_tokens, max(1, min(max_elements, _BLOCK_ELEMENTS) // code_block))
    return token_block, code_block


# The pruned search (CPU, many tokens against a large codebook of small dim, e.g. a whole split's evaluation): the
# codebook is cut into k-d tree leaves of _PRUNE_LEAF codes, and the tokens falling into a leaf's cell are searched
# only against the leaves whose bounding box can hold a code nearer than what the nearest _PRUNE_FIRST boxes gave.
_PRUNE_LEAF, _PRUNE_FIRST, _PRUNE_MAX_DIM = 64, 4, 16
# where it measured faster (benchmarks/README.md, bench_search.py), with a margin; one training batch (4,096
# tokens, a tree rebuilt for a codebook that moves every step) stays with the dense search
_PRUNE_MIN_PAIRS, _PRUNE_MIN_TOKENS_PER_CODE = 1 << 31, 2
_PRUNE_TOLERANCE = 1e-5  # x (|z| + max |e|)^2: far above float32 rounding of a distance (~1e-6 of that)


@torch.no_grad()
def nearest_codes(
    z: torch.Tensor, codebook: torch.Tensor, max_elements: int = DEFAULT_MAX_SEARCH_ELEMENTS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact squared-L2 nearest neighbour of each row of ``z`` (N, D) among the rows of ``codebook`` (K, D).

    Returns ``(indices (N,) int64, squared distances (N,) float32)``. Ties go to the lowest index, as in
    ``torch.argmin``. Peak extra memory is at most ``max_elements`` float32 values (one reused block of at most
    2**20) plus O(N + K * D).

    Per block of tokens x codes: one GEMM ``[z, 1] @ [-2e, |e|^2]^T`` into a reused buffer, then the row minima
    (``amin``, vectorised); the index-tracking ``argmin`` only runs on the rows this block improves (strictly, so
    earlier blocks win ties), which after the first few blocks are few.

    On CPU, with D <= 16, at least 2 tokens per code and N x K >= 2**31 (a whole split against a large codebook),
    the same search runs only over the codes that can be nearest (``_pruned_search``): the same ids, the distances
    equal up to float32 rounding, many times faster at D = 8.
    """
    if z.ndim != 2 or codebook.ndim != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(f"nearest_codes expects z (N, D) and codebook (K, D); got {tuple(z.shape)} and {tuple(codebook.shape)}.")
    with torch.autocast(device_type=z.device.type, enabled=False):
        z, codebook = z.float(), codebook.float()
        (n, d), k = z.shape, codebook.shape[0]
        # (the pruned search needs finite values: a box with a NaN bounds nothing)
        if (z.device.type == "cpu" and d <= _PRUNE_MAX_DIM and k >= 4 * _PRUNE_LEAF and n * k >= _PRUNE_MIN_PAIRS
                and n >= _PRUNE_MIN_TOKENS_PER_CODE * k and bool(torch.isfinite(z).all())
                and bool(torch.isfinite(codebook).all())):  # fmt: skip
            return _pruned_search(z, codebook, max_elements)
        return _dense_search(z, codebook, max_elements)


def _dense_search(z: torch.Tensor, codebook: torch.Tensor, max_elements: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``nearest_codes`` over every code (float32 inputs)."""
    n, k = z.shape[0], codebook.shape[0]
    indices = torch.empty(n, device=z.device, dtype=torch.long)
    best = torch.empty(n, device=z.device, dtype=torch.float32)
    if n == 0:
        return indices, best
    # (D+1, K): column j is [-2 e_j, |e_j|^2], so [z, 1] @ codes_aug = |e|^2 - 2 z.e (|z|^2 is added at the end)
    codes_aug = torch.cat([codebook * -2.0, codebook.pow(2).sum(1, keepdim=True)], dim=1).t().contiguous()
    token_block, code_block = _search_blocks(n, k, max_elements)
    scratch = torch.empty(token_block * code_block, device=z.device, dtype=torch.float32)
    block_min = torch.empty(token_block, device=z.device, dtype=torch.float32)
    for t0 in range(0, n, token_block):
        zt = z[t0 : t0 + token_block]
        tn = len(zt)
        zt = torch.cat([zt, zt.new_ones(tn, 1)], dim=1)  # (tn, D+1)
        best_t, idx_t = best[t0 : t0 + tn], indices[t0 : t0 + tn]
        for c0 in range(0, k, code_block):
            ct = codes_aug[:, c0 : c0 + code_block]
            dist = scratch[: tn * ct.shape[1]].view(tn, ct.shape[1])
            torch.mm(zt, ct, out=dist)  # (tn, kc)
            if c0 == 0:
                torch.amin(dist, dim=1, out=best_t)
                torch.argmin(dist, dim=1, out=idx_t)
                continue
            values = torch.amin(dist, dim=1, out=block_min[:tn])
            rows = (values < best_t).nonzero().squeeze(1)  # strict: earlier blocks win ties
            if len(rows):
                best_t[rows] = values[rows]
                idx_t[rows] = dist.index_select(0, rows).argmin(dim=1).add_(c0)
    best += z.pow(2).sum(1)
    return indices, best.clamp_min_(0)


def _kd_leaves(codebook: torch.Tensor, leaf: int) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """A balanced k-d tree over the codes: ``(leaves (G, m) code ids, split dims, split values)``, G = 2**levels
    leaves of m <= ~``leaf`` codes, one (2**level,) dim and value per level. Each node splits its codes at the median
    of the dim where they spread widest. K is padded to G x m with repeated codes (a leaf may hold a code twice, or
    a code of another leaf; its box still bounds real codes only)."""
    k = codebook.shape[0]
    levels = max(0, math.ceil(math.log2(k / leaf)))
    num_leaves = 1 << levels
    per_leaf = -(-k // num_leaves)
    ids = torch.arange(num_leaves * per_leaf, device=codebook.device) % k
    dims, values = [], []
    for level in range(levels):
        nodes = 1 << level
        x = codebook[ids].view(nodes, -1, codebook.shape[1])
        dim = (x.amax(1) - x.amin(1)).argmax(1)  # (nodes,)
        key, order = x.gather(2, dim.view(-1, 1, 1).expand(-1, x.shape[1], 1)).squeeze(2).sort(dim=1, stable=True)
        ids = ids.view(nodes, -1).gather(1, order).flatten()
        half = x.shape[1] // 2
        dims.append(dim)
        values.append((key[:, half - 1] + key[:, half]) / 2)
    return ids.view(num_leaves, per_leaf), dims, values


def _pruned_search(z: torch.Tensor, codebook: torch.Tensor, max_elements: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``nearest_codes`` over the codes that can be nearest (float32 inputs).

    The tokens are walked down the codebook's k-d tree (``_kd_leaves``); the tokens of each leaf's cell are searched
    against the ``_PRUNE_FIRST`` leaves whose bounding boxes are nearest to the cell's box, which bounds each token's
    distance from above, and then, exactly, against every leaf whose box is within the largest of these bounds plus a
    float32 margin, the candidate codes in ascending order (so ties still go to the lowest index). A code outside
    these leaves is farther from every token of the cell than a code the search has seen."""
    n, d = z.shape
    leaves, dims, values = _kd_leaves(codebook, _PRUNE_LEAF)
    leaf_codes = codebook[leaves]  # (G, m, D)
    lo, hi = leaf_codes.amin(1).double(), leaf_codes.amax(1).double()
    margin = (z.norm(dim=1).double() + codebook.norm(dim=1).max().double()).pow(2) * _PRUNE_TOLERANCE
    cell = torch.zeros(n, dtype=torch.long, device=z.device)
    for dim, value in zip(dims, values):
        cell = cell * 2 + (z.gather(1, dim[cell].unsqueeze(1)).squeeze(1) > value[cell]).long()
    order = torch.argsort(cell, stable=True)
    counts = torch.bincount(cell, minlength=len(leaves)).tolist()
    indices = torch.empty(n, device=z.device, dtype=torch.long)
    best = torch.empty(n, device=z.device, dtype=torch.float32)
    start = 0
    for count in counts:
        if not count:
            continue
        rows = order[start : start + count]
        start += count
        zc = z[rows]
        z64 = zc.double()
        gap = torch.maximum(lo - z64.amax(0), z64.amin(0) - hi).clamp_min_(0)
        lower = gap.pow_(2).sum(1)  # (G,): no code of a leaf is nearer than this to any token of the cell
        near = lower.topk(min(_PRUNE_FIRST, len(lower)), largest=False).indices
        upper = _dense_search(zc, leaf_codes[near].reshape(-1, d), max_elements)[1].double() + margin[rows]
        candidates = torch.unique(leaves[lower <= upper.max()])  # sorted: ties go to the lowest index
        idx, dist = _dense_search(zc, codebook[candidates], max_elements)
        indices[rows], best[rows] = candidates[idx], dist
    return indices, best


def _entropy_block(z: torch.Tensor, codebook: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over a block of tokens of the per-token entropy and of the soft assignment (K,)."""
    logits = (2 * z @ codebook.t() - codebook.pow(2).sum(1) - z.pow(2).sum(1, keepdim=True)) / temperature
    log_probs = logits.log_softmax(dim=-1)
    probs = log_probs.exp()
    return -(probs * log_probs).sum(), probs.sum(0)


def entropy_loss(
    z: torch.Tensor, codebook: torch.Tensor, temperature: float = 0.01, max_elements: int = DEFAULT_MAX_SEARCH_ELEMENTS
) -> torch.Tensor:
    """LlamaGen's codebook entropy loss (mean per-token entropy minus entropy of the mean assignment),
    computed over token blocks with activation checkpointing, so memory stays within ``max_elements``."""
    n, k = z.shape[0], codebook.shape[0]
    block = max(1, min(n, int(max_elements) // k))
    sample_entropy, avg_probs = z.new_zeros(()), z.new_zeros(k)
    for t0 in range(0, n, block):
        h, p = checkpoint(_entropy_block, z[t0 : t0 + block], codebook, temperature, use_reentrant=False)
        sample_entropy = sample_entropy + h
        avg_probs = avg_probs + p
    avg_probs = avg_probs / n
    avg_entropy = -(avg_probs * torch.log(avg_probs + 1e-5)).sum()
    return sample_entropy / n - avg_entropy


@dataclass
class QuantizerOutput(BaseOutput):
    """
    Args:
        quantized (`torch.Tensor` of shape `(batch_size, codebook_dim, height, width)`):
            Quantised latents with the straight-through estimator (values of the codes, gradient of the input).
        indices (`torch.LongTensor` of shape `(batch_size, height, width)`): Code index of every position.
        loss (`torch.Tensor`): Weighted sum of the three terms below.
        codebook_loss (`torch.Tensor`): ``mean((z_q - sg(z))^2)`` (moves the codebook).
        commitment_loss (`torch.Tensor`): ``mean((sg(z_q) - z)^2)`` (moves the encoder), weighted by ``beta``.
        entropy_loss (`torch.Tensor`): LlamaGen's entropy regulariser, zero when disabled.
        perplexity (`torch.Tensor`): ``exp(entropy)`` of the code histogram of this batch.
        batch_usage (`torch.Tensor`): Fraction of the codebook hit by this batch.
    """

    quantized: torch.Tensor
    indices: torch.LongTensor
    loss: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    entropy_loss: torch.Tensor
    perplexity: torch.Tensor
    batch_usage: torch.Tensor


class VectorQuantizer(nn.Module):
    """Plain VQ with a trainable codebook ``embedding`` (K, D), uniform(-1/K, 1/K) initialisation.

    Args:
        codebook_size: number of codes K.
        codebook_dim: code dimension D.
        beta: weight of the commitment loss.
        codebook_loss_weight: weight of the codebook loss.
        entropy_loss_weight: weight of the entropy loss (0 disables it and costs nothing).
        entropy_temperature: temperature of the soft assignment in the entropy loss.
        use_l2_norm: cosine search: l2-normalise latents and codes (LlamaGen's own tokenizer).
        max_search_elements: float32 budget of one block of the distance matrix.
        code_offsets: keep a per-code offset buffer ``code_offset`` (K, D), added to the parametrised codebook;
            zero until ``restart_codes`` moves codes (not in any official recipe).
    """

    def __init__(
        self,
        codebook_size: int,
        codebook_dim: int,
        beta: float = 0.25,
        codebook_loss_weight: float = 1.0,
        entropy_loss_weight: float = 0.0,
        entropy_temperature: float = 0.01,
        use_l2_norm: bool = False,
        max_search_elements: int = DEFAULT_MAX_SEARCH_ELEMENTS,
        code_offsets: bool = False,
    ):
        super().__init__()
        if codebook_size < 1 or codebook_dim < 1:
            raise ValueError(f"codebook_size and codebook_dim must be positive, got {codebook_size} and {codebook_dim}.")
        self.codebook_size, self.codebook_dim = codebook_size, codebook_dim
        self.beta, self.codebook_loss_weight = beta, codebook_loss_weight
        self.entropy_loss_weight, self.entropy_temperature = entropy_loss_weight, entropy_temperature
        self.use_l2_norm = use_l2_norm
        self.max_search_elements = max_search_elements
        self._init_codebook()
        # a registered buffer (saved, moved, broadcast by DDP) when on; None registers nothing
        self.register_buffer("code_offset", torch.zeros(codebook_size, codebook_dim) if code_offsets else None)

    def _init_codebook(self) -> None:
        self.embedding = nn.Embedding(self.codebook_size, self.codebook_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / self.codebook_size, 1.0 / self.codebook_size)

    def project_codebook(self) -> torch.Tensor:
        """The parametrisation: trainable weights -> codebook (K, D). Subclasses override this only."""
        return self.embedding.weight

    def offset_codebook(self) -> torch.Tensor:
        """The parametrised codebook plus the restart offsets, if the quantizer has them (K, D): what ``fold``
        stores as a plain codebook."""
        codebook = self.project_codebook()
        return codebook if self.code_offset is None else codebook + self.code_offset.to(codebook.dtype)

    def get_codebook(self) -> torch.Tensor:
        """The codebook the search runs against (K, D): projected (plus the restart offsets), and l2-normalised
        when ``use_l2_norm``."""
        codebook = self.offset_codebook()
        return F.normalize(codebook, dim=-1) if self.use_l2_norm else codebook

    @torch.no_grad()
    def restart_codes(self, ids: torch.LongTensor, targets: torch.Tensor, rate: float | torch.Tensor = 1.0) -> None:
        """Move the codes ``ids`` (n,) onto ``targets`` (n, D), latents as the quantizer receives them, by setting
        their offsets: ``get_codebook()[ids]`` then equals ``targets`` (l2-normalised when ``use_l2_norm``). Only
        the offsets change; the codes keep moving with the parametrisation as it trains. ``rate`` (a number, or one
        per code (n,)) moves them that fraction of the way instead (1: onto the targets). A plain codebook without
        offsets (``VectorQuantizer``, e.g. a folded FVQ model) gets the rows written instead."""
        plain = type(self).project_codebook is VectorQuantizer.project_codebook  # the codes are the weights
        if self.code_offset is None and not plain:
            raise ValueError(
                "This quantizer has no code offsets to restart codes with; build the model with code_offsets=True "
                "(the trainer does so with --code-restart-every), or restart the codes of its folded form "
                "(FVQModel.fold(), a plain codebook)."
            )
        if ids.ndim != 1 or targets.shape != (len(ids), self.codebook_dim):
            raise ValueError(f"restart_codes expects ids (n,) and targets (n, {self.codebook_dim}); got "
                             f"{tuple(ids.shape)} and {tuple(targets.shape)}.")  # fmt: skip
        targets = targets.float()
        if self.use_l2_norm:
            targets = F.normalize(targets, dim=-1)
        rate = torch.as_tensor(rate, dtype=torch.float32, device=targets.device)
        if rate.ndim:
            rate = rate[:, None]
        if self.code_offset is None:  # a plain codebook: write the rows
            if rate.ndim or float(rate) != 1.0:
                current = self.embedding.weight[ids].float()
                targets = current + rate * (targets - current)
            self.embedding.weight[ids] = targets.to(self.embedding.weight.dtype)
            return
        current = self.offset_codebook().float()[ids]
        self.code_offset[ids] += (rate * (targets - current)).to(self.code_offset.dtype)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:  # z: (B, D, h, w)
        b, d, h, w = z.shape
        if d != self.codebook_dim:
            raise ValueError(f"The quantizer expects latents with codebook_dim={self.codebook_dim} channels, got {d}.")
        codebook = self.get_codebook().float()  # (K, D)
        z_flat = z.permute(0, 2, 3, 1).reshape(-1, d).float()  # (N, D)
        if self.use_l2_norm:
            z_flat = F.normalize(z_flat, dim=-1)
        indices, _ = nearest_codes(z_flat.detach(), codebook.detach(), self.max_search_elements)
        z_q = F.embedding(indices, codebook)  # (N, D), gradient reaches the codebook (and its projector)
        codebook_loss = F.mse_loss(z_q, z_flat.detach())
        commitment_loss = F.mse_loss(z_flat, z_q.detach())
        ent = (
            entropy_loss(z_flat, codebook, self.entropy_temperature, self.max_search_elements)
            if self.entropy_loss_weight > 0
            else z_flat.new_zeros(())
        )
        loss = self.codebook_loss_weight * codebook_loss + self.beta * commitment_loss + self.entropy_loss_weight * ent
        z_st = z_flat + (z_q - z_flat).detach()  # straight-through
        quantized = z_st.reshape(b, h, w, d).permute(0, 3, 1, 2).to(z.dtype)
        with torch.no_grad():
            counts = torch.bincount(indices, minlength=self.codebook_size).float()
            probs = counts / counts.sum()
            perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-12))).sum())
            batch_usage = (counts > 0).float().mean()
        return QuantizerOutput(
            quantized=quantized,
            indices=indices.reshape(b, h, w),
            loss=loss,
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            entropy_loss=ent,
            perplexity=perplexity,
            batch_usage=batch_usage,
        )

    @torch.no_grad()
    def search(self, z: torch.Tensor) -> torch.LongTensor:
        """Indices only (no losses, no graph): (B, D, h, w) -> (B, h, w)."""
        b, d, h, w = z.shape
        z_flat = z.permute(0, 2, 3, 1).reshape(-1, d).float()
        if self.use_l2_norm:
            z_flat = F.normalize(z_flat, dim=-1)
        codebook = self.get_codebook().float()
        return nearest_codes(z_flat, codebook, self.max_search_elements)[0].reshape(b, h, w)

    def lookup(self, indices: torch.LongTensor) -> torch.Tensor:
        """Code vectors of ``indices`` (B, h, w) as latents (B, D, h, w)."""
        codebook = self.get_codebook()
        return F.embedding(indices, codebook).permute(0, 3, 1, 2).contiguous()


class VQBridgeQuantizer(VectorQuantizer):
    """FVQ: the raw codebook ``embedding`` is passed through a bridge ``qbridge`` every step; search runs against
    ``C' = qbridge(embedding)``, so every code receives gradient through the shared bridge.

    ``bridge_type`` is ``"vit"`` (``VQBridge``, the paper's) or ``"dit"`` (``DiTVQBridge``, the official recipes';
    ``bridge_num_classes`` > 0 makes it class-conditional, and search / lookup then use the codebook of label 0,
    as the official model does when given no label; in training, label dropout draws the null-class codebook for
    the whole batch with probability ``bridge_class_dropout_prob``, where the official draws it per image).
    ``init_l2_norm`` l2-normalises the raw codebook once at initialisation, as the official bridge quantizer does
    with ``--codebook-l2-norm``; it never normalises in the forward (``use_l2_norm`` is the cosine search).
    """

    def __init__(
        self,
        codebook_size: int,
        codebook_dim: int,
        bridge_type: str = "vit",
        bridge_patch_size: int = 4,
        bridge_hidden_size: int = 256,
        bridge_depth: int = 2,
        bridge_num_heads: int = 4,
        bridge_mlp_ratio: float = 2.0,
        bridge_num_classes: int = 0,
        bridge_class_dropout_prob: float = 0.1,
        init_l2_norm: bool = False,
        **kwargs,
    ):
        if bridge_type not in BRIDGE_CLASSES:
            raise ValueError(f"bridge_type={bridge_type!r} is not one of {sorted(BRIDGE_CLASSES)}.")
        if bridge_type == "vit" and bridge_num_classes:
            raise ValueError(
                f"bridge_num_classes={bridge_num_classes}: only the DiT bridge (bridge_type='dit') can be "
                "class-conditional; use bridge_num_classes=0 with the ViT bridge."
            )
        self.bridge_type, self.init_l2_norm = bridge_type, init_l2_norm
        self._bridge_args = dict(
            patch_size=bridge_patch_size,
            hidden_size=bridge_hidden_size,
            depth=bridge_depth,
            num_heads=bridge_num_heads,
            mlp_ratio=bridge_mlp_ratio,
        )
        if bridge_type == "dit":
            self._bridge_args.update(num_classes=bridge_num_classes, class_dropout_prob=bridge_class_dropout_prob)
        super().__init__(codebook_size, codebook_dim, **kwargs)

    def _init_codebook(self) -> None:
        super()._init_codebook()
        if self.init_l2_norm:
            with torch.no_grad():
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))
        self.qbridge = BRIDGE_CLASSES[self.bridge_type](self.codebook_size, self.codebook_dim, **self._bridge_args)

    @property
    def is_conditional(self) -> bool:
        """Whether the bridge gives one codebook per class label (a class-conditional DiT bridge)."""
        return bool(getattr(self.qbridge, "is_conditional", False))

    def project_codebook(self) -> torch.Tensor:
        return self.qbridge(self.embedding.weight)


class FrozenCodebookQuantizer(VectorQuantizer):
    """VQGAN-LC: a frozen codebook of pretrained features ``frozen_codebook`` (K, F) (a buffer: never trained,
    never in an optimizer) and a trainable ``codebook_projection`` Linear(F -> D), weight ~ N(0, D^-1/2)."""

    def __init__(self, codebook_size: int, codebook_dim: int, codebook_feature_dim: int = 768, **kwargs):
        self.codebook_feature_dim = codebook_feature_dim
        super().__init__(codebook_size, codebook_dim, **kwargs)

    def _init_codebook(self) -> None:
        # Placeholder features until ``load_codebook`` (or from_pretrained) fills them in.
        self.register_buffer("frozen_codebook", torch.randn(self.codebook_size, self.codebook_feature_dim))
        self.codebook_projection = nn.Linear(self.codebook_feature_dim, self.codebook_dim)
        nn.init.normal_(self.codebook_projection.weight, std=self.codebook_dim**-0.5)
        nn.init.zeros_(self.codebook_projection.bias)

    def project_codebook(self) -> torch.Tensor:
        return self.codebook_projection(self.frozen_codebook.to(self.codebook_projection.weight.dtype))


class SimVQQuantizer(VectorQuantizer):
    """SimVQ: a frozen Gaussian codebook ``frozen_codebook`` (K, D), std D^-1/2, times one trainable
    ``embedding_proj`` Linear(D -> D)."""

    def _init_codebook(self) -> None:
        self.register_buffer("frozen_codebook", torch.randn(self.codebook_size, self.codebook_dim) * self.codebook_dim**-0.5)
        self.embedding_proj = nn.Linear(self.codebook_dim, self.codebook_dim)

    def project_codebook(self) -> torch.Tensor:
        return self.embedding_proj(self.frozen_codebook.to(self.embedding_proj.weight.dtype))


QUANTIZER_CLASSES = {
    "vq": VectorQuantizer,
    "vqbridge": VQBridgeQuantizer,
    "frozen": FrozenCodebookQuantizer,
    "simvq": SimVQQuantizer,
}
