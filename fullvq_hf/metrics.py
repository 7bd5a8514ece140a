"""Codebook statistics (and, later, image metrics)."""

from __future__ import annotations

import torch
import torch.distributed as dist


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
