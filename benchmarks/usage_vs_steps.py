"""Codebook usage against training steps, on the whole test and train splits, from one run's checkpoints.

    python benchmarks/usage_vs_steps.py RUN_DIR [--splits test train] [--steps 400 800] [--threads 2]

RUN_DIR is a Fashion-MNIST tokenizer run trained with ``--checkpoint-every N --checkpoints-total-limit none``
(e.g. ``examples/train_tokenizer.py --preset cpu-fmnist-fvq --lr-scheduler constant ...``). With a constant lr, the
checkpoint at step s is exactly the run that stopped at s, so one run gives the whole curve. Each checkpoint's model
is rebuilt from the run's ``training_config.json``; its encoder's latents over the split (l2-normalised first for a
cosine-search model, as its quantizer does) are searched exactly against the codebook the model searches
(C' = bridge(C) for FVQ) with ``codebook_oracle.search_stats``. Reported per checkpoint and split: usage (codes hit at
least once), codes used, perplexity, mean squared quantization error.

Writes ``--output``.json (rows already there are reused, so rerun it as checkpoints arrive), .md and .png (usage
against steps, both splits); default RUN_DIR/usage_vs_steps.*. For FVQ it also gives, per checkpoint, the share of
dead codes at each position inside a bridge patch (see ``dead_by_position``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from codebook_oracle import dead_share_by, latents, search_stats  # noqa: E402

from fullvq_hf.training.config import make_config  # noqa: E402
from fullvq_hf.training.tokenizer_trainer import build_model  # noqa: E402

SPLITS = ("test", "train")


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    found = []
    for ck in (run / "checkpoints").glob("checkpoint-*"):
        step = ck.name.split("-", 1)[1]
        if step.isdigit() and (ck / "model.safetensors").is_file():
            found.append((int(step), ck))
    return sorted(found)


def dead_by_position(model, counts: torch.Tensor) -> list[float] | None:
    """For a VQBridge (ViT or DiT): the share of dead codes at each position inside a bridge patch. The bridge lays
    the K codes on a (H, W) grid and its final layer turns each p x p patch token into p*p codes with per-position
    weights, so the codes at one position are one affine image of the patch features: a sub-codebook of K / p^2."""
    bridge = getattr(model.quantize, "qbridge", None)
    if bridge is None:
        return None
    return [round(float(v), 5) for v in dead_share_by(bridge.code_positions(), counts)]


def plot(rows: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=120)
    for split, marker in zip(SPLITS, "os"):
        pts = sorted((r["step"], 100 * r["usage"]) for r in rows if r["split"] == split)
        if pts:
            ax.plot(*zip(*pts), marker=marker, label=f"{split} split")
    ax.axhline(99, color="grey", ls="--", lw=1, label="99%")
    ax.set_xlabel("training step")
    ax.set_ylabel("codebook usage (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    p.add_argument("--steps", nargs="+", type=int, default=None, help="only these checkpoints (default: all)")
    p.add_argument("--train-steps", nargs="+", type=int, default=None,
                   help="checkpoints whose train split is counted (default: all of --steps); at 262k codes one "
                   "train-split count is ~8 min a thread")  # fmt: skip
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", type=Path, default=None,
                   help="path prefix of the .json / .md / .png (default RUN_DIR/usage_vs_steps)")  # fmt: skip
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = args.run_dir
    config_file = run / "training_config.json"
    if not config_file.is_file():
        raise SystemExit(f"error: {run} has no training_config.json; give the folder of a tokenizer run")
    found = [(s, ck) for s, ck in checkpoints(run) if args.steps is None or s in args.steps]
    if not found:
        raise SystemExit(
            f"error: no checkpoints{' at --steps' if args.steps else ''} in {run / 'checkpoints'}; train with "
            "--checkpoint-every N --checkpoints-total-limit none"
        )
    options = json.loads(config_file.read_text())
    options.update(init_from=None, finetune_from_vq=None)
    model = build_model(make_config(options)).eval()
    prefix = args.output or run / "usage_vs_steps"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    out_json = prefix.with_suffix(".json")
    rows = json.loads(out_json.read_text())["rows"] if out_json.is_file() else []
    rows = [r for r in rows if "dead_by_position" in r or r["split"] != "test"]  # older test rows are redone
    done = {(r["step"], r["split"]) for r in rows}
    for step, ck in tqdm(found, desc="checkpoints"):
        splits = [s for s in args.splits if (step, s) not in done]
        if args.train_steps is not None and step not in args.train_steps and "train" in splits:
            splits.remove("train")
        if not splits:
            continue
        model.load_state_dict(load_file(ck / "model.safetensors"))
        with torch.no_grad():
            codebook = model.get_codebook().float()
            for split in splits:
                t0 = time.perf_counter()
                z = latents(model, split)
                if model.quantize.use_l2_norm:  # the cosine search: latents normalised as the quantizer does
                    z = F.normalize(z, dim=-1)
                counts, summary = search_stats(z, codebook)
                row = {
                    "step": step,
                    "split": split,
                    "tokens": summary["num_tokens"],
                    "codes_used": summary["used_codes"],
                    "usage": summary["usage"],
                    "perplexity": summary["perplexity"],
                    "mse": summary["mse"],
                    "dead_by_position": dead_by_position(model, counts),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
                rows.append(row)
                tqdm.write(f"step {step:>6} {split:<5}: usage {row['usage']:.4%} ({row['codes_used']:,} codes), "
                           f"perplexity {row['perplexity']:,.0f}  [{row['seconds']} s]")  # fmt: skip
                rows.sort(key=lambda r: (r["step"], r["split"]))
                out_json.write_text(json.dumps({"run": str(run), "config": options, "rows": rows}, indent=1) + "\n")
    k = options["codebook_size"]
    title = (f"{(args.output or run).name}: K={k:,}, bridge {options.get('bridge')}, lr {options['lr_scheduler']}, "
             f"batch {options['batch_size']}, seed {options['seed']}")  # fmt: skip
    steps = sorted({r["step"] for r in rows})
    table = {(r["step"], r["split"]): r for r in rows}
    lines = [f"# {title}", "", "| step | " + " | ".join(f"{s} usage | {s} codes used" for s in SPLITS)
             + " | dead share per patch position (test): min / median / max | positions with no used code |",
             "|---" * (3 + 2 * len(SPLITS)) + "|"]  # fmt: skip
    for s in steps:
        cells = []
        for split in SPLITS:
            r = table.get((s, split))
            cells += [f"{r['usage']:.2%}", f"{r['codes_used']:,}"] if r else ["-", "-"]
        by_pos = (table.get((s, "test")) or {}).get("dead_by_position")
        cells.append(" / ".join(f"{v:.1%}" for v in torch.tensor(by_pos).quantile(torch.tensor([0, 0.5, 1.0])).tolist())
                     if by_pos else "-")  # fmt: skip
        cells.append(f"{sum(v == 1.0 for v in by_pos)} of {len(by_pos)}" if by_pos else "-")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    prefix.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot(rows, title, prefix.with_suffix(".png"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
