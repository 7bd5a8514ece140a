"""Benchmark one quantizer training step: time and peak extra memory, ours against peers and a GEMM floor.

For every (K codes, D dims) pair, on ``--tokens`` latent vectors (default 4096, a (1, D, 64, 64) latent):

    floor      the bare fp32 GEMM (tokens x D) @ (D x K) followed by argmin, forward only (no autograd)
    ours       fullvq_hf.VectorQuantizer: forward + backward of quantized.square().mean() + loss
    bridge     fullvq_hf.VQBridgeQuantizer (official preset L/4 for K <= 16384, L/8 above): the full
               quantizer step (bridge forward, search, losses, backward through the bridge)
    bridge-only  the VQBridge of that quantizer alone: project_codebook() forward + .square().mean().backward()
    vqp        vector_quantize_pytorch.VectorQuantize(dim=D, codebook_size=K, learnable_codebook=True,
               ema_update=False): forward + backward of quantized.square().mean() + loss
    diffusers  diffusers.models.autoencoders.vae.VectorQuantizer(K, D, beta=0.25): same step

Every measurement runs in a fresh subprocess (this file with ``--worker``), so its peak memory is clean:
the peak extra memory is the process's peak resident set size during warm-up + timed steps minus its resident
size right after set-up (model, codebook and input built). The peak is taken as the larger of the kernel's
high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` after set-up where the kernel allows it)
and a psutil sampler thread reading the RSS every 5 ms. A configuration whose estimated extra memory is
above ``--memory-limit-gb`` is not run and is reported as skipped; one that fails or runs past ``--timeout``
is reported as such. The ``--large-ks`` codebooks (default K = 1,048,576) run ours only, with
``--large-repeats`` timed steps and ``--large-timeout``. Before each configuration the driver waits up to
``--wait-idle`` seconds for other processes to go quiet, and marks with a dagger the rows during which other
processes used more than ``--busy-threshold`` cores (their times are inflated; memory is not affected).

    python benchmarks/bench_quantizer.py                      # full table (tens of minutes on 2 CPU cores)
    python benchmarks/bench_quantizer.py --quick              # CI-size smoke: K 4096/16384, 1 repeat
    python benchmarks/bench_quantizer.py --output benchmarks/results_cpu.md
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
import threading
import time

RESULT_MARKER = "@@BENCH_RESULT@@ "
METHODS = ("floor", "ours", "bridge", "bridge-only", "vqp", "diffusers")
LARGE_METHODS = ("ours", "bridge", "bridge-only")  # the K = 1M rows: ours only, to show it runs
GB = 1e9
MB = 1e6


# ----------------------------------------------------------------------------------------------------------
# configuration helpers (shared by the driver and the worker)
# ----------------------------------------------------------------------------------------------------------


def bridge_preset(codebook_size: int) -> tuple[str, int]:
    """The official FVQ preset for a codebook size: L/4 up to 16384 codes, L/8 above."""
    return ("L/4", 4) if codebook_size <= 16384 else ("L/8", 8)


def method_label(method: str, codebook_size: int) -> str:
    preset = bridge_preset(codebook_size)[0]
    return {
        "floor": "floor: fp32 GEMM + argmin (forward only)",
        "ours": "ours: VectorQuantizer",
        "bridge": f"ours: VQBridgeQuantizer {preset} (full step)",
        "bridge-only": f"ours: VQBridge {preset} alone (project_codebook fwd+bwd)",
        "vqp": "vector-quantize-pytorch VectorQuantize",
        "diffusers": "diffusers VectorQuantizer",
    }[method]


def estimate_extra_bytes(method: str, k: int, d: int, n: int) -> float:
    """Rough peak extra memory of one step (bytes), used only to skip configurations that cannot fit.

    The peers materialise dense tokens x codes float32 matrices: the floor one (the GEMM output),
    diffusers two (torch.cdist's output and its squared-distance mm), vector-quantize-pytorch about six
    (cdist's sum / clamp / sqrt / negation, the int64 one-hot (two float32 matrices' worth) and its float32
    copy, kept for backward). Ours never holds more than a 64 MiB block of distances; its extra memory is a few
    copies of the (K, D) codebook (gradient, projected codebook, bridge activations)."""
    dense = 4.0 * n * k
    codebook = 4.0 * k * d
    small = 4.0 * n * d * 16 + 64 * MB
    if method == "floor":
        return dense + small
    if method == "diffusers":
        return 2 * dense + 2 * codebook + small
    if method == "vqp":
        return 6 * dense + 2 * codebook + small
    if method == "ours":
        return min(dense, 4.0 * (1 << 24)) + 2 * codebook + small
    hidden = 256
    tokens = k // bridge_preset(k)[1] ** 2
    bridge_acts = 4.0 * tokens * hidden * 40  # 2 blocks of qkv / attention / mlp activations and their grads
    if method == "bridge-only":
        return 6 * codebook + bridge_acts + small
    if method == "bridge":
        return min(dense, 4.0 * (1 << 24)) + 7 * codebook + bridge_acts + small
    raise ValueError(method)


def bridge_supported(k: int) -> bool:
    p = bridge_preset(k)[1]
    return k % (p * p) == 0


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------------------------------------
# worker: one configuration in a fresh process
# ----------------------------------------------------------------------------------------------------------


class PeakRSS:
    """Peak resident set size over a window: kernel high-water mark (VmHWM, reset through clear_refs where
    allowed) combined with a sampler thread (psutil, every ``interval`` seconds)."""

    def __init__(self, interval: float = 0.005):
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.hwm_reset = False

    @staticmethod
    def _vm_hwm() -> int | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def rss(self) -> int:
        return self.process.memory_info().rss

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the VmHWM high-water mark to the current RSS
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())
        hwm = self._vm_hwm()
        if self.hwm_reset and hwm is not None:
            self.peak = max(self.peak, hwm)


def build_step(method: str, k: int, d: int, n: int):
    """Set-up (not measured) -> ``step()`` that runs one measured step, and ``reset()`` run between steps."""
    import torch

    side = int(round(n**0.5))
    if side * side != n:
        raise ValueError(f"--tokens must be a perfect square (a (1, D, h, h) latent), got {n}.")
    torch.manual_seed(0)
    z = torch.randn(1, d, side, side)

    if method == "floor":
        z_flat = z.permute(0, 2, 3, 1).reshape(n, d).contiguous()
        codebook = torch.randn(k, d)

        def step():
            with torch.no_grad():
                return torch.mm(z_flat, codebook.t()).argmin(dim=1)

        return step, lambda: None

    z.requires_grad_(True)
    if method in ("ours", "bridge", "bridge-only"):
        from fullvq_hf import VectorQuantizer, VQBridgeQuantizer

        if method == "ours":
            module = VectorQuantizer(k, d)
        else:
            module = VQBridgeQuantizer(k, d, bridge_patch_size=bridge_preset(k)[1], bridge_hidden_size=256, bridge_depth=2)
        module.train()

        if method == "bridge-only":

            def step():
                module.project_codebook().square().mean().backward()

        else:

            def step():
                out = module(z)
                (out.quantized.square().mean() + out.loss).backward()

    elif method == "vqp":
        from vector_quantize_pytorch import VectorQuantize

        module = VectorQuantize(dim=d, codebook_size=k, learnable_codebook=True, ema_update=False)
        module.train()
        z_seq = z.detach().permute(0, 2, 3, 1).reshape(1, n, d).contiguous().requires_grad_(True)
        z = z_seq

        def step():
            quantized, _indices, loss = module(z_seq)
            (quantized.square().mean() + loss).backward()

    elif method == "diffusers":
        from diffusers.models.autoencoders.vae import VectorQuantizer as DiffusersVectorQuantizer

        module = DiffusersVectorQuantizer(k, d, beta=0.25)
        module.train()

        def step():
            z_q, loss, _info = module(z)
            (z_q.square().mean() + loss).backward()

    else:
        raise ValueError(f"unknown method {method!r}")

    def reset():  # optimizer.zero_grad(set_to_none=True): every step allocates its gradients again
        module.zero_grad(set_to_none=True)
        z.grad = None

    return step, reset


def run_worker(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    step, reset = build_step(spec["method"], spec["k"], spec["d"], spec["tokens"])
    gc.collect()
    times = []
    with PeakRSS() as mem:
        baseline = mem.rss()
        for i in range(1 + spec["repeats"]):  # one warm-up step, then the timed ones
            reset()
            gc.collect()
            t0 = time.perf_counter()
            step()
            elapsed = time.perf_counter() - t0
            if i > 0:
                times.append(elapsed)
    return {
        "time_s": statistics.median(times),
        "times_s": times,
        "peak_extra_bytes": max(0, mem.peak - baseline),
        "baseline_rss_bytes": baseline,
        "hwm_reset": mem.hwm_reset,
        "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------------------


def _busy_cpu_seconds() -> float:
    import psutil

    t = psutil.cpu_times()
    not_busy = ("idle", "iowait", "steal", "guest", "guest_nice")  # guest time is already counted in user
    return sum(t) - sum(getattr(t, name, 0.0) for name in not_busy)


def _own_cpu_seconds() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class BackgroundLoad:
    """Average number of cores used by processes other than this driver and its (waited-for) workers over a
    window: system-wide busy CPU time minus our own, divided by the wall time."""

    def __enter__(self) -> BackgroundLoad:
        self.t0, self.busy0, self.own0 = time.perf_counter(), _busy_cpu_seconds(), _own_cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        wall = max(time.perf_counter() - self.t0, 1e-9)
        other = (_busy_cpu_seconds() - self.busy0) - (_own_cpu_seconds() - self.own0)
        self.cores = max(0.0, other / wall)


def wait_for_quiet(max_wait: float, threshold: float) -> float:
    """Wait (up to ``max_wait`` seconds) until other processes use fewer than ``threshold`` cores."""
    deadline = time.perf_counter() + max_wait
    while True:
        with BackgroundLoad() as load:
            time.sleep(1.0)
        if load.cores < threshold or time.perf_counter() >= deadline:
            return load.cores


def run_config(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        with BackgroundLoad() as load:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "message": f"timed out (> {timeout:.0f} s)"}
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER) :])
            result.update(status="ok", wall_s=wall, background_cores=load.cores)
            return result
    lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else "no output"
    if proc.returncode < 0:
        last = f"killed by signal {-proc.returncode}, out of memory?"
    return {"status": "failed", "message": f"failed (exit {proc.returncode}: {last[:120]})"}


def parse_int_list(text: str) -> list[int]:
    return [int(x) for x in text.replace(",", " ").split()] if text.strip() else []


def fmt_time(s: float) -> str:
    return f"{s:.4f}" if s < 0.1 else f"{s:.3f}" if s < 10 else f"{s:.2f}"


def fmt_mem(b: float) -> str:
    return f"{b / MB:.0f}"


def build_plan(args) -> list[dict]:
    """Main grid (every method) then the large codebooks (ours only), grouped by (K, D), floor first."""
    plan = []
    for k in args.ks:
        for d in args.dims:
            plan += [{"method": m, "k": k, "d": d, "large": False} for m in args.methods]
    for k in args.large_ks:
        if k in args.ks:
            continue
        for d in args.dims:
            plan += [{"method": m, "k": k, "d": d, "large": True} for m in args.methods if m in LARGE_METHODS]
    return plan


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", default="16384,65536,262144", help="codebook sizes K, comma separated")
    parser.add_argument("--dims", default="8,256", help="code dimensions D, comma separated")
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per step, a perfect square: (1, D, h, h)")
    parser.add_argument(
        "--large-ks",
        default="1048576",
        help="extra codebook sizes run for ours only (VectorQuantizer, bridge), to show they run; '' for none",
    )
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per configuration, after 1 warm-up")
    parser.add_argument("--large-repeats", type=int, default=1, help="timed steps for the --large-ks rows")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores available)")
    parser.add_argument("--memory-limit-gb", type=float, default=20.0, help="skip configurations estimated above")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per configuration subprocess")
    parser.add_argument("--large-timeout", type=float, default=900.0, help="seconds per --large-ks subprocess")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=60.0,
        help="before each configuration, wait up to this many seconds for other processes to go quiet",
    )
    parser.add_argument(
        "--busy-threshold", type=float, default=0.3, help="cores used by others above which a row is flagged"
    )
    parser.add_argument("--quick", action="store_true", help="CI-size smoke: K 4096/16384, D 8/256, 1 repeat")
    parser.add_argument("--output", default=None, help="also write the markdown report to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        result = run_worker(json.loads(args.worker))
        print(RESULT_MARKER + json.dumps(result), flush=True)
        return 0

    if args.quick:
        args.ks, args.dims, args.repeats, args.large_ks = "4096,16384", "8,256", 1, ""
    args.ks, args.dims, args.large_ks = parse_int_list(args.ks), parse_int_list(args.dims), parse_int_list(args.large_ks)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    try:
        import psutil
    except ImportError:
        print("psutil is required: pip install psutil (or the `bench` extra of fullvq_hf)", file=sys.stderr)
        return 1
    import torch

    if round(args.tokens**0.5) ** 2 != args.tokens:
        parser.error(f"--tokens must be a perfect square (a (1, D, h, h) latent), got {args.tokens}")
    threads = args.threads or available_cores()
    header = [
        "# Quantizer training-step benchmark",
        "",
        f"- CPU: {cpu_model()}; cores available: {available_cores()} (os.cpu_count() = {os.cpu_count()}); "
        f"RAM {psutil.virtual_memory().total / GB:.1f} GB",
        f"- torch {torch.__version__}, torch threads: {threads}; Python {platform.python_version()}; "
        f"{platform.system()} {platform.release()}",
        f"- {args.tokens} tokens per step; time = median of {args.repeats} timed steps after 1 warm-up"
        + (f" ({args.large_repeats} for K in {args.large_ks})" if args.large_ks else "")
        + f"; memory limit {args.memory_limit_gb:g} GB; "
        f"timeout {args.timeout:g} s per configuration ({args.large_timeout:g} s for the large K)",
        f"- command: `{shlex.join(['python', 'benchmarks/bench_quantizer.py', *sys.argv[1:]])}`",
    ]
    for line in header:
        print(line, flush=True)
    print(flush=True)

    plan = build_plan(args)
    results = {}
    for i, cfg in enumerate(plan, 1):
        method, k, d = cfg["method"], cfg["k"], cfg["d"]
        key = (method, k, d)
        need = estimate_extra_bytes(method, k, d, args.tokens)
        tag = f"[{i}/{len(plan)}] K={k} D={d} {method}"
        if method in ("bridge", "bridge-only") and not bridge_supported(k):
            results[key] = {"status": "n/a", "message": f"n/a (K not divisible by {bridge_preset(k)[1]}^2)"}
        elif need > args.memory_limit_gb * GB:
            results[key] = {"status": "skipped", "message": f"skipped (needs ~{need / GB:.1f} GB)"}
        else:
            if args.wait_idle > 0:
                wait_for_quiet(args.wait_idle, args.busy_threshold)
            spec = {
                "method": method,
                "k": k,
                "d": d,
                "tokens": args.tokens,
                "repeats": args.large_repeats if cfg["large"] else args.repeats,
                "threads": threads,
            }
            results[key] = run_config(spec, args.large_timeout if cfg["large"] else args.timeout)
        r = results[key]
        if r["status"] == "ok":
            print(
                f"{tag}: {fmt_time(r['time_s'])} s, peak extra {fmt_mem(r['peak_extra_bytes'])} MB "
                f"(steps {', '.join(fmt_time(t) for t in r['times_s'])} s; other processes used "
                f"{r['background_cores']:.2f} cores; subprocess {r['wall_s']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        else:
            print(f"{tag}: {r['message']}", file=sys.stderr, flush=True)

    body = make_table(plan, results, args.busy_threshold) + [""] + make_summary(args, results)
    print("\n".join(body))
    if args.output:
        with open(args.output, "w") as f:
            f.write("\n".join(header + [""] + body) + "\n")
        print(f"\nwrote {args.output}", file=sys.stderr)
    return 0


def make_table(plan, results, busy_threshold: float) -> list[str]:
    rows = [
        "| K | D | method | time per step (s) | peak extra memory (MB) | time / floor |",
        "|---:|---:|:---|---:|---:|---:|",
    ]
    flagged = False
    for cfg in plan:
        method, k, d = cfg["method"], cfg["k"], cfg["d"]
        r = results[(method, k, d)]
        floor = results.get(("floor", k, d))
        if r["status"] != "ok":
            message = r["message"].replace("|", "/")
            rows.append(f"| {k} | {d} | {method_label(method, k)} | {message} | — | — |")
            continue
        ratio = "—"
        if floor is not None and floor["status"] == "ok":
            ratio = f"{r['time_s'] / floor['time_s']:.2f}x"
        mark = ""
        if r.get("background_cores", 0.0) > busy_threshold:
            mark, flagged = " †", True
        rows.append(
            f"| {k} | {d} | {method_label(method, k)} | {fmt_time(r['time_s'])}{mark} | "
            f"{fmt_mem(r['peak_extra_bytes'])} | {ratio} |"
        )
    if flagged:
        rows += [
            "",
            f"† other processes used more than {busy_threshold:g} cores on average while this row ran: "
            "its time is inflated (memory is not affected).",
        ]
    return rows


def _ratio_text(ours: float, other: float, what: str, better: str, worse: str) -> str:
    """'2.10x faster' style comparison of ours against another value (lower is better)."""
    if ours <= other:
        return f"{other / max(ours, 1e-12):.2f}x {better} than {what}"
    return f"{ours / max(other, 1e-12):.2f}x {worse} than {what}"


def make_summary(args, results) -> list[str]:
    def ok(method, k, d):
        r = results.get((method, k, d))
        return r if r is not None and r["status"] == "ok" else None

    lines = ["## Summary", ""]
    if not args.ks:
        return lines
    k_cmp = 65536 if 65536 in args.ks else max(args.ks)
    d_cmp = 256 if 256 in args.dims else max(args.dims)
    ours, floor = ok("ours", k_cmp, d_cmp), ok("floor", k_cmp, d_cmp)
    peers = {m: ok(m, k_cmp, d_cmp) for m in ("vqp", "diffusers")}
    peers = {m: r for m, r in peers.items() if r is not None}
    if ours is None:
        message = results.get(("ours", k_cmp, d_cmp), {}).get("message", "not run")
        lines.append(f"- K={k_cmp}, D={d_cmp}: ours: {message}.")
    else:
        text = f"- K={k_cmp}, D={d_cmp}, time: ours {fmt_time(ours['time_s'])} s per step"
        if peers:
            fastest = min(peers, key=lambda m: peers[m]["time_s"])
            peer = peers[fastest]
            text += ", " + _ratio_text(
                ours["time_s"],
                peer["time_s"],
                f"the fastest peer ({method_label(fastest, k_cmp)}, {fmt_time(peer['time_s'])} s)",
                "faster",
                "slower",
            )
        else:
            text += " (no peer ran)"
        if floor is not None:
            text += (
                f"; {ours['time_s'] / floor['time_s']:.2f}x the time of the bare GEMM + argmin floor "
                f"({fmt_time(floor['time_s'])} s, forward only)"
            )
        lines.append(text + ".")
        text = f"- K={k_cmp}, D={d_cmp}, memory: ours {fmt_mem(ours['peak_extra_bytes'])} MB peak extra"
        if peers:
            leanest = min(peers, key=lambda m: peers[m]["peak_extra_bytes"])
            peer = peers[leanest]
            text += ", " + _ratio_text(
                ours["peak_extra_bytes"],
                peer["peak_extra_bytes"],
                f"the leanest peer ({method_label(leanest, k_cmp)}, {fmt_mem(peer['peak_extra_bytes'])} MB)",
                "less",
                "more",
            )
        lines.append(text + ".")
    k_big = 262144 if 262144 in args.ks else max(args.ks)
    label = f"VQBridgeQuantizer {bridge_preset(k_big)[0]}"
    for d in args.dims:
        r = ok("bridge", k_big, d)
        if r is not None:
            lines.append(
                f"- K={k_big}, D={d}: our full {label} training step needs {fmt_mem(r['peak_extra_bytes'])} MB "
                f"peak extra memory ({fmt_time(r['time_s'])} s per step)."
            )
        else:
            message = results.get(("bridge", k_big, d), {}).get("message", "not run")
            lines.append(f"- K={k_big}, D={d}: our full {label} training step: {message}.")
    for k in args.large_ks:
        for d in args.dims:
            parts = [
                f"{method_label(m, k)} {fmt_time(r['time_s'])} s, {fmt_mem(r['peak_extra_bytes'])} MB"
                for m in LARGE_METHODS
                if (r := ok(m, k, d)) is not None
            ]
            if parts:
                lines.append(f"- K={k}, D={d}: " + "; ".join(parts) + ".")
    lines.append(
        "- The machine may be shared with other work: timings are wall-clock and can be noisy (rows marked † ran "
        "while other processes were busy); peak memory is per process and not affected."
    )
    return lines


if __name__ == "__main__":
    sys.exit(main())
