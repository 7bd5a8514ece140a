"""Is a trained run's codebook usage limited by the data (too few test tokens per code) or by the codebook itself?

    python benchmarks/codebook_oracle.py RUN_DIR [--kmeans-iters 4] [--threads 1]

RUN_DIR is a Fashion-MNIST tokenizer run (``examples/train_tokenizer.py --preset cpu-fmnist-fvq ...``); its
exported ``model/`` is loaded and its encoder kept fixed. Over the latents of the whole train split (3.84M) and
test split (640k), the script reports usage (codes hit at least once), mean squared quantization error and
perplexity of:

- the run's own codebook (C' of the bridge, folded into ``model/``), with the per-code count quantiles and where
  its dead codes sit (distance to the nearest test latent, distance from the latents' mean);
- K latents of the train split drawn at random as codes (a codebook whose density follows the data's);
- that codebook after ``--kmeans-iters`` Lloyd iterations on the train latents (exact search, ``nearest_codes``).

If the k-means codebook of the same encoder uses (nearly) every code on the test split, the test split's tokens
are enough to hit every code of a well-placed codebook, and what limits usage is where training put the codes.

Test split or sample size (``sample_size_report``): the run's usage on random draws from the train split as large
as the test split, and the usage that the train split's per-code counts predict for that many tokens (each code hit
as a Poisson variable with the mean its train count scaled down). If both match the test usage, the codes missed on
the test split are not overfitted to the train split but picked too rarely for 640k tokens to hit them: what
limits the test figure is how unequal the codes' shares are, and the quantiles of those shares say by how much.

Train split or restart targets (``seen_report``): code restarts move codes onto latents of training batches, so on
the train split a code can count as used only because the image it was placed on is part of it. The script compares
the usage over the train images the run trained on (its sampler's order, from ``training_config.json`` and
``results.json``) with as many images it never saw; the gap measures that effect at that sample size.

For an FVQ run (``model-train/`` holds the bridge) it also reports how the bridge's structure shapes the codebook
(``bridge_report``): the covariance spectrum of the test latents against that of each position's sub-codebook
(the codes one final-layer block makes), and the dead codes' share per patch and per position.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from fullvq_hf import CodebookUsage
from fullvq_hf.data import load_fashion_mnist, to_pixels
from fullvq_hf.data.images import StepBatchSampler
from fullvq_hf.models.loading import load_tokenizer
from fullvq_hf.models.quantizers import nearest_codes


@torch.no_grad()
def latents(model, split: str, batch: int = 1000) -> torch.Tensor:
    images = load_fashion_mnist(split)[0]
    out = []
    for start in range(0, len(images), batch):
        z = model.encode(to_pixels(images[start : start + batch])).latents
        out.append(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
    return torch.cat(out)


def search_stats(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Exact search of the latents ``z`` (N, D) in ``codebook`` (K, D): the per-code counts and ``CodebookUsage``'s
    summary (usage, perplexity, used / dead codes, tokens) with the mean squared quantization error ``mse``."""
    ids, dist = nearest_codes(z, codebook)
    usage = CodebookUsage(codebook.shape[0])
    usage.update(ids)
    return usage.counts, {**usage.compute(sync=False), "mse": float(dist.double().mean())}


def stats(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, str]:
    counts, s = search_stats(z, codebook)
    return counts, f"usage {s['usage']:.4%}  mse {s['mse']:.5f}  perplexity {s['perplexity']:,.0f}"


def sample_size_report(z_train: torch.Tensor, train_counts: torch.Tensor, codebook: torch.Tensor, n: int,
                       seed: int, draws: int = 3) -> None:
    """Usage over ``draws`` random sets of ``n`` train latents, beside the usage ``train_counts`` predict for ``n``
    tokens (Poisson), and the per-code shares of the train split against the mean share."""
    g = torch.Generator().manual_seed(seed)
    drawn = [search_stats(z_train[torch.randperm(len(z_train), generator=g)[:n]], codebook)[1]["usage"]
             for _ in range(draws)]  # fmt: skip
    expected = train_counts.double() * n / len(z_train)
    predicted = float((1 - torch.exp(-expected)).mean())
    share = train_counts.double() / train_counts.double().mean()
    q = torch.quantile(share, torch.tensor([0.01, 0.05, 0.1, 0.5], dtype=torch.float64))
    print(f"  {n:,} train latents drawn at random ({draws} draws): usage {', '.join(f'{u:.2%}' for u in drawn)}; "
          f"predicted by the train counts (Poisson): {predicted:.2%}; train hits per code / mean at quantiles "
          f"1/5/10/50% = {', '.join(f'{v:.3f}' for v in q)}")  # fmt: skip


def seen_images(run_dir: Path, num_images: int) -> torch.Tensor | None:
    """Indices of the train images a finished run trained on, from its sampler's seed and the positions its steps
    consumed (``results.json``: step, global batch), or None when that cannot be told (a streamed dataset)."""
    cfg = json.loads((run_dir / "training_config.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    if cfg.get("streaming") or cfg.get("dataset") != "fashion_mnist":
        return None
    # every step consumes the next global batch of positions of the sampler's epoch permutations
    sampler = StepBatchSampler(num_images, results["global_batch_size"], seed=cfg["seed"], total_steps=results["step"])
    return torch.tensor(sorted({index for batch in sampler for _, index in batch}), dtype=torch.long)


def seen_report(run_dir: Path, z_train: torch.Tensor, codebook: torch.Tensor, seed: int) -> None:
    """Usage over the train images the run trained on against as many it never saw. Code restarts place codes on
    the latents of training batches, so a code can be used on the train split only because the image it was placed
    on is in it; a gap between the two figures measures that."""
    num_images = len(load_fashion_mnist("train")[1])
    seen = seen_images(run_dir, num_images)
    if seen is None:
        return
    unseen = torch.ones(num_images, dtype=torch.bool)
    unseen[seen] = False
    unseen = unseen.nonzero().flatten()
    m = min(len(seen), len(unseen))
    if m == 0:
        print("  seen / unseen train images: the run trained on every image, nothing is left to compare")
        return
    g = torch.Generator().manual_seed(seed)
    per_image = z_train.view(num_images, -1, z_train.shape[1])
    usage = [search_stats(per_image[ids[torch.randperm(len(ids), generator=g)[:m]]].flatten(0, 1), codebook)[1]["usage"]
             for ids in (seen, unseen)]  # fmt: skip
    print(f"  {m:,} train images the run trained on: usage {usage[0]:.2%}; {m:,} it never saw: {usage[1]:.2%} "
          f"({len(seen):,} seen in all)")


def dead_share_by(groups: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(G,) float64: the share of dead codes (count 0) in each of G equal-sized groups of codes, ``groups`` (K,)
    giving each code's group (e.g. a bridge's ``code_positions()`` or ``code_patches()``)."""
    num = int(groups.max()) + 1
    dead = (counts.cpu() == 0).double()
    return torch.zeros(num, dtype=torch.float64).index_add_(0, groups, dead) / (len(groups) // num)


def bridge_report(codebook: torch.Tensor, counts: torch.Tensor, z: torch.Tensor, bridge) -> None:
    """Shape of the bridge's sub-codebooks against the latents', and (if there are any) where the dead codes of
    ``counts`` sit by patch (bridge token) and by position inside a patch."""

    def spectrum(x: torch.Tensor) -> torch.Tensor:  # (..., N, D) -> covariance eigenvalues (..., D), largest first
        x = x.double() - x.double().mean(-2, keepdim=True)
        return torch.linalg.eigvalsh(x.transpose(-1, -2) @ x / x.shape[-2]).flip(-1)

    positions, patches = bridge.code_positions(), bridge.code_patches()
    subs = codebook[torch.argsort(positions, stable=True)].reshape(bridge.patch_size**2, -1, codebook.shape[1])
    z_eig, sub_eig = spectrum(z), spectrum(subs)
    fmt = lambda v: ", ".join(f"{x:.3g}" for x in v.tolist())  # noqa: E731
    trace = sub_eig.sum(1)
    print(f"  covariance eigenvalues: test latents {fmt(z_eig)}; position sub-codebooks (median over "
          f"{len(sub_eig)} positions) {fmt(sub_eig.median(0).values)}; total variance of a position min / median / "
          f"max {trace.min():.3g} / {trace.median():.3g} / {trace.max():.3g} (latents {z_eig.sum():.3g})")  # fmt: skip
    if not (counts == 0).any():
        return
    by_patch, by_position = dead_share_by(patches, counts), dead_share_by(positions, counts)
    worst = by_patch.sort(descending=True).values[: max(1, len(by_patch) // 10)].sum() / by_patch.sum()
    radius = (codebook - z.mean(0)).norm(dim=1).double()
    patch_radius = torch.zeros_like(by_patch).index_add_(0, patches, radius) / bridge.patch_size**2
    r = torch.corrcoef(torch.stack([by_patch, patch_radius]))[0, 1]
    q = lambda v: " / ".join(f"{x:.1%}" for x in (v.min(), v.median(), v.max()))  # noqa: E731
    print(f"  dead share per patch ({len(by_patch)}) min / median / max {q(by_patch)}, the 10% of patches with the "
          f"most hold {worst:.1%} of the dead codes, correlation with the patch's mean distance from the latents' "
          f"mean {r:.2f}; per position ({len(by_position)}) {q(by_position)}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--kmeans-iters", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    trained = args.run_dir / "model-train"  # the training model keeps the bridge (model/ has C' folded in)
    model = load_tokenizer(trained if trained.is_dir() else args.run_dir / "model").eval()
    bridge = getattr(model.quantize, "qbridge", None)
    if getattr(model.config, "use_l2_norm", False):
        raise SystemExit("error: the run uses l2-normalised codes; this script compares Euclidean codebooks only")
    codebook = model.get_codebook().detach().float()
    k = codebook.shape[0]
    z_train, z_test = latents(model, "train"), latents(model, "test")
    print(f"{args.run_dir}: K = {k:,}, dim {codebook.shape[1]}; {len(z_train):,} train and {len(z_test):,} test latents")

    def row(name: str, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        test_counts, test = stats(z_test, c)
        train_counts, train = stats(z_train, c)
        print(f"{name:<28} test: {test} | train: {train}", flush=True)
        return test_counts, train_counts

    counts, train_counts = row("run's codebook", codebook)
    sample_size_report(z_train, train_counts, codebook, len(z_test), args.seed)
    seen_report(args.run_dir, z_train, codebook, args.seed)
    q = np.quantile(counts.numpy(), [0.01, 0.05, 0.1, 0.5, 0.9, 0.99])
    print(f"  test hits per code: quantiles 1/5/10/50/90/99% = {', '.join(f'{v:g}' for v in q)}; "
          f"{(counts <= 3).double().mean():.1%} of the codes have <= 3")  # fmt: skip
    dead = counts == 0
    if dead.any():
        sample = z_test[torch.randperm(len(z_test), generator=torch.Generator().manual_seed(args.seed))[:100_000]]
        to_latent = torch.cat([torch.cdist(c, sample).min(1).values for c in codebook.split(4096)])
        centre = z_test.mean(0)
        radius = (codebook - centre).norm(dim=1)
        print(f"  dead codes ({int(dead.sum()):,}): median distance to the nearest test latent "
              f"{to_latent[dead].median():.3f} (used codes {to_latent[~dead].median():.3f}); median distance from the "
              f"latents' mean {radius[dead].median():.2f} (used codes {radius[~dead].median():.2f}, test latents "
              f"{(z_test - centre).norm(dim=1).median():.2f})")  # fmt: skip
    if bridge is not None:
        bridge_report(codebook, counts, z_test, bridge)
    g = torch.Generator().manual_seed(args.seed)
    c = z_train[torch.randperm(len(z_train), generator=g)[:k]].clone()
    row("random train latents", c)
    for it in range(1, args.kmeans_iters + 1):
        ids, _ = nearest_codes(z_train, c)
        n = torch.bincount(ids, minlength=k)
        sums = torch.zeros_like(c).index_add_(0, ids, z_train)
        hit = n > 0
        c[hit] = sums[hit] / n[hit, None].to(c.dtype)
        row(f"k-means, {it} Lloyd iteration(s)", c)


if __name__ == "__main__":
    main()
