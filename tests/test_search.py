"""The chunked nearest-neighbour search equals a brute-force argmin over the full distance matrix."""

import pytest
import torch

from fullvq_hf import nearest_codes
from fullvq_hf.models.quantizers import _search_blocks


def exact_sq_dist(z, codebook):
    """(N, K) int64 squared distances of integer-valued points: exact, whatever the summation order."""
    return (z.long()[:, None, :] - codebook.long()[None, :, :]).pow(2).sum(-1)


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
    exact = exact_sq_dist(z, codebook)
    assert torch.equal(idx, exact.argmin(1))
    assert torch.equal(dist, exact.min(1).values.float())


def integer_points(n, k, d, seed):
    g = torch.Generator().manual_seed(seed)
    # clustered like latents: a few centres, small integer offsets (exact in float32, many exact ties)
    centres = torch.randint(-20, 21, (6, d), generator=g)
    z = centres[torch.randint(0, 6, (n,), generator=g)] + torch.randint(-3, 4, (n, d), generator=g)
    codebook = centres[torch.randint(0, 6, (k,), generator=g)] + torch.randint(-4, 5, (k, d), generator=g)
    return z.float(), codebook.float()


@pytest.mark.parametrize("k", [257, 1000, 4096])
@pytest.mark.parametrize("budget", [300, 1 << 24])
def test_pruned_search_ids_equal_brute_force_exactly_with_ties(k, budget):
    """The k-d tree pruned search (a whole split against a large codebook) gives exactly the dense search's ids,
    lowest index on ties, for codebook sizes that are not a multiple of the leaf size (padded leaves)."""
    from fullvq_hf.models.quantizers import _pruned_search

    z, codebook = integer_points(6000, k, 8, k + budget)
    idx, dist = _pruned_search(z, codebook, budget)
    exact = exact_sq_dist(z, codebook)
    assert torch.equal(idx, exact.argmin(1))
    assert torch.equal(dist, exact.min(1).values.float())


def test_pruned_search_matches_dense_on_continuous_latents():
    from fullvq_hf.models.quantizers import _dense_search, _pruned_search

    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(3000, 8, generator=g) * torch.linspace(0.2, 2.0, 8)
    z = codebook[torch.randint(0, 3000, (20000,), generator=g)] + 0.05 * torch.randn(20000, 8, generator=g)
    idx, dist = _pruned_search(z, codebook, 1 << 24)
    ref_idx, ref_dist = _dense_search(z, codebook, 1 << 24)
    assert torch.allclose(dist, ref_dist, rtol=1e-5, atol=1e-5)
    # ids may differ only where two codes are equally near up to float32 rounding
    chosen = (z.double() - codebook.double()[idx]).pow(2).sum(1)
    ref = (z.double() - codebook.double()[ref_idx]).pow(2).sum(1)
    assert torch.allclose(chosen, ref, rtol=1e-5, atol=1e-6)
    assert (idx == ref_idx).float().mean() > 0.999


def test_kd_leaves_cover_every_code():
    from fullvq_hf.models.quantizers import _kd_leaves

    codebook = torch.randn(1000, 8, generator=torch.Generator().manual_seed(0))
    leaves, dims, values = _kd_leaves(codebook, 64)
    assert leaves.shape == (16, 63) and len(dims) == len(values) == 4
    assert torch.equal(torch.unique(leaves), torch.arange(1000))


def test_large_cpu_searches_take_the_pruned_path(monkeypatch):
    from fullvq_hf.models import quantizers

    calls = []
    real = quantizers._pruned_search
    monkeypatch.setattr(quantizers, "_pruned_search", lambda *a: calls.append(1) or real(*a))
    z, codebook = integer_points(3000, 1000, 8, 0)
    quantizers.nearest_codes(z, codebook)  # N x K below the threshold: dense
    assert not calls
    monkeypatch.setattr(quantizers, "_PRUNE_MIN_PAIRS", 1)
    idx, _ = quantizers.nearest_codes(z, codebook)
    assert calls == [1]
    exact = exact_sq_dist(z, codebook)
    assert torch.equal(idx, exact.argmin(1))
    quantizers.nearest_codes(torch.cat([z] * 3, 1)[:, :17], torch.cat([codebook] * 3, 1)[:, :17])  # dim 17: dense
    assert calls == [1]


def test_non_finite_inputs_keep_the_dense_search(monkeypatch):
    from fullvq_hf.models import quantizers

    z, codebook = integer_points(3000, 1000, 8, 1)
    z[5, 2] = float("nan")
    monkeypatch.setattr(quantizers, "_PRUNE_MIN_PAIRS", 1)
    monkeypatch.setattr(quantizers, "_pruned_search", lambda *a: pytest.fail("pruned search on a NaN latent"))
    idx, _ = quantizers.nearest_codes(z, codebook)
    assert idx.shape == (3000,) and int(idx.max()) < 1000
