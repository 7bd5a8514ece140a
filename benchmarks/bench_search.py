"""The exact nearest-code search over a whole Fashion-MNIST split, dense against pruned, side by side in one run.

    python benchmarks/bench_search.py RUN/model [--split train] [--rounds 1] [--threads 1] [--out PREFIX]

Encodes the split with the exported tokenizer (its encoder once), then times, alternating round after round, the
dense search over every code (``_dense_search``) and what ``nearest_codes`` does with the same inputs (at a whole
split against a large codebook of small dim: the k-d tree pruned search, ``_pruned_search``); both must give the same
ids, and the distances within float32 rounding. Prints a table and, with ``--out``, writes ``PREFIX.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from codebook_oracle import latents  # noqa: E402

from fullvq_hf.models.loading import load_tokenizer  # noqa: E402
from fullvq_hf.models.quantizers import DEFAULT_MAX_SEARCH_ELEMENTS, _dense_search, nearest_codes  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="an exported tokenizer folder (a run's model/)")
    p.add_argument("--split", default="train", choices=["train", "test"])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="write PREFIX.json and PREFIX.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_tokenizer(args.model).eval()
    z = latents(model, args.split)
    if model.quantize.use_l2_norm:
        z = torch.nn.functional.normalize(z, dim=-1)
    codebook = model.quantize.get_codebook().detach().float()
    searches = {"dense": lambda: _dense_search(z, codebook, DEFAULT_MAX_SEARCH_ELEMENTS),
                "nearest_codes": lambda: nearest_codes(z, codebook)}  # fmt: skip
    times, results = {name: [] for name in searches}, {}
    for r in range(args.rounds):
        for name in list(searches)[:: 1 if r % 2 == 0 else -1]:
            t0 = time.perf_counter()
            results[name] = searches[name]()
            times[name].append(time.perf_counter() - t0)
            print(f"round {r + 1}: {name} {times[name][-1]:.1f} s", flush=True)
    (ids_d, dist_d), (ids_p, dist_p) = results["dense"], results["nearest_codes"]
    dense_s, pruned_s = statistics.median(times["dense"]), statistics.median(times["nearest_codes"])
    out = {"model": str(args.model), "split": args.split, "tokens": len(z), "codes": len(codebook),
           "dim": codebook.shape[1], "threads": args.threads, "rounds": args.rounds, "seconds": times,
           "speed_up": dense_s / pruned_s, "ids_equal": bool(torch.equal(ids_d, ids_p)),
           "ids_differing": int((ids_d != ids_p).sum()), "max_distance_difference": float((dist_d - dist_p).abs().max()),
           "usage": float((torch.bincount(ids_p, minlength=len(codebook)) > 0).double().mean()),
           "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}"}  # fmt: skip
    table = ["| split | tokens | codes | dim | dense search | `nearest_codes` | speed-up | ids equal | usage |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| {args.split} | {len(z):,} | {len(codebook):,} | {codebook.shape[1]} | {dense_s:.1f} s | {pruned_s:.1f} s "
             f"| {out['speed_up']:.1f}x | {out['ids_equal']} ({out['ids_differing']} differ) | {out['usage']:.2%} |"]  # fmt: skip
    print("\n".join(table))
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(
            f"`python benchmarks/bench_search.py {args.model} --split {args.split} --rounds {args.rounds} "
            f"--threads {args.threads}` (medians of {args.rounds} round(s), {args.threads} thread(s))\n\n"
            + "\n".join(table) + "\n"
        )  # fmt: skip
    return out


if __name__ == "__main__":
    main()
