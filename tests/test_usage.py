"""CodebookUsage counts exactly, over batches and over processes."""

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fullvq_hf import CodebookUsage


def test_counts_are_exact_over_many_batches():
    rng = np.random.default_rng(0)
    k = 1000
    batches = [rng.integers(0, k // 2, size=(4, 7, 7)) for _ in range(30)]
    usage = CodebookUsage(k)
    for b in batches:
        usage.update(torch.from_numpy(b))
    all_ids = np.concatenate([b.ravel() for b in batches])
    ref_counts = np.bincount(all_ids, minlength=k)
    stats = usage.compute()
    assert np.array_equal(usage.counts.numpy(), ref_counts)
    assert stats["num_tokens"] == all_ids.size
    assert stats["used_codes"] == int((ref_counts > 0).sum()) <= k // 2
    assert stats["dead_codes"] == k - stats["used_codes"]
    assert stats["usage"] == stats["used_codes"] / k
    p = ref_counts[ref_counts > 0] / all_ids.size
    assert math.isclose(stats["perplexity"], float(np.exp(-(p * np.log(p)).sum())), rel_tol=1e-9)


def test_uniform_usage_has_perplexity_k_and_reset_clears():
    usage = CodebookUsage(64)
    usage.update(torch.arange(64).repeat(3))
    stats = usage.compute()
    assert stats["usage"] == 1.0 and stats["dead_codes"] == 0
    assert math.isclose(stats["perplexity"], 64.0, rel_tol=1e-9)
    usage.reset()
    assert usage.compute()["num_tokens"] == 0


def test_out_of_range_ids_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        CodebookUsage(10).update(torch.tensor([3, 10]))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    usage = CodebookUsage(16)
    usage.update(torch.tensor([rank * 8 + i for i in range(8)] * (rank + 1)))  # rank 0: codes 0-7, rank 1: 8-15 twice
    stats = usage.compute()
    local = usage.compute(sync=False)
    queue.put((rank, stats, local))
    dist.barrier()
    dist.destroy_process_group()


def test_usage_compute_all_reduces_the_counts(monkeypatch):
    """compute() sums the counts over ranks (simulated in-process: the other rank saw codes 8-15 twice); the real
    two-process run below is the slow variant of the same check."""
    usage = CodebookUsage(16)
    usage.update(torch.arange(8))
    other = torch.bincount(torch.arange(8, 16).repeat(2), minlength=16)
    calls = []

    def all_reduce(tensor, op=None):
        calls.append(op)
        tensor += other

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    stats = usage.compute()
    assert calls == [dist.ReduceOp.SUM] and stats["usage"] == 1.0 and stats["num_tokens"] == 8 + 16
    assert usage.compute(sync=False)["usage"] == 0.5 and int(usage.counts.sum()) == 8  # local counts untouched


@pytest.mark.slow  # two spawned interpreters (~10 s); the in-process test above checks the same sum
def test_usage_is_summed_over_two_processes():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = {}
    for _ in range(2):
        rank, stats, local = queue.get(timeout=120)
        results[rank] = (stats, local)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for rank in (0, 1):
        stats, local = results[rank]
        assert stats["usage"] == 1.0 and stats["num_tokens"] == 8 + 16
        assert local["usage"] == 0.5
