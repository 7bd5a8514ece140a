"""Side-by-side speed of this checkout against a base commit, interleaved in one run.

Two measures, each in fresh subprocesses that import either the base commit's ``fullvq_hf`` or this one (by
PYTHONPATH), alternating old/new (and which goes first) round after round, so a machine shared with other work
slows both alike:

    step    one training step of the tokenizer preset ``cpu-fmnist-fvq`` (16,384 codes, dim 8, VQBridge S/4, batch 64 of
            real Fashion-MNIST): forward, MSE + quantizer loss, backward, grad clipping, Adam, as the trainer does;
            with the step's floating-point operations (torch's FlopCounterMode) and a 2048^2 sgemm's rate measured in
            the same subprocess, so the table says how far the step runs from what the cores can compute
    gstep   one training step of the demo's generator (preset ``cpu-fmnist-gpt``: 4 layers of width 128 over 8 x 8
            tokens of 16,384 codes, batch 64 of seeded random tokens): loss, backward, grad clipping, AdamW; the
            losses of the timed steps are compared (rounded to 3 decimals, they must be equal)
    search  the exact nearest-code search ``nearest_codes`` at dim 8: ``--search-tokens`` tokens against 262,144
            codes; the time of a 262k train-split evaluation search (3.84M tokens) is extrapolated from it, and the
            ids of both versions are compared (must be identical)

    git worktree add /tmp/base40 40f3699        # once (the script does it when --base-src is missing)
    python benchmarks/bench_train_step.py --base-src /tmp/base40 --rounds 5 --out benchmarks/results_train_step

Writes ``<out>.json`` and ``<out>.md`` (medians, and old/new ratios of wall time and of CPU time (user + sys)).
Both subprocesses run with the environment this script gets (torch's default thread count, no OMP variables):
the new code's own process settings (``fullvq_hf.runtime``) are part of what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN_SPLIT_TOKENS = 60000 * 64  # Fashion-MNIST train split at 8x8 tokens
MODES = ("step", "gstep", "search")

CHILD = r"""
import hashlib, json, os, resource, sys, time
import fullvq_hf  # first, as the CLI and the examples do
import torch
import torch.nn.functional as F
mode, n = sys.argv[1], int(sys.argv[2])

def usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime, r.ru_stime, r.ru_minflt

if mode == "step":
    from fullvq_hf.data import load_fashion_mnist, to_pixels
    from fullvq_hf.training.config import make_config
    from fullvq_hf.training.tokenizer_trainer import build_model
    torch.manual_seed(0)
    model = build_model(make_config({"preset": "cpu-fmnist-fvq"})).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    images = to_pixels(load_fashion_mnist("train")[0][: 64 * (n + 2)])
    def step(i):
        x = images[64 * i : 64 * (i + 1)]
        out = model(x)
        loss = F.mse_loss(out.sample.float(), x) + out.loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    step(0); step(1)  # warm-up
    t0 = usage()
    for i in range(n):
        step(i + 2)
    t1 = usage()
    digest = ""
    # the step's arithmetic (convolutions, matmuls, attention, as torch counts it) and, in this same process, a
    # large sgemm's rate: how close the step already runs to what these cores can compute
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        step(0)
    flops = counter.get_total_flops()
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    g0 = time.perf_counter()
    for _ in range(5):
        a @ b
    gemm = 5 * 2 * 2048**3 / (time.perf_counter() - g0)
elif mode == "gstep":
    flops = gemm = None
    from fullvq_hf.training.llamagen_trainer import build_model, make_llamagen_config
    torch.manual_seed(0)
    facts = dict(num_tokens=64, grid=(8, 8), codebook_size=16384, label_range=(0, 9), num_classes=10,
                 class_names=None)
    model = build_model(make_llamagen_config({"preset": "cpu-fmnist-gpt"}), facts).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 16384, (n + 2, 64, 64), generator=g)
    classes = torch.randint(0, 10, (n + 2, 64), generator=g)
    def step(i):
        loss = model(input_ids=tokens[i], class_labels=classes[i], labels=tokens[i]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    step(0); step(1)  # warm-up
    t0 = usage()
    losses = [step(i + 2) for i in range(n)]
    t1 = usage()
    digest = json.dumps([round(x, 3) for x in losses])  # the same training: the losses agree to 3 decimals
else:
    flops = gemm = None
    from fullvq_hf import nearest_codes
    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(262144, 8, generator=g)
    z = torch.randn(n, 8, generator=g)
    nearest_codes(z[:64], codebook)  # warm-up
    t0 = usage()
    ids, _ = nearest_codes(z, codebook)
    t1 = usage()
    digest = hashlib.sha256(ids.numpy().tobytes()).hexdigest()
    n = 1
print("@@" + json.dumps({"wall": (t1[0] - t0[0]) / n, "user": (t1[1] - t0[1]) / n, "sys": (t1[2] - t0[2]) / n,
                         "minflt": (t1[3] - t0[3]) / n, "threads": torch.get_num_threads(),
                         "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "result": digest,
                         "step_flops": flops, "gemm_flops_per_s": gemm}))
"""


def run_child(src: Path, mode: str, n: int, timeout: int, extra_env: dict | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), **(extra_env or {}))
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(n)], env=env, capture_output=True, text=True,
                         timeout=timeout, cwd="/tmp")  # fmt: skip
    lines = [line for line in out.stdout.splitlines() if line.startswith("@@")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} run of {src} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][2:])


def ensure_base(base_src: Path, commit: str) -> None:
    if not (base_src / "fullvq_hf" / "__init__.py").exists():
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(base_src), commit], check=True
        )


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--base-src", default="/tmp/base40", help="checkout of the base commit (created if missing)"
    )
    p.add_argument("--base-commit", default="40f3699")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=4, help="timed training steps per subprocess")
    p.add_argument("--search-tokens", type=int, default=16384)
    p.add_argument("--only", choices=MODES, action="append", help="measures to run (default: all)")
    p.add_argument("--base-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment of the old runs only, e.g. OMP_WAIT_POLICY=PASSIVE to separate the "
                        "code's gains from the new process settings")  # fmt: skip
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results_train_step"))
    args = p.parse_args(argv)
    base = Path(args.base_src)
    ensure_base(base, args.base_commit)
    versions = {"old": base, "new": REPO}
    modes = [m for m in MODES if not args.only or m in args.only]
    runs = {m: {"old": [], "new": []} for m in modes}
    for r in range(args.rounds):
        for mode in modes:
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for v in order:
                n = args.search_tokens if mode == "search" else args.steps
                extra = dict(kv.split("=", 1) for kv in args.base_env) if v == "old" else None
                res = run_child(versions[v], mode, n, args.timeout, extra)
                runs[mode][v].append(res)
                print(f"round {r} {mode:6s} {v}: wall {res['wall']:.3f}s user {res['user']:.3f}s sys {res['sys']:.3f}s "
                      f"minflt {res['minflt']:.0f}", flush=True)  # fmt: skip
    summary = {}
    for mode in modes:
        s = {}
        for v in ("old", "new"):
            rs = runs[mode][v]
            s[v] = {k: statistics.median(x[k] for x in rs) for k in ("wall", "user", "sys", "minflt")}
            s[v]["cpu"] = statistics.median(x["user"] + x["sys"] for x in rs)
            s[v]["threads"] = rs[0]["threads"]
            s[v]["omp_wait_policy"] = rs[0]["omp_wait_policy"]
            if mode == "step":
                s[v]["step_flops"] = rs[0]["step_flops"]
                s[v]["gemm_flops_per_s"] = statistics.median(x["gemm_flops_per_s"] for x in rs)
                s[v]["step_flops_per_s"] = s[v]["step_flops"] / s[v]["wall"]
        s["wall_ratio"] = s["old"]["wall"] / s["new"]["wall"]
        s["cpu_ratio"] = s["old"]["cpu"] / s["new"]["cpu"]
        s["per_round_wall_ratios"] = [
            o["wall"] / n["wall"] for o, n in zip(runs[mode]["old"], runs[mode]["new"])
        ]
        if mode in ("search", "gstep"):
            digests = {x["result"] for v in ("old", "new") for x in runs[mode][v]}
            s["results_identical"] = len(digests) == 1
        if mode == "search":
            scale = TRAIN_SPLIT_TOKENS / args.search_tokens
            s["train_split_eval_minutes"] = {v: s[v]["wall"] * scale / 60 for v in ("old", "new")}
        summary[mode] = s
    load = os.getloadavg()
    result = {"base_commit": args.base_commit, "base_env": args.base_env, "rounds": args.rounds, "steps": args.steps,
              "search_tokens": args.search_tokens, "cpu_count": os.cpu_count(), "load_average_at_end": load,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "summary": summary, "runs": runs}  # fmt: skip
    Path(args.out + ".json").write_text(json.dumps(result, indent=2))
    lines = [f"# Side-by-side: base {args.base_commit} (old) vs this checkout (new)", "",
             f"{os.cpu_count()} cores, load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
             f"(the machine was shared); {args.rounds} interleaved rounds, medians; fresh subprocess per measure; "
             f"torch threads {summary[modes[0]]['new']['threads']}; old runs' OMP_WAIT_POLICY: "
             f"{summary[modes[0]]['old']['omp_wait_policy']}, new: {summary[modes[0]]['new']['omp_wait_policy']}.", "",
             "| measure | old wall | new wall | wall ratio | old CPU (user+sys) | new CPU | CPU ratio | old sys | new sys |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    names = {"step": "training step, cpu-fmnist-fvq (s)", "gstep": "generator training step, cpu-fmnist-gpt (s)",
             "search": f"nearest_codes {args.search_tokens} tokens x 262,144 codes, dim 8 (s)"}  # fmt: skip
    for mode in modes:
        s = summary[mode]
        o, n = s["old"], s["new"]
        lines.append(f"| {names[mode]} | {o['wall']:.3f} | {n['wall']:.3f} | **{s['wall_ratio']:.2f}x** | {o['cpu']:.3f} | "
                     f"{n['cpu']:.3f} | **{s['cpu_ratio']:.2f}x** | {o['sys']:.3f} | {n['sys']:.3f} |")  # fmt: skip
    if "step" in summary:
        lines += ["", "Arithmetic of one step (`torch.utils.flop_counter.FlopCounterMode`) and its rate, against a 2048 x "
                  "2048 sgemm timed in the same subprocesses (medians):", "",
                  "| version | GFLOP per step | step GFLOP/s | sgemm GFLOP/s | step rate / sgemm rate |", "|---|---|---|---|---|"]
        for v in ("old", "new"):
            x = summary["step"][v]
            lines.append(f"| {v} | {x['step_flops'] / 1e9:.1f} | {x['step_flops_per_s'] / 1e9:.0f} | "
                         f"{x['gemm_flops_per_s'] / 1e9:.0f} | {x['step_flops_per_s'] / x['gemm_flops_per_s']:.0%} |")
    if "gstep" in summary:
        lines += ["", f"Generator losses of old and new equal to 3 decimals: **{summary['gstep']['results_identical']}**."]
    if "search" in summary:
        s = summary["search"]
        lines += ["", f"Search ids of old and new identical: **{s['results_identical']}**. Extrapolated search time of a "
                  f"262k train-split evaluation (3.84M tokens): old {s['train_split_eval_minutes']['old']:.1f} min, "
                  f"new {s['train_split_eval_minutes']['new']:.1f} min (wall, this machine's load)."]  # fmt: skip
    lines += ["", "Command: `python benchmarks/bench_train_step.py " + " ".join(argv or sys.argv[1:]) + "`"]
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
