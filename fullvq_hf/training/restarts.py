"""Restarts of dead codes, off by default and in no official recipe: whole VQBridge positions
(``--bridge-restart-every N``, ``BridgePositionRestarts``) or single codes (``--code-restart-every N``,
``CodeRestarts``).

Bridge positions.

The bridge's final layer has one block of weight rows per position inside a patch, and a block learns only when
one of its own codes is picked. In short runs whole positions die that way: at 65,536 codes (S/8 bridge, 64
positions) 10 of 64 had no used code after 400 steps, capping usage near 84% (``benchmarks/usage_demo_curves.md``).
Every N steps, each position none of whose codes was picked in those N steps (summed over processes) gets the rows
of the most-picked position plus 10% noise (``BridgePositions.copy_position``): a near-copy of a live sub-codebook,
which the nearest-code search then splits between the two, as k-means splits a cluster.

Single codes. A live position still leaves codes dead or nearly so: each position's codes are one linear image of
the patch features, and its outer codes sit where few or no latents are (at 65,536 codes 9,029 of them dead on the
test split after 1,600 steps, median 0.29 from the nearest test latent against 0.07 for used codes;
``benchmarks/usage_demo_curves.md``, seventh wave). Each code keeps a decayed count of its picks (all processes;
time constant W = ``--code-restart-window`` steps, so about its picks in the last W steps). Every N steps the codes
whose count is below T (``--code-restart-threshold``) are moved onto distinct latents of the step's batch, the
lowest counts first and at most one batch's worth, as the dead-code restarts of Jukebox and vector-quantize-pytorch
(its ``threshold_ema_dead_code``) do. The move goes through the quantizer's per-code offset (``restart_codes``), so
the bridge and raw codebook stay as trained and the code keeps moving with them. Latents drawn from the batch
follow the data's density, so the moved codes' cells hold similar numbers of tokens; T above 1 also moves the
codes that are alive but rarely picked, which a finite test split leaves unused.

Tracking (``--code-track-rate R``, with the code restarts). Codes placed on a batch's latents do not follow the
latents as the encoder trains on, and cells of codes drawn from the data are unequal. With R > 0 every code picked in
a step moves R of the way to the mean of the latents that picked it (the offset again), an online k-means step as
EMA codebooks make (VQ-VAE-2, vector-quantize-pytorch's ``ema_update``), which evens the cells out: in a probe at
65,536 codes (1,000 steps, one seed) R = 0.1 took the test split's usage from 98.25% to 99.47%
(``benchmarks/usage_demo_curves.md``, eleventh wave).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast

from ..models.quantizers import nearest_codes


def _check_unsharded(accelerator: Accelerator, option: str, what: str) -> None:
    sharded = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)
    if accelerator.distributed_type in sharded:
        name = option.split("=")[0]
        raise ValueError(
            f"{option} rewrites {what} in place, which {accelerator.distributed_type.value} shards across "
            f"processes; train with DDP (a plain `accelerate launch --multi_gpu`) or leave {name} at 0."
        )


def _distinct_latents(latents: torch.Tensor) -> torch.Tensor:
    """The distinct rows of ``latents`` (N, D): identical latents (a flat background) would make identical codes, of
    which the search only ever picks the first."""
    return torch.unique(latents.detach().float(), dim=0)


def _draw(pool: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` rows of ``pool`` drawn at random without replacement."""
    return pool[torch.randperm(len(pool), generator=generator)[:n].to(pool.device)]


class BridgePositionRestarts:
    """Counts picks per bridge position; ``step(step)`` restarts the dead ones at multiples of ``every``."""

    def __init__(self, model: torch.nn.Module, every: int, accelerator: Accelerator, noise: float = 0.1):
        bridge = getattr(getattr(model, "quantize", None), "qbridge", None)
        if bridge is None:
            raise ValueError(
                f"bridge_restart_every={every} restarts positions of a VQBridge, and this model has none "
                "(an FVQ model with quantizer_type 'vqbridge'); leave bridge_restart_every at 0."
            )
        if every < 1:
            raise ValueError(f"bridge_restart_every must be a positive number of steps (or 0: off), got {every}.")
        _check_unsharded(accelerator, f"bridge_restart_every={every}", "rows of the bridge's final layer")
        self.bridge, self.every, self.noise, self.accelerator = bridge, every, noise, accelerator
        self.positions = bridge.code_positions()
        self.hits = torch.zeros(bridge.patch_size**2, dtype=torch.long)
        self.restarted = 0  # positions restarted so far (a position restarted twice counts twice)

    def update(self, indices: torch.Tensor) -> None:
        """Count the picks of one forward pass (its code indices, any shape)."""
        self.hits += torch.bincount(self.positions[indices.detach().flatten().cpu()], minlength=self.hits.numel())

    def summed_hits(self) -> torch.Tensor:
        """This window's picks per position over all processes (a collective: every process calls it)."""
        if self.accelerator.num_processes == 1:
            return self.hits
        return self.accelerator.reduce(self.hits.to(self.accelerator.device), reduction="sum").cpu()

    def step(self, step: int) -> list[int]:
        """Before the forward pass of a step that follows ``step`` completed steps: at multiples of ``every``,
        restart the positions with no pick since the last restart and start counting again. Returns them."""
        if step == 0 or step % self.every:
            return []
        acc = self.accelerator
        hits = self.summed_hits()
        dead = (hits == 0).nonzero().flatten().tolist()
        if dead:
            self.bridge.copy_position(int(hits.argmax()), dead, self.noise)
            if acc.num_processes > 1:  # every process drew its own noise: keep the main process's rows
                layer = self.bridge.final_layer.linear
                with torch.no_grad():
                    for param in (layer.weight, layer.bias):
                        param.copy_(broadcast(param.detach().clone()))
        self.hits.zero_()
        self.restarted += len(dead)
        return dead

    def state_dict(self) -> dict:
        """The window's picks summed over processes (every process calls it) and the restart count."""
        return {"hits": self.summed_hits().tolist(), "restarted": self.restarted}

    def load_state_dict(self, state: dict) -> None:
        """Resume a window: the main process holds its summed picks, the others start from zero (the next
        reduction then sums exactly what an uninterrupted run would)."""
        if len(state["hits"]) != self.hits.numel():
            raise ValueError(
                f"The checkpoint counts picks for {len(state['hits'])} bridge positions, this model's bridge has "
                f"{self.hits.numel()}: it was saved by a run with another bridge."
            )
        self.hits = torch.tensor(state["hits"], dtype=torch.long)
        if not self.accelerator.is_main_process:
            self.hits.zero_()
        self.restarted = int(state["restarted"])


def share_threshold(share: float, window: int, batch_size: int, tokens_per_image: int, codebook_size: int) -> float:
    """The ``code_restart_threshold`` that restarts the codes picked less than ``share`` x a code's mean picks in
    ``window`` steps (``window`` x ``batch_size`` x ``tokens_per_image`` / ``codebook_size``, the batch of all
    processes), so that one share means the same at every codebook size and batch (1.28 at 16,384 codes and batch 64
    with 8x8 tokens: 32 picks)."""
    return share * window * batch_size * tokens_per_image / codebook_size


class CodeRestarts:
    """A decayed pick count per code (time constant ``window`` steps, picks of all processes); ``step(done,
    latents)`` restarts the codes below ``threshold`` at multiples of ``every`` and, with ``track`` > 0, moves the
    picked codes towards their latents' mean every step (see the module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        every: int,
        window: int,
        accelerator: Accelerator,
        threshold: float = 1.0,
        seed: int = 0,
        track: float = 0.0,
    ):
        quantize = getattr(model, "quantize", None)
        if getattr(quantize, "code_offset", None) is None:
            raise ValueError(
                f"code_restart_every={every} moves codes through per-code offsets, and this model has none: build it "
                "with code_offsets=True (the trainer does so for fresh FVQ models and --finetune-from-vq; a model "
                "given by --init-from keeps its architecture, and VQGAN-LC models have no offsets), or leave "
                "code_restart_every at 0."
            )
        if getattr(quantize, "is_conditional", False):
            raise ValueError(
                f"code_restart_every={every}: this model's DiT bridge is class-conditional (one codebook per class), "
                "and one offset per code cannot place a code for every class; leave code_restart_every at 0."
            )
        if every < 1 or window < 1 or not threshold > 0:
            raise ValueError(
                f"code_restart_every, code_restart_window and code_restart_threshold must be positive, got {every}, "
                f"{window} and {threshold} (code_restart_every 0 turns restarts off)."
            )
        if not 0.0 <= track <= 1.0:
            raise ValueError(f"code_track_rate is the fraction of the way a picked code moves to its latents' mean each "
                             f"step: between 0 (off) and 1, got {track}.")  # fmt: skip
        _check_unsharded(accelerator, f"code_restart_every={every}", "the quantizer's code offsets")
        self.quantize, self.every, self.accelerator, self.seed = quantize, every, accelerator, seed
        self.decay, self.threshold = 1.0 - 1.0 / window, float(threshold)
        # a fresh code's count: it falls below the threshold after ``window`` steps without a pick (decay**window
        # ~ 1/e), so no code counts as dead before one window has passed, and a restarted code gets a window too
        self.fresh = self.threshold * math.e
        self.recent = torch.full((quantize.codebook_size,), self.fresh, dtype=torch.float64)
        self.pending = torch.zeros(quantize.codebook_size, dtype=torch.long)  # picks of this step so far
        self.track = float(track)
        # with tracking, the sum of the latents that picked each code this step so far (K, D)
        self.pending_sums = torch.zeros(quantize.codebook_size, quantize.codebook_dim) if self.track else None
        self.restarted = 0  # codes restarted so far (a code restarted twice counts twice)

    def update(self, indices: torch.Tensor, latents: torch.Tensor | None = None) -> None:
        """Count the picks of one forward pass: its code indices (B, h, w) and, with tracking, the quantizer input
        they were picked for (B, D, h, w)."""
        ids = indices.detach().flatten().cpu()
        self.pending += torch.bincount(ids, minlength=self.pending.numel())
        if self.track:
            if latents is None:
                raise ValueError("CodeRestarts with track > 0 needs the latents of the picks: update(indices, latents).")
            flat = latents.detach().permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).float().cpu()
            self.pending_sums.index_add_(0, ids, flat)

    def step(self, done: int, latents: torch.Tensor) -> int:
        """After the optimizer step that completes step ``done`` (1-based), with ``latents`` (B, D, h, w) the
        quantizer input of its last micro-batch (every process calls it): add the step's picks of all processes to
        the decayed counts; with tracking, move each code picked in the step ``track`` of the way to the mean of the
        latents that picked it; at multiples of ``every``, move the codes whose count is below the threshold onto
        distinct latents, the lowest counts first (those are not tracked). Returns how many codes were restarted."""
        acc = self.accelerator
        picks, sums = self.pending, self.pending_sums
        if acc.num_processes > 1:  # every process adds the same picks, so the counts stay equal everywhere
            picks = acc.reduce(picks.to(acc.device), reduction="sum").cpu()
            if sums is not None:
                sums = acc.reduce(sums.to(acc.device), reduction="sum").cpu()
        self.recent.mul_(self.decay).add_(picks)
        hit = (picks > 0).nonzero().flatten() if sums is not None else None  # tracked: picked this step
        means = sums[hit] / picks[hit, None] if hit is not None else None
        self.pending.zero_()  # (``picks`` and ``sums`` may be these very tensors)
        if sums is not None:
            self.pending_sums.zero_()
        n, lowest = 0, None
        dead = (self.recent < self.threshold).nonzero().flatten() if done % self.every == 0 else None
        if dead is not None and len(dead):
            z = _distinct_latents(latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]))
            n = min(len(dead), len(z))
            if acc.num_processes > 1:  # the main process's latents decide (``dead`` is the same on every process)
                n = int(broadcast(torch.tensor([n], device=acc.device)).item())
            lowest = dead[torch.argsort(self.recent[dead], stable=True)[:n]]
            if hit is not None:  # a restarted code is not tracked as well
                keep = ~torch.isin(hit, lowest)
                hit, means = hit[keep], means[keep]
            self.recent[lowest] = self.fresh
            self.restarted += n
        if hit is None and lowest is None:
            return 0
        if acc.is_main_process:  # one move of all the codes: one pass of the bridge
            ids, targets, rate = [], [], 1.0
            if hit is not None:
                ids, targets = [hit], [means]
                rate = torch.cat([torch.full((len(hit),), self.track), torch.ones(n)])
            if lowest is not None:
                ids.append(lowest)
                targets.append(_draw(z, n, torch.Generator().manual_seed(self.seed * 1_000_003 + done)).cpu())
            device = self.quantize.code_offset.device  # restart_codes puts ``rate`` on the targets' device
            self.quantize.restart_codes(torch.cat(ids).to(device), torch.cat(targets).to(device), rate)
        if acc.num_processes > 1:
            offsets = self.quantize.code_offset
            offsets.copy_(broadcast(offsets.detach().clone()))
        return n

    def state_dict(self) -> dict:
        """The decayed counts (the same on every process between steps) and the restart count."""
        return {"recent": self.recent.tolist(), "restarted": self.restarted}

    def load_state_dict(self, state: dict) -> None:
        if len(state["recent"]) != self.recent.numel():
            raise ValueError(
                f"The checkpoint counts picks of {len(state['recent'])} codes, this model has "
                f"{self.recent.numel()}: it was saved by a run with another codebook size."
            )
        self.recent = torch.tensor(state["recent"], dtype=torch.float64)
        self.restarted = int(state["restarted"])


@torch.no_grad()
def reseed_rare_codes(
    quantize: torch.nn.Module,
    latents: torch.Tensor,
    rounds: int = 4,
    window: int | None = None,
    threshold: float = 2.0,
    seed: int = 0,
) -> list[int]:
    """Finish a trained codebook on fixed latents (N, D), e.g. the whole train split's: in each of ``rounds``,
    search a random ``window`` of the latents (None: all of them) and move the codes picked fewer than ``threshold`` times in it, the
    least picked first, onto distinct latents drawn from all of them (``quantize.restart_codes``). No training: the
    encoder and the other codes stay as they are. Returns the number of codes moved per round.

    Not in any official recipe. During training, restarted codes drift with the bridge (at 16k and 65k codes, by
    7-26x the code spacing between steps 200 and 400, ``benchmarks/usage_demo_curves.md``, eighth wave); on a
    finished model they stay where they are put.
    """
    if rounds < 0 or (window is not None and window < 1) or not threshold > 0:
        raise ValueError(f"rounds >= 0, window >= 1 (or None) and threshold > 0 are needed, got {rounds}, {window} and "
                         f"{threshold}.")  # fmt: skip
    latents = latents.detach().float()
    if quantize.use_l2_norm:
        latents = F.normalize(latents, dim=-1)
    pool = _distinct_latents(latents)
    g = torch.Generator().manual_seed(seed)
    moved = []
    for _ in range(rounds):
        sample = _draw(latents, window or len(latents), g)
        ids, _ = nearest_codes(sample, quantize.get_codebook().detach().float(), quantize.max_search_elements)
        counts = torch.bincount(ids, minlength=quantize.codebook_size).cpu()
        rare = (counts < threshold).nonzero().flatten()
        rare = rare[torch.argsort(counts[rare], stable=True)][: len(pool)]
        targets = _draw(pool, len(rare), g)
        if len(rare):
            quantize.restart_codes(rare.to(targets.device), targets)
        moved.append(len(rare))
    return moved
