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
