"""Codebook usage study on Fashion-MNIST: the FVQ / VQGAN-LC papers' central table in miniature.

For every method in {plain VQ, SimVQ, VQGAN-LC-style, FVQ (VQBridge)} x codebook size K x learning-rate schedule
("annealing" = FVQ's learning annealing, "constant"), train one small tokenizer with the package's accelerate
trainer (preset ``cpu-fmnist-fvq``: backbone cpu-small, 32x32 grey images -> 8x8 tokens, codebook_dim 8) on the
same fixed step budget, batch size and seed, then measure on the Fashion-MNIST test split: exact codebook usage
(fraction of the K codes used at least once), perplexity (exp of the entropy of the code histogram), dead codes,
PSNR and SSIM.

Methods and the trainer options they map to:

    vq      plain VQ (LlamaGen-style learned codebook)      quantizer_type="vq", bridge=None
    simvq   SimVQ: frozen Gaussian codebook x Linear(D->D)  quantizer_type="simvq", bridge=None
    lc      VQGAN-LC-style: frozen codebook of pretrained  model_type="vqgan-lc", codebook_feature_dim=64,
            features x trained Linear(64->D)                lc_codebook=<k-means of classifier features>
    fvq     FVQ: raw codebook through a VQBridge            quantizer_type="vqbridge", bridge="S/4" (K <= 16384)
                                                            or "S/8" (K > 16384): the cheapest bridges, not the
                                                            paper's L/4, L/8
    fvq-r   FVQ with dead bridge positions restarted        as fvq, plus bridge_restart_every=20 (not in the
            every 20 steps                                  official recipe; benchmarks/usage_demo_curves.md,
                                                            fifth wave)
    fvq-c   FVQ with dead positions and rare codes         as fvq-r, plus code_restart_every=1,
            restarted                                       code_restart_window=100, code_restart_threshold=2
                                                            (not in the official recipe; eighth wave)
    fvq-dit FVQ with the official recipes' DiT bridge       quantizer_type="vqbridge", bridge="QBridge-S/4"
            (unconditional, fixed sin-cos positions)        (K <= 16384) or "QBridge-S/8" (K > 16384)
    fvq-dit-c  the DiT bridge with the restarts of fvq-c    as fvq-dit, plus fvq-c's restart options
    fvq-e   fvq-c moving every code below 1.28x the mean   as fvq-c, with code_restart_share=1.28 for the
            share (evens the codes' shares out)            threshold: the trainer sets it to 1.28 x the mean
                                                            picks of a code in the window, 100 x batch x 64 / K
                                                            (batch 64: 32 at 16k, 8 at 65k, 2 at 262k; ninth
                                                            and tenth waves)
    fvq-t   fvq-e whose picked codes also track their       as fvq-e, plus code_track_rate=0.1 (each step a
            latents (online k-means)                        picked code moves 0.1 of the way to the mean of
                                                            its latents; not in the official recipe; eleventh
                                                            wave)

VQGAN-LC's frozen codebook is built once per K from real pretrained features: the shipped Fashion-MNIST classifier
(``fullvq_hf.evaluation.fmnist_classifier``), conv feature maps after its second stage (``body[:8]``, (B, 64, 8, 8))
on the training images, one 64-d vector per spatial position; exact duplicates (flat background) are dropped, at
most max(2K, 100k) vectors are kept (seeded), and ``lc_codebook.kmeans`` runs a few Lloyd iterations (fewer for
large K, see ``kmeans_iters``). The codebook is cached as safetensors under ``--cache-dir`` and reused.

    python benchmarks/usage_study.py --jobs 2 --seeds 0 1 2 --frechet   # the study as published (see usage_study.md)
    python benchmarks/usage_study.py --quick         # CI-size smoke: K 1024/4096, 20 steps of batch 8, 300 test images
    python benchmarks/usage_study.py --ks 16384 --methods vq fvq --schedules constant --steps 800

Every run also counts usage on the whole train split (encoder + exact search; ``--train-usage K ...`` limits it
to some sizes) and keeps its training-time usage curve (the trainer's ``log_history.jsonl``, 40 points a run).
``--seeds`` repeats the ``--seeds-for`` methods (default FVQ) to report their spread; ``--jobs N`` runs N runs at
a time, each in a fresh spawned process with ``--threads`` threads.

Writes the markdown table to ``--output`` (default benchmarks/usage_study.md; with --quick
outputs/usage_study/quick/usage_study.md), the results as JSON (rows with their curves) and a plot (usage curves
per K, final test / train-split usage) beside it, and every run to ``<run-dir>/<method>-K<K>-<schedule>-seed<S>/``
(the trainer's own output: model, results.json, log_history.jsonl, train.log). The files are rewritten after
every run, so an interrupted study keeps the rows it finished.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import functools
import json
import multiprocessing
import os
import platform
import shlex
import sys
import time
import traceback
from pathlib import Path

import torch

# dead-code restarts, off in the official recipes (benchmarks/usage_demo_curves.md): bridge positions every 20 steps
# (fifth wave), single codes every step, those below 2 decayed picks with a 100-step time constant (eighth wave)
POSITION_RESTARTS = {"bridge_restart_every": 20}
CODE_RESTARTS = {"code_restart_every": 1, "code_restart_window": 100, "code_restart_threshold": 2.0}
# fvq-e's threshold: this many times the mean picks of a code in the window (the trainer's code_restart_share turns
# it into a code_restart_threshold), the same share at every K and batch
EVEN_SHARE = 1.28
SHARE_RESTARTS = {**{o: v for o, v in CODE_RESTARTS.items() if o != "code_restart_threshold"},
                  "code_restart_share": EVEN_SHARE}
# fvq-t: each step a picked code moves this share of the way to the mean of the latents that picked it
TRACK_RATE = 0.1
# method -> (label, plot colour, trainer options beyond the preset); FVQ methods also get bridge_for(K, method), and
# "lc" its frozen codebook (run_options)
METHOD_SPECS = {
    "vq": ("plain VQ", "tab:gray", dict(quantizer_type="vq", bridge=None)),
    "simvq": ("SimVQ", "tab:blue", dict(quantizer_type="simvq", bridge=None)),
    "lc": ("VQGAN-LC-style", "tab:green", dict(model_type="vqgan-lc", bridge=None, quantizer_type="vq")),
    "fvq": ("FVQ (VQBridge)", "tab:red", dict(quantizer_type="vqbridge")),
    "fvq-r": ("FVQ + restarts", "tab:purple", dict(quantizer_type="vqbridge", **POSITION_RESTARTS)),
    "fvq-c": ("FVQ + restarts of positions and codes", "tab:pink",
              dict(quantizer_type="vqbridge", **POSITION_RESTARTS, **CODE_RESTARTS)),
    "fvq-dit": ("FVQ (DiT bridge)", "tab:orange", dict(quantizer_type="vqbridge")),
    "fvq-dit-c": ("FVQ (DiT bridge) + restarts of positions and codes", "tab:brown",
                  dict(quantizer_type="vqbridge", **POSITION_RESTARTS, **CODE_RESTARTS)),
    "fvq-e": ("FVQ + restarts below 1.28x the mean share", "tab:olive",
              dict(quantizer_type="vqbridge", **POSITION_RESTARTS, **SHARE_RESTARTS)),
    "fvq-t": ("FVQ + restarts below 1.28x the mean share + code tracking", "tab:cyan",
              dict(quantizer_type="vqbridge", **POSITION_RESTARTS, **SHARE_RESTARTS, code_track_rate=TRACK_RATE)),
}  # fmt: skip
METHODS = tuple(METHOD_SPECS)
METHOD_LABELS = {m: spec[0] for m, spec in METHOD_SPECS.items()}
SCHEDULES = ("annealing", "constant")
DEFAULT_KS = (4096, 16384, 65536, 262144)
QUICK = {"ks": [1024, 4096], "steps": 20, "batch_size": 8, "eval_max_images": 300, "kmeans_max_vectors": 4}
PRESET = "cpu-fmnist-fvq"
CODEBOOK_DIM = 8
FEATURE_DIM = 64  # channels of the classifier's second stage
TOKENS_PER_IMAGE = 64  # the preset's 8 x 8 token grid
REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------------- options
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--steps", type=int, default=None, help="training steps per run (default 150; --quick: 20)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="per run (default 32; --quick: 8)")
    p.add_argument(
        "--eval-max-images", type=int, default=None, help="test images evaluated (default 2000; --quick: 300)"
    )
    p.add_argument(
        "--ks",
        type=int,
        nargs="+",
        default=None,
        help=f"codebook sizes (default {' '.join(map(str, DEFAULT_KS))})",
    )
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    p.add_argument("--seed", type=int, default=0, help="seed of every run not listed in --seeds-for")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="seeds of the headline rows (--seeds-for); the table reports their mean and spread (default: --seed only)",
    )
    p.add_argument(
        "--seeds-for",
        nargs="+",
        default=["fvq"],
        metavar="METHOD[:K]",
        help="methods (or method:K) whose runs are repeated over --seeds (default: fvq)",
    )
    p.add_argument(
        "--steps-for",
        nargs="+",
        default=[],
        metavar="K=STEPS",
        help="a step budget per codebook size, e.g. 262144=800 (others: --steps)",
    )
    p.add_argument(
        "--train-usage",
        nargs="+",
        type=int,
        default=None,
        metavar="K",
        help="codebook sizes whose runs also count usage on the whole train split (default: all)",
    )
    p.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="METHOD:K:SCHEDULE[:STEPS]",
        help="run exactly these configurations (repeatable, e.g. fvq:262144:annealing:300) instead of the cross "
        "product of --methods x --ks x --schedules; STEPS overrides --steps / --steps-for for that run",
    )
    p.add_argument(
        "--keep-done",
        action="store_true",
        help="continue an interrupted study: keep the finished rows of --output's JSON and run only the others",
    )
    p.add_argument(
        "--in-order",
        action="store_true",
        help="run in the order given (default: the most work first, K x steps)",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel, each in its own process")
    p.add_argument(
        "--lr-scheduler-warmup", type=int, default=0, help="warm-up steps of every run (default 0)"
    )
    p.add_argument(
        "--frechet", action="store_true", help="also the Frechet distance (shipped classifier's features)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI-size smoke: K 1024/4096, 20 steps of batch 8, 300 test images, LC k-means on 4K vectors",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads (1 is fastest on a busy 2-core box)"
    )
    p.add_argument("--output", default=None, help="markdown file (default benchmarks/usage_study.md)")
    p.add_argument(
        "--run-dir", default=None, help="folder of the per-run outputs (default outputs/usage_study)"
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="where the VQGAN-LC codebooks are cached (default outputs/usage_study/cache)",
    )
    p.add_argument(
        "--kmeans-iters",
        type=int,
        default=None,
        help="Lloyd iterations for every K (default: 20/10/4/1, see kmeans_iters)",
    )
    p.add_argument(
        "--kmeans-max-vectors",
        type=int,
        default=None,
        help="features given to k-means, as a multiple of K (default: at most max(2K, 100k); --quick: 4K)",
    )
    p.add_argument(
        "--note", action="append", default=[], help="a line for the notes at the top of the markdown"
    )
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.ks = args.ks or QUICK["ks"]
        args.steps = args.steps or QUICK["steps"]
        args.batch_size = args.batch_size or QUICK["batch_size"]
        args.eval_max_images = args.eval_max_images or QUICK["eval_max_images"]
        args.kmeans_max_vectors = args.kmeans_max_vectors or QUICK["kmeans_max_vectors"]
        args.train_usage = [] if args.train_usage is None else args.train_usage
        args.output = args.output or str(REPO / "outputs/usage_study/quick/usage_study.md")
        args.run_dir = args.run_dir or str(REPO / "outputs/usage_study/quick")
    # defaults live in the repository whatever the working directory; paths given are taken as given
    args.ks = args.ks or list(DEFAULT_KS)
    args.steps = args.steps or 150
    args.batch_size = args.batch_size or 32
    args.eval_max_images = args.eval_max_images or 2000
    args.seeds = args.seeds or [args.seed]
    runs = []
    for item in args.run:
        try:
            method, k, schedule, *steps = item.split(":")
            runs.append((method, int(k), schedule, int(steps[0]) if steps else None))
            if len(steps) > 1:
                raise ValueError
        except ValueError:
            p.error(f"--run {item!r}: expected METHOD:K:SCHEDULE[:STEPS], e.g. fvq:16384:annealing:400")
        if method not in METHODS or schedule not in SCHEDULES:
            p.error(f"--run {item!r}: method must be one of {METHODS} and schedule one of {SCHEDULES}")
    args.run = runs
    if runs:
        args.ks = sorted({k for _, k, _, _ in runs})
    try:
        args.steps_for = {int(k): int(v) for k, v in (item.split("=") for item in args.steps_for)}
    except ValueError:
        p.error("--steps-for takes K=STEPS pairs, e.g. 262144=800")
    args.output = args.output or str(REPO / "benchmarks/usage_study.md")
    args.run_dir = args.run_dir or str(REPO / "outputs/usage_study")
    args.cache_dir = args.cache_dir or str(REPO / "outputs/usage_study/cache")
    if args.steps < 2 or args.batch_size < 1 or args.eval_max_images < 1 or args.threads < 1 or args.jobs < 1:
        p.error("--steps must be >= 2 and --batch-size, --eval-max-images, --threads, --jobs positive.")
    return args


def bridge_for(k: int, method: str = "fvq") -> str:
    """The (cheap) VQBridge preset used for K codes: S/4 up to 16384, S/8 above; the DiT bridge of the same size
    for ``fvq-dit`` and ``fvq-dit-c``."""
    vit = "S/4" if k <= 16384 else "S/8"
    return f"QBridge-{vit}" if method.startswith("fvq-dit") else vit


def kmeans_iters(k: int, override: int | None = None) -> int:
    """Lloyd iterations for K centres; one assignment costs N x K x 64 multiply-adds, so large K get few."""
    if override is not None:
        return override
    if k <= 4096:
        return 20
    if k <= 16384:
        return 10
    if k <= 65536:
        return 4
    return 1


def kmeans_vectors(k: int, multiple: int | None = None) -> int:
    """How many feature vectors k-means sees: max(2K, 100k) by default, ``multiple`` x K when given."""
    return multiple * k if multiple else max(2 * k, 100_000)


# ---------------------------------------------------------------------------------------------------- machine
def machine_description(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f", {kb / 1024**2:.0f} GiB RAM"
    nice = os.nice(0) if hasattr(os, "nice") else 0
    return (
        f"{cpu}, {cores} CPU cores available{mem}; torch {torch.__version__} with {threads} thread(s); niceness {nice}; "
        f"load average at start {load} (the cores are shared with other work); Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


# ---------------------------------------------------------------------------------------------------- VQGAN-LC codebook
@torch.no_grad()
def classifier_features(num_vectors: int, seed: int) -> tuple[torch.Tensor, dict]:
    """Distinct 64-d feature vectors of the shipped Fashion-MNIST classifier (after its second conv stage) on
    training images taken in a seeded random order, until at least ``num_vectors`` (or the whole split); then a
    seeded subsample of exactly ``num_vectors`` (or all, if fewer exist)."""
    from fullvq_hf.data import load_fashion_mnist, to_pixels
    from fullvq_hf.evaluation.fmnist_classifier import load_classifier

    model = load_classifier()
    stem = model.body[:8]
    images, _ = load_fashion_mnist("train")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=gen).numpy()
    chunks, distinct, used_images, chunk = [], 0, 0, 2000
    for start in range(0, len(order), chunk):
        x = to_pixels(images[order[start : start + chunk]]).contiguous(memory_format=torch.channels_last)
        f = stem(x)  # (B, 64, 8, 8)
        if f.shape[1] != FEATURE_DIM:
            raise RuntimeError(
                f"expected {FEATURE_DIM} channels after the classifier's second stage, got {f.shape[1]}"
            )
        chunks.append(torch.unique(f.permute(0, 2, 3, 1).reshape(-1, FEATURE_DIM).contiguous(), dim=0))
        used_images += x.shape[0]
        distinct = sum(c.shape[0] for c in chunks)
        if distinct >= 1.3 * num_vectors:  # margin for duplicates across chunks
            break
    feats = torch.unique(torch.cat(chunks), dim=0)
    total_distinct = feats.shape[0]
    if total_distinct > num_vectors:
        feats = feats[torch.randperm(total_distinct, generator=gen)[:num_vectors]]
    info = {"images": used_images, "positions": used_images * 64, "distinct_vectors": total_distinct,
            "vectors": feats.shape[0]}  # fmt: skip
    return feats.contiguous(), info


def lc_codebook(k: int, args: argparse.Namespace) -> tuple[Path, dict]:
    """Path of the cached (K, 64) frozen codebook for VQGAN-LC, built on first use."""
    from fullvq_hf.data.lc_codebook import kmeans, load_codebook_file, save_codebook

    n = kmeans_vectors(k, args.kmeans_max_vectors)
    iters = kmeans_iters(k, args.kmeans_iters)
    path = (
        Path(args.cache_dir)
        / f"lc_codebook_fmnist-classifier-stage2_K{k}_n{n}_it{iters}_seed{args.seed}.safetensors"
    )
    info_path = path.with_suffix(".json")
    if path.is_file() and info_path.is_file():
        try:
            if tuple(load_codebook_file(path).shape) == (k, FEATURE_DIM):
                info = json.loads(info_path.read_text())
                print(f"  VQGAN-LC codebook K={k}: cached {path}", flush=True)
                return path, {**info, "cached": True}
        except ValueError as e:
            print(f"  cached codebook {path} unusable ({e}); rebuilding", flush=True)
    t0 = time.perf_counter()
    feats, info = classifier_features(n, args.seed)
    t_feat = time.perf_counter() - t0
    if feats.shape[0] < k:
        raise RuntimeError(f"only {feats.shape[0]} distinct classifier features for K={k} codes")
    print(
        f"  VQGAN-LC codebook K={k}: {info['vectors']} distinct feature vectors from {info['images']} training images "
        f"({t_feat:.0f}s); k-means with {iters} Lloyd iteration(s) ...",
        flush=True,
    )
    t1 = time.perf_counter()
    centres = kmeans(feats, k, num_iters=iters, seed=args.seed)
    t_km = time.perf_counter() - t1
    info.update(k=k, kmeans_iters=iters, kmeans_init="k-means++" if k <= 4096 else "random",
                feature_seconds=round(t_feat, 1), kmeans_seconds=round(t_km, 1),
                encoder="fullvq_hf fmnist_classifier body[:8] (64 x 8 x 8)")  # fmt: skip
    save_codebook(
        centres, path, encoder_name=info["encoder"], metadata={k2: str(v) for k2, v in info.items()}
    )
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    print(f"  VQGAN-LC codebook K={k}: k-means took {t_km:.0f}s; saved {path}", flush=True)
    return path, {**info, "cached": False}


# ---------------------------------------------------------------------------------------------------- runs
def patch_dataset_cache() -> None:
    """Load each Fashion-MNIST split once per process instead of twice per run (~7 s each time on this box):
    the trainer's ``load_image_dataset`` is wrapped in a cache (same arguments, same read-only dataset)."""
    from fullvq_hf.training import tokenizer_trainer

    original = tokenizer_trainer.load_image_dataset
    if getattr(original, "_usage_study_cache", False):
        return
    cached = functools.lru_cache(maxsize=8)(original)
    cached._usage_study_cache = True
    tokenizer_trainer.load_image_dataset = cached


def steps_for(k: int, args: argparse.Namespace) -> int:
    return args.steps_for.get(k, args.steps)


def run_options(
    method: str, k: int, schedule: str, steps: int, seed: int, args: argparse.Namespace, out_dir: Path,
    lc_path: Path | None,
) -> dict:
    opts = {
        "preset": PRESET,
        "codebook_size": k,
        "codebook_dim": CODEBOOK_DIM,
        "lr_scheduler": schedule,
        "warmup_steps": args.lr_scheduler_warmup,
        "max_steps": steps,
        "batch_size": args.batch_size,
        "seed": seed,
        "eval_max_images": args.eval_max_images,
        "checkpoint_every": 0,
        "image_every": 0,
        "log_every": max(1, steps // 40),
        "report_to": "none",
        "output_dir": str(out_dir),
        "overwrite_output_dir": True,  # a re-run of the study replaces its own earlier run
    }
    if args.frechet:
        opts["feature_extractor"] = "fashion-mnist-classifier"
    opts.update(METHOD_SPECS[method][2])
    if method.startswith("fvq"):
        opts.update(bridge=bridge_for(k, method))
    elif method == "lc":
        opts.update(lc_codebook=str(lc_path), codebook_feature_dim=FEATURE_DIM)
    return opts


@torch.no_grad()
def split_usage(model_dir: Path, split: str, batch: int = 1000) -> dict:
    """Exact usage of an exported tokenizer on a whole Fashion-MNIST split: the encoder batch by batch, then one
    search over all the latents (``nearest_codes`` prunes a whole split's search against a large codebook)."""
    from fullvq_hf.data import load_fashion_mnist, to_pixels
    from fullvq_hf.metrics import CodebookUsage
    from fullvq_hf.models.loading import load_tokenizer

    model = load_tokenizer(model_dir).eval()
    images, _ = load_fashion_mnist(split)
    meter = CodebookUsage(model.codebook_size)
    latents = [model.encode(to_pixels(images[start : start + batch])).latents for start in range(0, len(images), batch)]
    meter.update(model.quantize.search(torch.cat(latents)))
    stats = meter.compute()
    return {"usage": stats["usage"], "used_codes": stats["used_codes"], "num_tokens": stats["num_tokens"],
            "perplexity": stats["perplexity"]}  # fmt: skip


def timed_train_split(model_dir: Path) -> dict:
    """``split_usage`` of the whole train split, with the seconds it took."""
    t0 = time.perf_counter()
    return {**split_usage(model_dir, "train"), "seconds": time.perf_counter() - t0}


def read_curve(out_dir: Path) -> list[list[float]]:
    """[step, training-time usage] from the run's log_history.jsonl (usage of the codes hit by the batches of
    each log window)."""
    path = out_dir / "log_history.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [[r["step"], r["usage"]] for r in rows if "usage" in r]


def run_one(
    method: str, k: int, schedule: str, steps: int, seed: int, args: argparse.Namespace, lc_path: Path | None
) -> dict:
    from fullvq_hf.training.config import make_config
    from fullvq_hf.training.tokenizer_trainer import train

    torch.set_num_threads(args.threads)
    patch_dataset_cache()
    name = run_name(method, k, schedule, steps, seed)
    out_dir = Path(args.run_dir) / name
    row = {"run": name, "method": method, "label": METHOD_LABELS[method], "codebook_size": k, "schedule": schedule,
           "seed": seed, "steps": steps, "bridge": bridge_for(k, method) if method.startswith("fvq") else None,
           "status": "ok"}  # fmt: skip
    t0 = time.perf_counter()
    try:
        cfg = make_config(run_options(method, k, schedule, steps, seed, args, out_dir, lc_path))
        torch.manual_seed(seed)
        out_dir.mkdir(parents=True, exist_ok=True)
        with (
            open(out_dir / "train.log", "w") as log,
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
        ):
            results = train(cfg)  # the trainer's prints, warnings and tqdm bars go to <run>/train.log
        row["run_seconds"] = time.perf_counter() - t0
        for key in ("usage", "used_codes", "perplexity", "dead_codes", "psnr", "ssim", "frechet_distance",
                    "num_images", "num_tokens", "step", "train_time_s"):  # fmt: skip
            row[key] = results.get(key)
        if args.train_usage is None or k in args.train_usage:
            row["train_split"] = timed_train_split(out_dir / "model")
        row["curve"] = read_curve(out_dir)
    except Exception as e:  # a failed run is a row, not a crash
        row.update(status="failed", error=f"{type(e).__name__}: {e}".splitlines()[0][:300])
        traceback.print_exc()
    row["wall_seconds"] = time.perf_counter() - t0
    return row


def kept_train_split(run: str, args: argparse.Namespace) -> dict | None:
    """Train-split usage of a run kept by --keep-done that was made before its K was in --train-usage, from the
    model that run saved; None if that fails (the row stays as it was, and the study's other runs go on)."""
    torch.set_num_threads(args.threads)
    patch_dataset_cache()
    try:
        stats = timed_train_split(Path(args.run_dir) / run / "model")
    except Exception:
        traceback.print_exc()
        return None
    return {**stats, "added": "--keep-done, from the run's saved model"}


# ---------------------------------------------------------------------------------------------------- report
def rel(path) -> str:
    """A path relative to the repository when it lies inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def fmt_int(v) -> str:
    return "-" if v is None else f"{int(v):,}"


def fmt_pct(v) -> str:
    if v is None:
        return "-"
    pct = 100 * v
    return f"{pct:.1f}%" if pct >= 10 else f"{pct:.2f}%" if pct >= 0.1 else f"{pct:.3f}%"


def fmt_f(v, digits=1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def groups(rows: list[dict]) -> dict[tuple[str, str, int, int], list[dict]]:
    """Finished runs by (method, schedule, steps, K): the seeds of one configuration together."""
    out: dict[tuple[str, str, int, int], list[dict]] = {}
    for r in rows:
        if r["status"] == "ok":
            out.setdefault((r["method"], r["schedule"], r["steps"], r["codebook_size"]), []).append(r)
    return out


def spread(values: list[float | None], pct: bool = True, digits: int = 2) -> str:
    """``mean`` for one value, ``mean (min-max)`` for several; percentages when ``pct``."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    f = (lambda v: f"{100 * v:.{digits}f}%") if pct else (lambda v: f"{v:.{digits}f}")
    mean = sum(vals) / len(vals)
    return f(mean) if len(vals) == 1 else f"{f(mean)} ({f(min(vals))}-{f(max(vals))})"


def markdown(rows: list[dict], meta: dict) -> str:
    a = meta["args"]
    steps = ", ".join(f"K={k:,}: {v}" for k, v in sorted(a["steps_for"].items()))
    lines = [
        "# Codebook usage study on Fashion-MNIST (FVQ / VQGAN-LC central table in miniature)",
        "",
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['date']}",
        f"- Machine: {meta['machine']}",
        ("- Budget per run: the steps of each row" if a["run"] else f"- Budget per run: {a['steps']} training steps")
        + (f" ({steps})" if steps and not a["run"] else "")
        + f" x batch {a['batch_size']}, warm-up {a['lr_scheduler_warmup']} steps; seeds {a['seeds']} for "
        f"{', '.join(a['seeds_for'])}, seed {a['seed']} otherwise; test usage on the "
        f"first {a['eval_max_images']:,} Fashion-MNIST test images ({a['eval_max_images'] * TOKENS_PER_IMAGE:,} tokens)"
        + ("" if a["train_usage"] == [] else ", train-split usage on all 60,000 training images (3,840,000 tokens)")
        + (f" for K in {a['train_usage']}" if a["train_usage"] else "")
        + ".",
        f"- Total wall time: {meta['total_seconds'] / 60:.1f} min for {len(rows)} run(s), {a['jobs']} at a time"
        + (f" ({meta['status']})" if meta.get("status") else "")
        + ".",
    ]
    for note in meta.get("notes", []):
        lines.append(f"- Note: {note}")
    lines += [
        "",
        f"Every run: the package's trainer (`fullvq_hf.training.tokenizer_trainer.train`), preset `{PRESET}` "
        f"(backbone cpu-small, 32x32 grey images -> 8x8 tokens, codebook_dim {CODEBOOK_DIM}, Adam lr 1e-3, "
        "L2 reconstruction loss, no perceptual / GAN loss), checkpoints and image dumps off. `annealing` = FVQ's "
        "learning annealing (hold 30%, then linear decay to 0.01x); `constant` = constant lr.",
        "",
        "Methods: **plain VQ** (`quantizer_type=vq`); **SimVQ** (frozen Gaussian codebook x trained Linear(8->8)); "
        "**VQGAN-LC-style** (`model_type=vqgan-lc`: frozen codebook of pretrained features x trained "
        f"Linear({FEATURE_DIM}->8), with VQGAN-LC's loss weights beta 0.1 / codebook 0.033); **FVQ** "
        "(`quantizer_type=vqbridge`) with the *cheap* ViT bridges **S/4** for K <= 16384 and **S/8** above (64 "
        "wide, depth 2), not the paper's L/4, L/8; **FVQ + restarts** the same with `bridge_restart_every=20` (a "
        "position of the bridge none of whose codes was picked in 20 steps gets a noisy copy of the most-picked "
        "position's rows; not in the official recipe); **FVQ + restarts of positions and codes** the same plus "
        "`code_restart_every=1, code_restart_window=100, code_restart_threshold=2` (every step, the codes with fewer "
        "than 2 picks in a decayed count of time constant 100 steps move onto distinct latents of the batch; not in "
        "the official recipe); **FVQ (DiT bridge)** the official recipes' unconditional DiT "
        "bridge of the same size (QBridge-S/4, QBridge-S/8: fixed sin-cos positions, adaLN blocks); **FVQ (DiT "
        "bridge) + restarts of positions and codes** that bridge with the restarts of the ViT row of the same name; "
        f"**FVQ + restarts below {EVEN_SHARE}x the mean share** the ViT row with restarts of positions and codes, its "
        f"`code_restart_threshold` {EVEN_SHARE} x the mean picks of a code in the window (100 x batch x "
        f"{TOKENS_PER_IMAGE} / K: 32 at 16,384, 8 at 65,536, 2 at 262,144 with batch 64, where it equals the row "
        "above; not in the official recipe); "
        f"**FVQ + restarts below {EVEN_SHARE}x the mean share + code tracking** that row with "
        f"`code_track_rate={TRACK_RATE}` (every step each picked code moves {TRACK_RATE} of the way to the mean of "
        "the latents that picked it, an online k-means step; not in the official recipe).",
        "",
    ]
    if meta.get("lc_codebooks") and any(r["method"] == "lc" for r in rows):
        lines += [
            "VQGAN-LC codebooks: k-means of the shipped Fashion-MNIST classifier's features after its second conv "
            f"stage (`body[:8]`, one {FEATURE_DIM}-d vector per position of the 8x8 map) on training images; "
            "exact duplicates dropped; cached in `" + rel(a["cache_dir"]) + "`:",
            "",
            "| K | vectors | from images | Lloyd iterations | k-means time (s) |",
            "|---|---|---|---|---|",
        ]
        for k, info in sorted(meta["lc_codebooks"].items(), key=lambda kv: int(kv[0])):
            lines.append(
                f"| {int(k):,} | {fmt_int(info.get('vectors'))} | {fmt_int(info.get('images'))} | "
                f"{info.get('kmeans_iters')} | {fmt_f(info.get('kmeans_seconds'), 0)}"
                + (" (cached)" if info.get("cached") else "")
                + " |"
            )
        lines.append("")
    g = groups(rows)
    ks = sorted({r["codebook_size"] for r in rows})
    lines += ["## Codebook usage: test split / train split", "",
              "Mean over seeds, (min-max) where a row has several seeds.", "",
              "| method | schedule | steps | " + " | ".join(f"K={k:,}" for k in ks) + " |",
              "|---|---|---|" + "---|" * len(ks)]  # fmt: skip
    for method, schedule, steps in sorted({key[:3] for key in g}, key=lambda c: (METHODS.index(c[0]), c[1], c[2])):
        cells = []
        for k in ks:
            runs = g.get((method, schedule, steps, k))
            if not runs:
                cells.append("-")
                continue
            train = [r["train_split"]["usage"] for r in runs if r.get("train_split")]
            cells.append(spread([r["usage"] for r in runs]) + " / " + (spread(train) if train else "-"))
        lines.append(f"| {METHOD_LABELS[method]} | {schedule} | {steps} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## All runs",
        "",
        "| method | K | schedule | seed | steps | test usage | codes used | perplexity | train-split usage | PSNR (dB) "
        "| SSIM | Frechet distance* | train (s) | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {m: i for i, m in enumerate(METHODS)}
    for r in sorted(rows, key=lambda r: (order[r["method"]], r["codebook_size"], SCHEDULES.index(r["schedule"]),
                                         r.get("seed", 0))):  # fmt: skip
        head = f"| {r['label']} | {r['codebook_size']:,} | {r['schedule']} | {r.get('seed', '-')} | {r.get('steps', '-')} |"
        if r["status"] != "ok":
            lines.append(f"{head} failed: {r.get('error', '?').replace('|', '/')} | | | | | | | | {fmt_f(r.get('wall_seconds'), 0)} |")
            continue
        train = r.get("train_split") or {}
        lines.append(
            f"{head} {fmt_pct(r['usage'])} | {fmt_int(r['used_codes'])} | {fmt_f(r['perplexity'], 0)} | "
            f"{fmt_pct(train.get('usage'))} | {fmt_f(r['psnr'], 2)} | {fmt_f(r['ssim'], 3)} | "
            f"{fmt_f(r.get('frechet_distance'), 2)} | {fmt_f(r.get('train_time_s'), 0)} | {fmt_f(r['wall_seconds'], 0)} |"
        )  # fmt: skip
    lines += ["", "Usage = codes used at least once / K, exact over every token evaluated; perplexity = exp(entropy of "
              "the test code histogram). *Frechet distance between test images and their reconstructions in the "
              "128-d feature space of the shipped Fashion-MNIST classifier ('-': not computed). The curves in the "
              "plot are the trainer's training-time usage: codes hit by the batches of each log window "
              "(steps/40 steps x batch x 64 tokens), which caps it below 100% at large K.", ""]  # fmt: skip
    if meta.get("plot"):
        lines += [f"![usage curves and end points]({Path(meta['plot']).name})", ""]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> bool:
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    colors = {m: spec[1] for m, spec in METHOD_SPECS.items()}
    ks = sorted({r["codebook_size"] for r in ok})
    fig, axes = plt.subplots(1, len(ks) + 1, figsize=(4.2 * (len(ks) + 1), 4), dpi=110, squeeze=False)
    axes = axes[0]
    for ax, k in zip(axes, ks):
        for r in (r for r in ok if r["codebook_size"] == k and r.get("curve")):
            steps, usage = zip(*r["curve"])
            style = "-" if r["schedule"] == "annealing" else "--"
            same = [x for x in ok if (x["method"], x["schedule"], x["steps"], x["codebook_size"]) == (r["method"], r["schedule"], r["steps"], k)]
            first = r is min(same, key=lambda x: x.get("seed", 0))
            ax.plot(steps, [100 * u for u in usage], style, color=colors[r["method"]], alpha=0.8, lw=1.2,
                    label=f"{METHOD_LABELS[r['method']]}, {r['schedule']}, {r['steps']} steps" if first else None)  # fmt: skip
        ax.set_title(f"K = {k:,}: training-time usage")
        ax.set_xlabel("step")
        ax.set_ylabel("codes hit in the log window (%)")
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # each panel names its own methods
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))  # below: the curves keep the panel
    ax = axes[-1]
    for (method, schedule, _, k), runs in sorted(groups(rows).items()):
        style = "o" if schedule == "annealing" else "s"
        for r in runs:
            ax.plot(k, r["usage"], style, color=colors[method], mfc="none")
            if r.get("train_split"):
                ax.plot(k, r["train_split"]["usage"], style, color=colors[method])
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [f"{k:,}" for k in ks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_yscale("logit")
    ax.set_ylim(0.0002, 0.9995)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{100 * v:g}%"))
    ax.axhline(0.99, color="k", lw=0.6, ls=":")
    ax.set_title("final usage (open: test, filled: train split)")
    ax.set_xlabel("codebook size K")
    ax.set_ylabel("usage (logit scale)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")  # with the legends below the panels
    plt.close(fig)
    return True


def write_outputs(rows: list[dict], meta: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    png = output.with_suffix(".png")
    meta["plot"] = png.name if plot(rows, png) else None  # beside the JSON and the markdown
    text = markdown(rows, meta)
    output.write_text(text)
    lc = {str(k): v for k, v in meta.get("lc_codebooks", {}).items()}
    output.with_suffix(".json").write_text(
        json.dumps({**meta, "lc_codebooks": lc, "rows": rows}, indent=2) + "\n"
    )


# ---------------------------------------------------------------------------------------------------- main
def make_plan(args: argparse.Namespace) -> list[tuple[str, int, str, int, int]]:
    """(method, K, schedule, steps, seed) of every run; the --seeds-for runs once per --seeds, the others with
    --seed. Most work first (K x steps), so the longest runs start early when --jobs > 1."""
    configs = args.run or [(m, k, s, None) for k in args.ks for m in args.methods for s in args.schedules]
    plan = []
    for method, k, schedule, steps in configs:
        steps = steps or steps_for(k, args)
        names = {method, f"{method}:{k}", f"{method}:{k}:{schedule}", f"{method}:{k}:{schedule}:{steps}"}
        for seed in args.seeds if names & set(args.seeds_for) else [args.seed]:
            plan.append((method, k, schedule, steps, seed))
    return plan if args.in_order else sorted(plan, key=lambda r: -r[1] * r[3])


def run_name(method: str, k: int, schedule: str, steps: int, seed: int) -> str:
    return f"{method}-K{k}-{schedule}-{steps}steps-seed{seed}"


def report_row(i: int, n: int, row: dict, elapsed: float) -> None:
    if row["status"] != "ok":
        print(f"[{i}/{n}] {row['run']}: FAILED ({row['error']}); {row['wall_seconds']:.0f}s", flush=True)
        return
    train = row.get("train_split")
    extra = f", train split {fmt_pct(train['usage'])}" if train else ""
    print(f"[{i}/{n}] {row['run']}: test usage {fmt_pct(row['usage'])} ({row['used_codes']:,}/{row['codebook_size']:,})"
          f"{extra}, PSNR {row['psnr']:.2f} dB; {row['wall_seconds']:.0f}s (elapsed {elapsed / 60:.1f} min)",
          flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    patch_dataset_cache()
    output = Path(args.output)
    script = os.path.relpath(Path(__file__).resolve(), REPO)
    meta = {
        "command": "python " + shlex.join([script, *args.argv]),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine_description(args.threads),
        "args": {k: v for k, v in vars(args).items() if k != "argv"},
        "notes": [],
        "lc_codebooks": {},
    }
    if args.quick:
        meta["notes"].append("--quick smoke run: numbers are not meaningful, only that every path runs.")
    meta["notes"] += args.note
    plan = make_plan(args)
    print(f"usage study: {len(plan)} runs ({args.jobs} at a time), batch {args.batch_size}, eval "
          f"{args.eval_max_images} test images; output {output}", flush=True)  # fmt: skip
    start = time.perf_counter()
    lc_paths: dict[int, Path] = {}
    if any(r[0] == "lc" for r in plan):  # built once, before the runs, so that parallel runs never build the same one
        for k in sorted({r[1] for r in plan if r[0] == "lc"}):
            path, info = lc_codebook(k, args)
            lc_paths[k] = path
            meta["lc_codebooks"][k] = info
    rows: list[dict] = []
    if args.keep_done and output.with_suffix(".json").is_file():
        old = json.loads(output.with_suffix(".json").read_text())
        wanted = {run_name(*r): r for r in plan}
        rows = [r for r in old.get("rows", []) if r.get("status") == "ok" and r["run"] in wanted]
        plan = [r for r in plan if run_name(*r) not in {row["run"] for row in rows}]
        meta["notes"] += [n for n in old.get("notes", []) if n not in meta["notes"]]
        meta["lc_codebooks"] = {**old.get("lc_codebooks", {}), **{str(k): v for k, v in meta["lc_codebooks"].items()}}
        start -= old.get("total_seconds", 0)  # the wall time of the rows kept counts
        meta["command"] = f"{old['command']}`, then `{meta['command']}"
        meta["date"] = f"{old['date']}, then {meta['date']} (--keep-done)"
        meta["machine"] = f"{old['machine']}; then: {meta['machine']}"
        print(f"--keep-done: {len(rows)} finished run(s) kept from {output.with_suffix('.json')}", flush=True)
    total = len(rows) + len(plan)
    wants_train = [r for r in rows if "train_split" not in r and (args.train_usage is None or r["codebook_size"] in args.train_usage)]  # fmt: skip
    backfill = [r for r in wants_train if (Path(args.run_dir) / r["run"] / "model").is_dir()]
    for row in wants_train:
        if row not in backfill:
            print(f"--keep-done: {row['run']} has no saved model under {args.run_dir}: its train-split usage stays "
                  "'-' (run it again to add it)", flush=True)  # fmt: skip

    def save() -> None:
        meta["total_seconds"] = time.perf_counter() - start
        meta["status"] = None if len(rows) == total else f"in progress: {len(rows)}/{total} runs done"
        write_outputs(rows, meta, output)

    def backfilled(row: dict, stats: dict | None) -> None:
        if stats is None:
            print(f"--keep-done: {row['run']}: its train-split usage failed (traceback above), it stays '-'", flush=True)
            return
        row["train_split"] = stats
        print(f"--keep-done: {row['run']}: train split {fmt_pct(stats['usage'])} (added)", flush=True)
        save()

    def done(row: dict) -> None:
        rows.append(row)
        report_row(len(rows), total, row, time.perf_counter() - start)
        save()

    if args.jobs == 1:
        for row in backfill:
            backfilled(row, kept_train_split(row["run"], args))
        for method, k, schedule, steps, seed in plan:
            print(f"[{len(rows) + 1}/{total}] {METHOD_LABELS[method]} K={k} {schedule} {steps} steps seed {seed} ...",
                  flush=True)  # fmt: skip
            done(run_one(method, k, schedule, steps, seed, args, lc_paths.get(k)))
    else:  # a fresh process per run (spawned: nothing inherited from the parent's torch or accelerate state)
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
            kept = {pool.submit(kept_train_split, row["run"], args): row for row in backfill}
            futures = [*kept, *(pool.submit(run_one, *r, args, lc_paths.get(r[1])) for r in plan)]
            for future in concurrent.futures.as_completed(futures):
                if future in kept:
                    backfilled(kept[future], future.result())
                else:
                    done(future.result())
    meta["total_seconds"] = time.perf_counter() - start
    meta["status"] = None
    write_outputs(rows, meta, output)
    print("\n" + markdown(rows, meta), flush=True)
    print(f"wrote {output}, {output.with_suffix('.json')}, {output.with_suffix('.png')} in "
          f"{meta['total_seconds'] / 60:.1f} min")  # fmt: skip
    failed = [r["run"] for r in rows if r["status"] != "ok"]
    if failed:
        print(f"{len(failed)} failed run(s): {', '.join(failed)}", flush=True)
    return rows


if __name__ == "__main__":
    main()
