"""Restarts of dead VQBridge positions (``--bridge-restart-every N``; off by default, not in the official recipe).

The bridge's final layer has one block of weight rows per position inside a patch, and a block learns only when
one of its own codes is picked. In short runs whole positions die that way: at 65,536 codes (S/8 bridge, 64
positions) 10 of 64 had no used code after 400 steps, capping usage near 84% (``benchmarks/usage_demo_curves.md``).
Every N steps, each position none of whose codes was picked in those N steps (summed over processes) gets the rows
of the most-picked position plus 10% noise (``BridgePositions.copy_position``): a near-copy of a live sub-codebook,
which the nearest-code search then splits between the two, as k-means splits a cluster.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast


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
        sharded = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)
        if accelerator.distributed_type in sharded:
            raise ValueError(
                f"bridge_restart_every={every} rewrites rows of the bridge's final layer in place, which "
                f"{accelerator.distributed_type.value} shards across processes; train with DDP (a plain "
                "`accelerate launch --multi_gpu`) or leave bridge_restart_every at 0."
            )
        self.bridge, self.every, self.noise, self.accelerator = bridge, every, noise, accelerator
        self.positions = bridge.code_positions()
        self.hits = torch.zeros(bridge.patch_size**2, dtype=torch.long)
        self.restarted = 0  # positions restarted so far (a position restarted twice counts twice)

    def update(self, indices: torch.Tensor) -> None:
        """Count the picks of one forward pass (its code indices, any shape)."""
        self.hits += torch.bincount(self.positions[indices.detach().flatten().cpu()], minlength=self.hits.numel())

    def step(self, step: int) -> list[int]:
        """Before the forward pass of a step that follows ``step`` completed steps: at multiples of ``every``,
        restart the positions with no pick since the last restart and start counting again. Returns them."""
        if step == 0 or step % self.every:
            return []
        acc = self.accelerator
        hits = self.hits
        if acc.num_processes > 1:
            hits = acc.reduce(hits.to(acc.device), reduction="sum").cpu()
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
        hits = self.hits
        if self.accelerator.num_processes > 1:
            hits = self.accelerator.reduce(hits.to(self.accelerator.device), reduction="sum").cpu()
        return {"hits": hits.tolist(), "restarted": self.restarted}

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


class DeadCodePull:
    """Which codes are dead, for the quantizer's ``pull_loss`` (``--dead-code-pull W``; off by default).

    Steps are cut into windows of ``window`` steps; the codes no process picked in the last complete window are
    dead, and each step passes up to ``max_codes`` of them (in turn, so all get pulled within a few steps) to the
    model as ``pull_codes``. The quantizer then draws each towards its nearest latent of the batch, through
    whatever parametrises the codebook (for FVQ: the bridge and the raw codebook). A code that wins tokens again
    leaves the set at the next window.
    """

    def __init__(self, codebook_size: int, window: int, accelerator: Accelerator, max_codes: int = 8192):
        if window < 1:
            raise ValueError(f"dead_code_window must be a positive number of steps, got {window}.")
        self.window, self.accelerator, self.max_codes = window, accelerator, max_codes
        self.picked = torch.zeros(codebook_size, dtype=torch.bool, device=accelerator.device)
        self.dead = torch.zeros(0, dtype=torch.long, device=accelerator.device)

    def update(self, indices: torch.Tensor) -> None:
        """Mark the codes of one forward pass (its code indices, any shape) as picked in this window."""
        self.picked[indices.detach().flatten()] = True

    def _picked_anywhere(self) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return self.picked
        return self.accelerator.reduce(self.picked.float(), reduction="sum") > 0

    def step(self, step: int) -> None:
        """Before the forward pass of a step that follows ``step`` completed steps: at multiples of ``window``,
        the codes no process picked in the window just ended become the dead set, and a new window starts."""
        if step == 0 or step % self.window:
            return
        self.dead = (~self._picked_anywhere()).nonzero().flatten()
        self.picked.zero_()

    def codes(self, step: int) -> torch.LongTensor | None:
        """The dead codes to pull at ``step``: all of them, or the ``step``-th slice of ``max_codes`` in turn."""
        n = self.dead.numel()
        if n == 0:
            return None
        if n <= self.max_codes:
            return self.dead
        start = (step * self.max_codes) % n
        return self.dead.roll(-start)[: self.max_codes]

    def state_dict(self) -> dict:
        """The window's picks over all processes (every process calls it) and the dead set, as hex bit masks."""
        k = self.picked.numel()
        return {"codebook_size": k, "picked": _pack(self._picked_anywhere()), "dead": _pack(_mask(self.dead, k))}

    def load_state_dict(self, state: dict) -> None:
        k = self.picked.numel()
        if state["codebook_size"] != k:
            raise ValueError(
                f"The checkpoint marks dead codes of a {state['codebook_size']}-code codebook, this model has {k} "
                "codes: it was saved by a run with another codebook."
            )
        self.picked = _unpack(state["picked"], k).to(self.picked.device)
        if not self.accelerator.is_main_process:  # the main process holds the window's picks of all processes
            self.picked.zero_()
        self.dead = _unpack(state["dead"], k).nonzero().flatten().to(self.picked.device)


def _mask(ids: torch.Tensor, size: int) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool, device=ids.device)
    mask[ids] = True
    return mask


def _pack(mask: torch.Tensor) -> str:
    """A bool mask as hex of its bits (8 per byte, first code in the lowest bit): compact JSON for 262k codes."""
    bits = mask.cpu().to(torch.uint8)
    bits = torch.cat([bits, bits.new_zeros(-len(bits) % 8)]).view(-1, 8)
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)
    return bytes((bits * weights).sum(1, dtype=torch.uint8).tolist()).hex()


def _unpack(text: str, size: int) -> torch.Tensor:
    data = torch.tensor(list(bytes.fromhex(text)), dtype=torch.uint8)
    bits = (data.unsqueeze(1) >> torch.arange(8, dtype=torch.uint8)) & 1
    return bits.flatten()[:size].bool()
