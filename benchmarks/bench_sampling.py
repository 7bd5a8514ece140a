"""Benchmark class-to-image sampling with LlamaGen's GPT: ours (static KV cache) against recomputation and LlamaGen.

For every model in ``--models`` (default GPT-B), ``--batch`` images (default 8) of ``--grid`` x ``--grid`` tokens
(default 16 x 16 = 256), classifier-free guidance ``--cfg`` (default 2.0, so 2 x batch rows go through the
transformer), temperature 1, no top-k, random but seeded weights (the zero-initialised output head is re-drawn
from N(0, ``--head-std``) so the next-token distributions are not uniform), the same weights and labels for all:

    cache      fullvq_hf LlamaGenForConditionalGeneration.sample(use_cache=True): a preallocated static KV cache,
               one token per decode step (``--compile`` compiles the decode step)
    recompute  the same model, sample(use_cache=False): the whole prefix goes through the transformer again at every
               step (O(N^2)). ``--recompute-steps K`` (default 16) times K decode steps, one per stratum of K
               equal strata of prefix lengths (at the stratum's middle length), and integrates them to a
               full-sequence estimate (sum of stratum size x step time); ``--recompute-steps 0`` runs the real thing
    llamagen   LlamaGen's own sampler (``autoregressive/models/generate.py``'s ``generate``) on LlamaGen's own
               ``Transformer`` (``autoregressive/models/gpt.py``), imported at run time from ``--llamagen-repo``
               (a directory holding those two files and ``utils/drop_path.py``; not part of this package), with
               our state dict loaded strictly into it. With ``--compile`` it is compiled as LlamaGen's
               ``sample_c2i.py`` does (``torch.compile(model, mode="reduce-overhead", fullgraph=True)``).

Time per batch is the median of ``--repeats`` (default 3) timed batches after one warm-up batch (compilation
happens in the warm-up). Peak extra memory: on CPU the process's peak resident set size during warm-up and timed
batches minus its size after set-up (model built, weights loaded); on GPU ``torch.cuda.max_memory_allocated``
minus the memory allocated after set-up. Each contender runs in a fresh subprocess (this file with ``--worker``).

A greedy check (temperature 0; LlamaGen's ``sample_logits=False``) runs in its own subprocess, in float32 and
without compilation: ours with the KV cache generates all tokens, ours without the cache and LlamaGen generate the
first ``--check-tokens`` (default 32) tokens of the same labels (ours on a copy of the model whose grid is cut to
the first rows: the 2D RoPE angles of those rows are the same), and the first tokens must be identical.

    python benchmarks/bench_sampling.py --tiny --grid 4 --repeats 1           # smoke (seconds)
    python benchmarks/bench_sampling.py --llamagen-repo /tmp/lg_off --output benchmarks/results_sampling_cpu.md
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_quantizer import BackgroundLoad, PeakRSS, available_cores, cpu_model, wait_for_quiet  # noqa: E402

RESULT_MARKER = "@@BENCH_RESULT@@ "
CONTENDERS = ("cache", "recompute", "llamagen")
TINY = (2, 4, 128)  # layers, heads, hidden: the --tiny smoke model
LLAMAGEN_FILES = ("autoregressive/models/gpt.py", "autoregressive/models/generate.py", "utils/drop_path.py")
MB = 1e6
GB = 1e9


# ----------------------------------------------------------------------------------------------------------
# worker side
# ----------------------------------------------------------------------------------------------------------


def model_shape(name: str) -> tuple[int, int, int]:
    from fullvq_hf.models.configuration_llamagen import LLAMAGEN_PRESETS

    if name == "tiny":
        return TINY
    key = name if name in LLAMAGEN_PRESETS else f"GPT-{name}"
    if key not in LLAMAGEN_PRESETS:
        raise ValueError(f"unknown model {name!r}; choose from tiny, {', '.join(LLAMAGEN_PRESETS)}")
    return LLAMAGEN_PRESETS[key]


def make_config(spec: dict, grid=None):
    from fullvq_hf.models.configuration_llamagen import LlamaGenConfig

    layers, heads, hidden = model_shape(spec["model"])
    return LlamaGenConfig(
        vocab_size=spec["vocab"],
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_classes=spec["num_classes"],
        grid_size=grid or spec["grid"],
    )


def weight_fingerprint(model) -> str:
    """Sum and sum of squares of every parameter (float64): equal across workers <=> the same seeded weights."""
    import torch

    with torch.no_grad():
        total = sum(float(p.double().sum()) for p in model.state_dict().values())
        squares = sum(float(p.double().square().sum()) for p in model.state_dict().values())
    return f"{total:.9e}/{squares:.9e}"


def build_ours(spec: dict):
    """Our model with the benchmark's seeded random weights, float32 on CPU, eval mode."""
    import torch

    from fullvq_hf.models.modeling_llamagen import LlamaGenForConditionalGeneration

    torch.manual_seed(spec["seed"])
    model = LlamaGenForConditionalGeneration(make_config(spec))
    head = torch.Generator().manual_seed(spec["seed"] + 1)
    with torch.no_grad():  # the zero-initialised head gives uniform logits: draw it small and random instead
        model.output.weight.normal_(0.0, spec["head_std"], generator=head)
    return model.eval()


def import_llamagen(repo: str):
    """LlamaGen's ``gpt`` and ``generate`` modules, imported from a checkout (or a copy of the three files)."""
    missing = [f for f in LLAMAGEN_FILES if not os.path.isfile(os.path.join(repo, f))]
    if missing:
        raise FileNotFoundError(f"--llamagen-repo {repo} lacks {', '.join(missing)}")
    sys.path.insert(0, os.path.abspath(repo))
    from autoregressive.models import generate as lg_generate
    from autoregressive.models import gpt as lg_gpt

    return lg_gpt, lg_generate


def build_llamagen(spec: dict, ours):
    """LlamaGen's Transformer with our weights loaded strictly (the state dict keys are the same)."""
    lg_gpt, lg_generate = import_llamagen(spec["llamagen_repo"])
    layers, heads, hidden = model_shape(spec["model"])
    kwargs = dict(
        vocab_size=spec["vocab"],
        block_size=spec["grid"] ** 2,
        num_classes=spec["num_classes"],
        cls_token_num=1,
    )
    name = spec["model"] if spec["model"].startswith("GPT-") else f"GPT-{spec['model']}"
    if spec["model"] != "tiny" and name in lg_gpt.GPT_models:
        theirs = lg_gpt.GPT_models[name](**kwargs)  # e.g. GPT_B(vocab_size=16384, block_size=256, ...)
    else:
        theirs = lg_gpt.Transformer(lg_gpt.ModelArgs(n_layer=layers, n_head=heads, dim=hidden, **kwargs))
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return theirs.eval(), lg_generate.generate


def resolve_device(spec: dict):
    import torch

    device = torch.device(spec["device"])
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[spec["dtype"]]
    return device, dtype


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({cpu_model()})"


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class GpuPeak:
    """Peak extra CUDA memory over a window: max_memory_allocated minus what was allocated at the start."""

    def __init__(self, device):
        self.device = device

    def __enter__(self) -> GpuPeak:
        import torch

        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.base = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc) -> None:
        import torch

        torch.cuda.synchronize(self.device)
        self.extra = torch.cuda.max_memory_allocated(self.device) - self.base


def strata(num_steps: int, k: int) -> list[tuple[int, int]]:
    """(step index at the middle of the stratum, stratum size) for k nearly equal strata of range(num_steps)."""
    bounds = [round(i * num_steps / k) for i in range(k + 1)]
    return [((lo + hi - 1) // 2, hi - lo) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


def make_recompute_estimator(model, labels, spec: dict, device, generator):
    """``run()`` -> estimated seconds of one full use_cache=False batch from K timed decode steps.

    Decode step i computes the logits of token i from the class token and the i tokens before it, exactly as
    ``sample(use_cache=False)`` does (full forward over the prefix, CFG mix, sampling); step 0 is the class token
    alone. The prefix tokens are random ids (the cost does not depend on their values).
    """
    import torch

    from fullvq_hf.models.modeling_llamagen import sample_from_logits

    num_tokens = spec["grid"] ** 2
    plan = strata(num_tokens, min(spec["recompute_steps"], num_tokens))
    cfg = spec["cfg"] > 1.0
    rows = torch.cat([labels, torch.full_like(labels, spec["num_classes"])]) if cfg else labels
    prefix_all = torch.randint(0, spec["vocab"], (labels.shape[0], num_tokens), generator=generator).to(
        device
    )

    def one_step(i: int) -> float:
        prefix = prefix_all[:, :i]
        sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            ids = torch.cat([prefix, prefix]) if cfg else prefix
            logits = model(ids if i else None, rows).logits[:, -1]
            if cfg:
                cond, uncond = logits.chunk(2)
                logits = uncond + (cond - uncond) * spec["cfg"]
            sample_from_logits(logits, 1.0, spec["top_k"] or None, 1.0, generator=None)
        sync(device)
        return time.perf_counter() - t0

    def run() -> float:
        return sum(size * one_step(i) for i, size in plan)

    return run, len(plan)


def run_worker(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    device, dtype = resolve_device(spec)
    if spec["kind"] == "check":
        return run_check(spec, device)

    ours = build_ours(spec)
    fingerprint = weight_fingerprint(ours)
    label_gen = torch.Generator().manual_seed(spec["seed"] + 2)
    labels = torch.randint(0, spec["num_classes"], (spec["batch"],), generator=label_gen)
    num_tokens = spec["grid"] ** 2
    info = {
        "fingerprint": fingerprint,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
    }

    if spec["kind"] == "llamagen":
        model, generate = build_llamagen(spec, ours)
        del ours
        model = model.to(device=device, dtype=dtype)
        cond = labels.to(device)
        if spec["compile"]:  # as LlamaGen's autoregressive/sample/sample_c2i.py does
            model = torch.compile(model, mode="reduce-overhead", fullgraph=True)

        def batch():
            torch.manual_seed(spec["seed"] + 3)  # LlamaGen samples with the global generator
            return generate(
                model,
                cond,
                num_tokens,
                cfg_scale=spec["cfg"],
                temperature=1.0,
                top_k=spec["top_k"],
                top_p=1.0,
                sample_logits=True,
            )

        estimated_from = None
    else:
        model = ours.to(device=device, dtype=dtype)
        labels = labels.to(device)
        generator = torch.Generator(device=device)
        estimated_from = None
        if spec["kind"] == "recompute" and 0 < spec["recompute_steps"] < num_tokens:
            cpu_gen = torch.Generator().manual_seed(spec["seed"] + 4)
            batch, estimated_from = make_recompute_estimator(model, labels, spec, device, cpu_gen)
        else:
            use_cache = spec["kind"] == "cache"

            def batch():
                generator.manual_seed(spec["seed"] + 3)
                return model.sample(
                    labels,
                    guidance_scale=spec["cfg"],
                    temperature=1.0,
                    top_k=spec["top_k"] or None,
                    generator=generator,
                    use_cache=use_cache,
                    compile=spec["compile"] and use_cache,
                )

    gc.collect()
    times = []
    meter = GpuPeak(device) if device.type == "cuda" else PeakRSS()
    with meter:
        baseline = meter.rss() if device.type != "cuda" else 0
        # one warm-up batch (compilation happens here), then the timed ones
        for i in range(1 + spec["repeats"]):
            gc.collect()
            sync(device)
            t0 = time.perf_counter()
            out = batch()
            sync(device)
            elapsed = time.perf_counter() - t0
            if estimated_from is not None:
                elapsed = out  # the estimator returns its integrated full-batch estimate
            if i == 0:
                info["warmup_s"] = elapsed
            else:
                times.append(elapsed)
    extra = meter.extra if device.type == "cuda" else max(0, meter.peak - baseline)
    return {
        **info,
        "time_s": statistics.median(times),
        "times_s": times,
        "peak_extra_bytes": extra,
        "estimated_from_steps": estimated_from,
    }


def first_difference(a, b) -> int | None:
    """Index of the first token position where two (B, T) id tensors differ (over the shorter T), or None."""
    n = min(a.shape[1], b.shape[1])
    diff = (a[:, :n].cpu().long() != b[:, :n].cpu().long()).any(0).nonzero()
    return int(diff[0]) if len(diff) else None


def run_check(spec: dict, device) -> dict:
    """Greedy tokens of ours (cache, all tokens), ours (no cache, first rows) and LlamaGen (first tokens), float32."""
    import torch

    from fullvq_hf.models.modeling_llamagen import LlamaGenForConditionalGeneration

    ours = build_ours(spec)
    fingerprint = weight_fingerprint(ours)
    label_gen = torch.Generator().manual_seed(spec["seed"] + 2)
    labels = torch.randint(0, spec["num_classes"], (spec["batch"],), generator=label_gen).to(device)
    grid = spec["grid"]
    rows = max(1, min(grid, -(-spec["check_tokens"] // grid)))
    num_check = rows * grid
    short = LlamaGenForConditionalGeneration(make_config(spec, grid=[rows, grid])).eval()
    short.load_state_dict(ours.state_dict(), strict=True)
    ours, short = ours.to(device), short.to(device)
    greedy = dict(guidance_scale=spec["cfg"], temperature=0.0)
    t0 = time.perf_counter()
    tokens = {
        "cache": ours.sample(labels, use_cache=True, **greedy).flatten(1),
        "recompute": short.sample(labels, use_cache=False, **greedy).flatten(1),
    }
    if spec["llamagen_repo"]:
        theirs, generate = build_llamagen(spec, ours.cpu())
        theirs = theirs.to(device)
        tokens["llamagen"] = generate(
            theirs,
            labels,
            num_check,
            cfg_scale=spec["cfg"],
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            sample_logits=False,
        )
    return {
        "fingerprint": fingerprint,
        "check_tokens": num_check,
        "wall_s": time.perf_counter() - t0,
        "first_difference": {
            k: first_difference(tokens["cache"][:, :num_check], v) for k, v in tokens.items()
        },
        "distinct_tokens": int(tokens["cache"].unique().numel()),
    }


# ----------------------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------------------


def run_config(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        with BackgroundLoad() as load:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "message": f"timed out (> {timeout:.0f} s)"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER) :])
            result.update(status="ok", wall_s=time.perf_counter() - t0, background_cores=load.cores)
            return result
    lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else "no output"
    if proc.returncode < 0:
        last = f"killed by signal {-proc.returncode}, out of memory?"
    return {"status": "failed", "message": f"failed (exit {proc.returncode}: {last[:160]})"}


def fmt_time(s: float) -> str:
    return f"{s:.4f}" if s < 0.1 else f"{s:.3f}" if s < 10 else f"{s:.1f}"


def contender_label(kind: str, args, result: dict | None) -> str:
    compiled = " + compiled decode step" if args.compile else ""
    if kind == "cache":
        return f"ours, static KV cache (`use_cache=True`{compiled})"
    if kind == "recompute":
        steps = (result or {}).get("estimated_from_steps")
        how = f"; **estimate** from {steps} timed decode steps" if steps else "; all steps run"
        return f"ours, recompute the prefix each step (`use_cache=False`, eager{how})"
    compiled = " + `torch.compile(reduce-overhead)`" if args.compile else ""
    return f"LlamaGen's `generate` (official code{compiled})"


def check_cell(kind: str, check: dict | None) -> str:
    if check is None:
        return "—"
    if check.get("status") != "ok":
        return "check " + check.get("status", "not run")
    first = check["first_difference"].get(kind, "n/a")
    n = check["check_tokens"]
    if kind == "cache":
        return f"reference (first {n})"
    if first == "n/a":
        return "not run"
    return f"identical (first {n})" if first is None else f"**differs** at token {first}"


def make_table(args, results: dict, checks: dict) -> list[str]:
    n_tok = args.grid**2
    rows = [
        "| model | contender | s per batch | s per decode step | image tokens/s | images/s | "
        "peak extra memory (MB) | speed-up vs recompute | speed-up vs LlamaGen | greedy tokens vs ours-cache |",
        "|:---|:---|---:|---:|---:|---:|---:|---:|---:|:---|",
    ]
    flagged = False
    for name in args.models:
        rec, lg = results.get((name, "recompute")), results.get((name, "llamagen"))
        for kind in args.contenders:
            r = results.get((name, kind))
            if r is None:
                continue
            label = contender_label(kind, args, r)
            check = check_cell(kind, checks.get(name))
            if r["status"] != "ok":
                rows.append(
                    f"| {name} | {label} | {r['message'].replace('|', '/')} | — | — | — | — | — | — | {check} |"
                )
                continue
            t = r["time_s"]
            mark = ""
            if r.get("background_cores", 0.0) > args.busy_threshold:
                mark, flagged = " †", True
            est = " (est.)" if r.get("estimated_from_steps") else ""

            def vs(other, t=t):
                return f"{other['time_s'] / t:.2f}x" if other and other.get("status") == "ok" else "—"

            rows.append(
                f"| {name} | {label} | {fmt_time(t)}{est}{mark} | {t / n_tok:.4f} | "
                f"{args.batch * n_tok / t:.1f} | {args.batch / t:.3f} | {r['peak_extra_bytes'] / MB:.0f} | "
                f"{vs(rec)} | {vs(lg)} | {check} |"
            )
    if flagged:
        rows += [
            "",
            f"† other processes used more than {args.busy_threshold:g} cores on average while this row ran: its "
            "time is inflated (memory is not affected).",
        ]
    return rows


def make_notes(args, results: dict, checks: dict) -> list[str]:
    lines = ["## Notes", ""]
    prints = {r["fingerprint"] for r in [*results.values(), *checks.values()] if r.get("status") == "ok"}
    lines.append(
        "- weights: every contender and the check built the same seeded weights (fingerprints equal)"
        if len(prints) <= len(args.models)
        else f"- **weights differ between workers** (fingerprints {sorted(prints)})"
    )
    for name in args.models:
        cache, rec, lg = (results.get((name, k)) for k in ("cache", "recompute", "llamagen"))
        if rec and rec["status"] == "ok" and rec.get("estimated_from_steps"):
            lines.append(
                f"- {name}, recompute: an estimate, not a measured batch: {rec['estimated_from_steps']} decode steps "
                f"timed (one per stratum of prefix lengths, at its middle), each weighted by its stratum's size; "
                "`--recompute-steps 0` runs every step. Its memory is that of the timed steps (the longest prefix "
                "is near the full one)."
            )
        if cache and cache["status"] == "ok":
            parts = []
            for other, what, target in ((rec, "recompute", 10.0), (lg, "LlamaGen", 1.0)):
                if other and other["status"] == "ok":
                    ratio = other["time_s"] / cache["time_s"]
                    ok = "meets" if ratio >= target else "**misses**"
                    parts.append(f"{ratio:.2f}x vs {what} ({ok} the >= {target:g}x target)")
            if parts:
                lines.append(f"- {name}, ours with the cache: " + "; ".join(parts) + ".")
            if args.compile:
                lines.append(
                    f"- {name}: warm-up batch (includes compilation): ours cache {cache.get('warmup_s', 0):.1f} s"
                    + (f", LlamaGen {lg.get('warmup_s', 0):.1f} s" if lg and lg["status"] == "ok" else "")
                )
        check = checks.get(name)
        if check and check.get("status") == "ok":
            lines.append(
                f"- {name}, greedy check: temperature 0 (LlamaGen `sample_logits=False`), CFG {args.cfg:g}, "
                f"float32, no compile, the same {args.batch} labels; ours-cache generated all {args.grid**2} tokens "
                f"({check['distinct_tokens']} distinct ids), the others the first {check['check_tokens']}."
            )
        elif check:
            lines.append(f"- {name}, greedy check: {check.get('message', check.get('status'))}")
    if not args.llamagen_repo:
        lines.append("- LlamaGen's sampler was not run: no `--llamagen-repo` given.")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="GPT-B", help="comma separated: GPT-B, GPT-L, ... or tiny")
    parser.add_argument("--tiny", action="store_true", help="smoke model: 2 layers, 4 heads, hidden 128")
    parser.add_argument("--batch", type=int, default=8, help="images per batch (x2 rows with CFG)")
    parser.add_argument("--grid", type=int, default=16, help="tokens per side (LlamaGen needs a square grid)")
    parser.add_argument("--vocab", type=int, default=16384, help="image token vocabulary")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--cfg", type=float, default=2.0, help="classifier-free guidance scale")
    parser.add_argument("--top-k", type=int, default=0, help="top-k for every sampler (0 = off)")
    parser.add_argument("--head-std", type=float, default=0.02, help="std of the re-drawn output head")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dtype", choices=("auto", "fp32", "bf16"), default="auto", help="auto: fp32 on CPU, bf16 on GPU"
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--compile", action="store_true", help="compile our decode step (and LlamaGen's model)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the cores available)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per contender, after 1 warm-up")
    parser.add_argument(
        "--recompute-steps",
        type=int,
        default=16,
        help="time this many stratified decode steps of the no-cache sampler and integrate (0 = run all steps)",
    )
    parser.add_argument("--check-tokens", type=int, default=32, help="greedy check length (0 = no check)")
    parser.add_argument(
        "--contenders", default=",".join(CONTENDERS), help=f"subset of {','.join(CONTENDERS)}"
    )
    parser.add_argument(
        "--llamagen-repo", default=None, help="directory with LlamaGen's " + ", ".join(LLAMAGEN_FILES)
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per contender subprocess")
    parser.add_argument(
        "--wait-idle", type=float, default=60.0, help="wait up to this long for a quiet machine"
    )
    parser.add_argument(
        "--busy-threshold", type=float, default=0.3, help="cores used by others that flag a row"
    )
    parser.add_argument("--output", default=None, help="also write the markdown report to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        result = run_worker(json.loads(args.worker))
        print(RESULT_MARKER + json.dumps(result), flush=True)
        return 0

    import psutil
    import torch

    args.models = ["tiny"] if args.tiny else [m.strip() for m in args.models.split(",") if m.strip()]
    for name in args.models:
        try:
            model_shape(name)
        except ValueError as e:
            parser.error(str(e))
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    if set(args.contenders) - set(CONTENDERS):
        parser.error(f"unknown contenders {sorted(set(args.contenders) - set(CONTENDERS))}")
    if args.llamagen_repo:
        missing = [f for f in LLAMAGEN_FILES if not os.path.isfile(os.path.join(args.llamagen_repo, f))]
        if missing:
            parser.error(f"--llamagen-repo {args.llamagen_repo} lacks {', '.join(missing)}")
    else:
        args.contenders = [c for c in args.contenders if c != "llamagen"]
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype if args.dtype != "auto" else ("bf16" if device.startswith("cuda") else "fp32")
    threads = args.threads or available_cores()
    load_start = os.getloadavg()

    base = {
        "batch": args.batch,
        "grid": args.grid,
        "vocab": args.vocab,
        "num_classes": args.num_classes,
        "cfg": args.cfg,
        "top_k": args.top_k,
        "head_std": args.head_std,
        "seed": args.seed,
        "device": device,
        "dtype": dtype,
        "compile": args.compile,
        "threads": threads,
        "repeats": args.repeats,
        "recompute_steps": args.recompute_steps,
        "check_tokens": args.check_tokens,
        "llamagen_repo": os.path.abspath(args.llamagen_repo) if args.llamagen_repo else None,
    }
    results, checks = {}, {}
    t_start = time.perf_counter()
    for name in args.models:
        jobs = (["check"] if args.check_tokens > 0 else []) + list(args.contenders)
        for kind in jobs:
            if args.wait_idle > 0 and device == "cpu":
                wait_for_quiet(args.wait_idle, args.busy_threshold)
            spec = {**base, "model": name, "kind": kind}
            r = run_config(spec, args.timeout)
            tag = f"{name} {kind}"
            if r["status"] != "ok":
                print(f"{tag}: {r['message']}", file=sys.stderr, flush=True)
            elif kind == "check":
                print(
                    f"{tag}: first differences {r['first_difference']} ({r['wall_s']:.0f} s)", file=sys.stderr
                )
            else:
                print(
                    f"{tag}: {fmt_time(r['time_s'])} s per batch (batches {', '.join(fmt_time(t) for t in r['times_s'])}"
                    f" s, warm-up {fmt_time(r['warmup_s'])} s; peak extra {r['peak_extra_bytes'] / MB:.0f} MB; "
                    f"others used {r['background_cores']:.2f} cores; subprocess {r['wall_s']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
            (checks if kind == "check" else results)[name if kind == "check" else (name, kind)] = r
    load_end = os.getloadavg()

    names = {r.get("device_name") for r in results.values() if r.get("status") == "ok"} - {None}
    busy = load_start[0] > 1.5
    mem = (
        "torch.cuda.max_memory_allocated minus allocated after set-up"
        if device != "cpu"
        else "peak RSS delta"
    )
    header = [
        "# LlamaGen sampling benchmark" + (f" — machine busy (load {load_start[0]:.2f})" if busy else ""),
        "",
        f"- device: {', '.join(sorted(names)) or device}; CPU: {cpu_model()}; cores available: {available_cores()} "
        f"(os.cpu_count() = {os.cpu_count()}); RAM {psutil.virtual_memory().total / GB:.1f} GB",
        f"- torch {torch.__version__}, torch threads: {threads}; Python {platform.python_version()}; "
        f"{platform.system()} {platform.release()}",
        f"- load average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/{load_start[2]:.2f}, at end "
        f"{load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f}; run took {time.perf_counter() - t_start:.0f} s",
        f"- {args.batch} images x {args.grid}x{args.grid} = {args.grid**2} tokens, CFG {args.cfg:g} "
        f"({2 * args.batch if args.cfg > 1 else args.batch} rows in the transformer), temperature 1, top-k "
        f"{args.top_k or 'off'}, {dtype}, {'compiled' if args.compile else 'no compile'}; random weights "
        f"(seed {args.seed}, output head N(0, {args.head_std:g})); time = median of {args.repeats} batches after "
        f"1 warm-up; memory = {mem}",
        f"- command: `{shlex.join(['python', 'benchmarks/bench_sampling.py', *sys.argv[1:]])}`",
    ]
    body = make_table(args, results, checks) + [""] + make_notes(args, results, checks)
    print("\n".join(header + [""] + body))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            f.write("\n".join(header + [""] + body) + "\n")
        print(f"\nwrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
