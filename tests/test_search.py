"""The chunked nearest-neighbour search equals a brute-force argmin over the full distance matrix."""

import pytest
import torch

from fullvq_hf import nearest_codes
from fullvq_hf.models.quantizers import _search_blocks


def brute_force(z, codebook):
    d = torch.cdist(z.double(), codebook.double()).pow(2)
    return d.argmin(1), d.min(1).values


@pytest.mark.parametrize("n", [1, 64, 333])
@pytest.mark.parametrize("k", [1, 5, 1000])
@pytest.mark.parametrize("d", [1, 8, 33])
@pytest.mark.parametrize("budget", [17, 4096, 1 << 24])
def test_chunked_search_equals_brute_force(n, k, d, budget):
    g = torch.Generator().manual_seed(n * 1000 + k + d)
    z = torch.randn(n, d, generator=g)
    codebook = torch.randn(k, d, generator=g)
    idx, dist = nearest_codes(z, codebook, max_elements=budget)
    ref_idx, ref_dist = brute_force(z, codebook)
    assert idx.dtype == torch.long and idx.shape == (n,)
    # Ties aside: where indices differ, the two distances must be equal up to float32 rounding.
    same = idx == ref_idx
    chosen = (z.double() - codebook.double()[idx]).pow(2).sum(1)
    assert torch.allclose(chosen[~same], ref_dist[~same], rtol=1e-5, atol=1e-5)
    assert same.float().mean() > 0.98
    assert torch.allclose(dist.double(), ref_dist, rtol=1e-4, atol=1e-4)


def test_blocks_respect_the_budget():
    for n, k, budget in [(4096, 65536, 1 << 24), (10**6, 262144, 1 << 22), (3, 10**6, 1000), (5000, 7, 64)]:
        tn, kc = _search_blocks(n, k, budget)
        assert 1 <= tn <= n and 1 <= kc <= k
        assert tn * kc <= max(budget, 1)


def test_ties_go_to_the_lowest_index_across_blocks():
    codebook = torch.zeros(10, 4)
    codebook[7] = 5.0  # every code but 7 is at distance 0 from z = 0
    z = torch.zeros(3, 4)
    idx, _ = nearest_codes(z, codebook, max_elements=2)  # one code per block
    assert idx.tolist() == [0, 0, 0]


def test_search_runs_in_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 16, generator=g)
    codebook = torch.randn(300, 16, generator=g)
    ref, _ = nearest_codes(z, codebook)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        idx, dist = nearest_codes(z, codebook)
    assert dist.dtype == torch.float32
    assert torch.equal(idx, ref)


def test_search_rejects_mismatched_dims():
    with pytest.raises(ValueError, match="codebook"):
        nearest_codes(torch.randn(4, 8), torch.randn(10, 7))


@pytest.mark.slow
def test_one_million_codes_run():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(256, 8, generator=g)
    codebook = torch.randn(1 << 20, 8, generator=g)
    idx, _ = nearest_codes(z, codebook, max_elements=1 << 22)
    assert int(idx.max()) < (1 << 20)


@pytest.mark.parametrize("budget", [7, 3000, 1 << 24])
@pytest.mark.parametrize("k", [3, 700, 2100])
def test_ids_equal_brute_force_exactly_with_ties(budget, k):
    """Small integer coordinates make every distance exact in float32 whatever the summation order, and give
    many exact ties: the ids must equal the brute-force argmin (lowest index on ties) exactly, across blocks."""
    g = torch.Generator().manual_seed(k + budget)
    z = torch.randint(-3, 4, (1500, 8), generator=g).float()
    codebook = torch.randint(-2, 3, (k, 8), generator=g).float()
    idx, dist = nearest_codes(z, codebook, max_elements=budget)
    exact = (z.long()[:, None, :] - codebook.long()[None, :, :]).pow(2).sum(-1)  # (N, K) int64
    assert torch.equal(idx, exact.argmin(1))
    assert torch.equal(dist, exact.min(1).values.float())
