"""The README's main job (`make demo`): on real Fashion-MNIST and a 2-core CPU, train an FVQ tokenizer (VQBridge)
with 16,384 codes and, on the same budget, a plain VQ tokenizer, then measure both on the whole test split.

    python examples/demo.py --output-dir outputs/demo

28x28 images are padded to 32x32 and downsampled 4x to 8x8 tokens. Both runs use the package's accelerate trainer
(`fullvq_hf.training`, presets ``cpu-fmnist-fvq`` / ``cpu-fmnist-vq``) with learning annealing. Writes to
``--output-dir``:
    reconstructions.png     originals / FVQ / plain VQ on test images
    code_frequency.png      sorted per-code counts on the test split, both tokenizers
    results.json, results.md   usage, perplexity, dead codes, PSNR, SSIM, Frechet distance in the feature space of
                            the shipped Fashion-MNIST classifier
    fvq/, vq/               each run: checkpoints, tensorboard logs, model/ (folded) and model-train/
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from fullvq_hf import CodebookUsage, FVQModel
from fullvq_hf.data import load_fashion_mnist, to_pixels
from fullvq_hf.training.config import make_config
from fullvq_hf.training.tokenizer_trainer import train

RUNS = (("FVQ (VQBridge)", "fvq", "cpu-fmnist-fvq"), ("plain VQ", "vq", "cpu-fmnist-vq"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="outputs/demo")
    p.add_argument("--max-steps", type=int, default=None, help="training steps per tokenizer (preset: 300)")
    p.add_argument("--codebook-size", type=int, default=None, help="preset: 16384")
    p.add_argument("--batch-size", type=int, default=None, help="preset: 64")
    p.add_argument("--eval-max-images", type=int, default=None, help="test images to evaluate (default: all 10,000)")
    p.add_argument("--no-frechet", action="store_true", help="skip the Frechet distance")
    return p.parse_args(argv)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().squeeze(1).numpy()


def save_grid(rows: list[torch.Tensor], labels: list[str], path: Path, scale: int = 3, margin: int = 150) -> None:
    """One labelled row of images per entry."""
    tiles = [np.concatenate(list(to_uint8(r)), axis=1) for r in rows]
    grid = Image.fromarray(np.concatenate(tiles, axis=0))
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    canvas = Image.new("L", (grid.width + margin, grid.height), color=255)
    canvas.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    row_h = grid.height // len(rows)
    for i, label in enumerate(labels):
        for j, line in enumerate(label.split("\n")):
            draw.text((6, i * row_h + row_h // 2 - 12 + 12 * j), line, fill=0)
    canvas.save(path)


def plot_code_frequency(counts: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for name, c in counts.items():
        used = int((c > 0).sum())
        ax.plot(np.arange(1, len(c) + 1), np.sort(c)[::-1] + 0.5, label=f"{name}: {used}/{len(c)} codes used")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("tokens on the test split (+0.5)")
    ax.set_title("Fashion-MNIST test split: how often each code is used")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@torch.no_grad()
def code_counts_and_reconstructions(model: FVQModel, pixels: torch.Tensor, batch_size: int = 500):
    usage = CodebookUsage(model.codebook_size)
    for i in range(0, len(pixels), batch_size):
        usage.update(model.tokenize(pixels[i : i + batch_size]))
    return usage.counts.numpy(), model.detokenize(model.tokenize(pixels[:16]))


def main(argv=None):
    args = parse_args(argv)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    test_images = load_fashion_mnist("test")[0]
    if args.eval_max_images:
        test_images = test_images[: args.eval_max_images]
    test_pixels = to_pixels(test_images)

    results, counts, rows, labels = {}, {}, [test_pixels[:16]], ["originals"]
    for name, short, preset in RUNS:
        overrides = {"preset": preset, "output_dir": str(out_dir / short), "eval_max_images": args.eval_max_images}
        if not args.no_frechet:
            overrides["feature_extractor"] = "fashion-mnist-classifier"
        for key in ("max_steps", "codebook_size", "batch_size"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        t0 = time.time()
        stats = train(make_config(overrides))
        stats["seconds"] = round(time.time() - t0, 1)
        results[name] = stats
        model = FVQModel.from_pretrained(out_dir / short / "model").eval()
        counts[name], recon = code_counts_and_reconstructions(model, test_pixels)
        assert int((counts[name] > 0).sum()) == stats["used_codes"]  # same tokens as the trainer's evaluation
        rows.append(recon)
        labels.append(f"{name}\nusage {100 * stats['usage']:.1f}%\nPSNR {stats['psnr']:.1f} dB")

    save_grid(rows, labels, out_dir / "reconstructions.png")
    plot_code_frequency(counts, out_dir / "code_frequency.png")
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    first = results[RUNS[0][0]]
    lines = [
        f"Fashion-MNIST test split: {first['num_images']} images x 64 tokens; codebook {len(counts[RUNS[0][0]])} codes; "
        f"{first['step']} training steps per tokenizer",
        "",
        "| tokenizer | codes used | usage | perplexity | dead codes | PSNR (dB) | SSIM | Frechet distance* | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in results.items():
        fd = "n/a" if s.get("frechet_distance") is None else f"{s['frechet_distance']:.2f}"
        lines.append(
            f"| {name} | {s['used_codes']} | {100 * s['usage']:.2f}% | {s['perplexity']:.0f} | {s['dead_codes']} | "
            f"{s['psnr']:.2f} | {s['ssim']:.3f} | {fd} | {s['seconds']} |"
        )
    lines += ["", "*in the 128-d feature space of the shipped Fashion-MNIST classifier (real test images vs their reconstructions)"]
    table = "\n".join(lines)
    (out_dir / "results.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nwrote {out_dir}/reconstructions.png, code_frequency.png, results.json, results.md")
    return results


if __name__ == "__main__":
    main()
