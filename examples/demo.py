"""The README's main job (`make demo`): on real Fashion-MNIST and a 2-core CPU, train an FVQ tokenizer (VQBridge)
with 16,384 codes and, on the same budget, a plain VQ tokenizer, then measure both on the whole test split; then
train a small LlamaGen generator on the FVQ tokenizer's codes and score the images it generates per class.

    python examples/demo.py --output-dir outputs/demo

28x28 images are padded to 32x32 and downsampled 4x to 8x8 tokens. Both runs use the package's accelerate trainer
(`fullvq_hf.training`, presets ``cpu-fmnist-fvq`` / ``cpu-fmnist-vq``) with learning annealing; the FVQ run adds
the package's code restarts and code tracking (``--no-restarts``: the official recipe's FVQ). Writes to
``--output-dir``:
    reconstructions.png     originals / FVQ / plain VQ on test images
    code_frequency.png      sorted per-code counts on the test split, both tokenizers
    samples.png             generated images, a row per class (LlamaGenPipeline: generator + FVQ tokenizer)
    results.json, results.md   tokenizers: usage, perplexity, dead codes, PSNR, SSIM, Frechet distance in the feature
                            space of the shipped Fashion-MNIST classifier; generator: the classifier's accuracy on
                            the generated images and their Frechet distance to the test split
    fvq/, vq/               each tokenizer run: checkpoints, tensorboard logs, model/ (folded) and model-train/
    codes/, llamagen/       the codes dataset (datasets, save_to_disk) and the generator run
    pipeline/               the LlamaGenPipeline, loadable with LlamaGenPipeline.from_pretrained
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from fullvq_hf import CodebookUsage, FVQModel, LlamaGenForConditionalGeneration, LlamaGenPipeline
from fullvq_hf.data import FASHION_MNIST_CLASSES, fashion_mnist_dataset, load_fashion_mnist, to_pixels
from fullvq_hf.evaluation.generator_eval import evaluate_generator, generate_per_class, real_statistics
from fullvq_hf.training.codes import extract_codes
from fullvq_hf.training.config import make_config
from fullvq_hf.training.llamagen_trainer import make_llamagen_config
from fullvq_hf.training.llamagen_trainer import train as train_llamagen
from fullvq_hf.training.tokenizer_trainer import train

RUNS = (("FVQ (VQBridge)", "fvq", "cpu-fmnist-fvq"), ("plain VQ", "vq", "cpu-fmnist-vq"))
# FVQ's run adds the package's restarts and code tracking (not in the official recipe): dead bridge positions every
# 20 steps, every step the codes picked less than 1.28x a code's mean picks in a 100-step window, and each picked
# code moves 0.3 of the way to its latents' mean (benchmarks/usage_demo_curves.md, twelfth wave)
FVQ_RESTARTS = dict(bridge_restart_every=20, code_restart_every=1, code_restart_window=100, code_restart_share=1.28,
                    code_track_rate=0.3)  # fmt: skip
# the presets' 300 steps: FVQ with restarts and tracking uses 99% of 16,384 codes there (98.5% at 200 steps); with
# the generator preset's 600 steps the whole demo takes about 18 minutes on 2 quiet CPU cores
DEFAULT_TOKENIZER_STEPS, DEFAULT_CODES_IMAGES = 300, 20000
GUIDANCE_SCALE, TOP_K = 3.0, 200


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="outputs/demo")
    p.add_argument(
        "--max-steps",
        type=int,
        default=DEFAULT_TOKENIZER_STEPS,
        help="training steps per tokenizer (default %(default)s, the presets' own)",
    )
    p.add_argument("--codebook-size", type=int, default=None, help="preset: 16384")
    p.add_argument("--batch-size", type=int, default=None, help="preset: 64")
    p.add_argument(
        "--eval-max-images", type=int, default=None, help="test images to evaluate (default: all 10,000)"
    )
    p.add_argument(
        "--no-restarts",
        action="store_true",
        help="train FVQ as the official recipe, without the package's code restarts and tracking",
    )
    p.add_argument("--no-frechet", action="store_true", help="skip the Frechet distance")
    p.add_argument(
        "--codes-images",
        type=int,
        default=DEFAULT_CODES_IMAGES,
        help="training images tokenized for the generator (default %(default)s; 60000 = all)",
    )
    p.add_argument("--generator-steps", type=int, default=None, help="generator training steps (preset: 600)")
    p.add_argument(
        "--samples-per-class", type=int, default=100, help="generated images per class for the scores"
    )
    p.add_argument("--guidance-scale", type=float, default=GUIDANCE_SCALE)
    p.add_argument("--top-k", type=int, default=TOP_K)
    p.add_argument("--skip-generator", action="store_true", help="only the tokenizers")
    return p.parse_args(argv)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().squeeze(1).numpy()


def save_grid(
    rows: list[torch.Tensor], labels: list[str], path: Path, scale: int = 3, margin: int = 150
) -> None:
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


_START = time.time()


def stage(number: int, total: int, text: str) -> None:
    """One header line per stage, so a user knows where the demo is and how long it has run."""
    print(f"\n=== [{number}/{total}] {text}  (demo time so far {time.time() - _START:.0f} s) ===", flush=True)


def train_generator(args, out_dir: Path, test_pixels: torch.Tensor, total: int) -> dict:
    """FVQ tokenizer -> codes dataset -> LlamaGen generator -> LlamaGenPipeline -> samples.png and scores."""
    tokenizer_dir = out_dir / "fvq" / "model"
    tokenizer = FVQModel.from_pretrained(tokenizer_dir).eval()

    def reconstruct(x):
        return tokenizer.detokenize(tokenizer.tokenize(x))

    stage(3, total, f"tokenize {args.codes_images} training images, train the LlamaGen generator on their codes")
    t0 = time.time()
    codes = extract_codes(
        tokenizer,
        fashion_mnist_dataset("train"),
        out_dir / "codes",
        max_images=args.codes_images,
        batch_size=500,
        source={"dataset": "fashion_mnist", "tokenizer": str(tokenizer_dir)},
    )
    codes_seconds = time.time() - t0
    overrides = {
        "preset": "cpu-fmnist-gpt",
        "codes": str(out_dir / "codes"),
        "tokenizer": str(tokenizer_dir),
        "output_dir": str(out_dir / "llamagen"),
        "overwrite_output_dir": True,  # the demo replaces its own earlier outputs
        "sample_guidance_scale": args.guidance_scale,
        "sample_top_k": args.top_k,
    }
    if args.generator_steps is not None:
        overrides["max_steps"] = args.generator_steps
    t0 = time.time()
    stats = train_llamagen(make_llamagen_config(overrides))
    train_seconds = time.time() - t0

    stage(4, total, f"generate {args.samples_per_class} images per class and score them with the classifier")
    transformer = LlamaGenForConditionalGeneration.from_pretrained(out_dir / "llamagen" / "model")
    pipe = LlamaGenPipeline(transformer=transformer, vqvae=tokenizer)
    pipe.save_pretrained(out_dir / "pipeline")
    sample_kw = {"guidance_scale": args.guidance_scale, "top_k": args.top_k}
    images, _ = generate_per_class(pipe, len(FASHION_MNIST_CLASSES), 10, seed=1, progress=False, **sample_kw)
    save_grid(
        list(images.view(len(FASHION_MNIST_CLASSES), 10, *images.shape[1:])),
        list(FASHION_MNIST_CLASSES),
        out_dir / "samples.png",
        margin=90,
    )
    fd = real_statistics(test_pixels)  # the test split's features, computed once for all three scores
    scores = evaluate_generator(pipe, fd, per_class=args.samples_per_class, **sample_kw)

    # references in the same feature space: real training images, and the tokenizer's own reconstructions
    train_pixels = to_pixels(
        load_fashion_mnist("train")[0][: len(FASHION_MNIST_CLASSES) * args.samples_per_class]
    )
    references = {}
    for name, transform in (("real_train_images", lambda x: x), ("tokenizer_reconstructions", reconstruct)):
        fd.reset(real=False)
        for i in range(0, len(train_pixels), 500):
            with torch.no_grad():
                fd.update(fake=transform(train_pixels[i : i + 500]))
        references[name] = fd.compute()
    return {
        "codes_images": len(codes),
        "codes_seconds": round(codes_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "steps": stats["step"],
        "final_loss": stats["final_loss"],
        "num_parameters": stats["num_parameters"],
        **scores,
        "reference_frechet_distance_real_train_images": references["real_train_images"],
        "reference_frechet_distance_tokenizer_reconstructions": references["tokenizer_reconstructions"],
    }


def generator_table(g: dict) -> list[str]:
    n = g["num_images"] // len(FASHION_MNIST_CLASSES)
    s = g["sampling"]
    return [
        "",
        f"Generator: LlamaGen GPT ({g['num_parameters'] / 1e6:.1f}M parameters) on the FVQ tokenizer's codes of "
        f"{g['codes_images']} training images, {g['steps']} steps ({g['train_seconds']} s), final loss "
        f"{g['final_loss']:.2f}; {n} images per class, CFG {s['guidance_scale']}, top-k {s['top_k']}",
        "",
        "| images | classifier accuracy | Frechet distance* to the test split |",
        "|---|---|---|",
        f"| generated | {100 * g['accuracy']:.1f}% | {g['frechet_distance']:.2f} |",
        f"| FVQ reconstructions of training images (tokenizer's ceiling) | - | "
        f"{g['reference_frechet_distance_tokenizer_reconstructions']:.2f} |",
        f"| real training images | 90.97% (test split) | {g['reference_frechet_distance_real_train_images']:.2f} |",
        "",
        "per-class accuracy: "
        + ", ".join(
            f"{name} {100 * a:.0f}%" for name, a in zip(FASHION_MNIST_CLASSES, g["per_class_accuracy"])
        ),
    ]


def main(argv=None):
    global _START
    _START = time.time()
    args = parse_args(argv)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    test_images = load_fashion_mnist("test")[0]
    if args.eval_max_images:
        test_images = test_images[: args.eval_max_images]
    test_pixels = to_pixels(test_images)

    results, counts, rows, labels = {}, {}, [test_pixels[:16]], ["originals"]
    total = len(RUNS) + (0 if args.skip_generator else 2)
    for number, (name, short, preset) in enumerate(RUNS, 1):
        stage(number, total, f"train and evaluate the {name} tokenizer ({preset})")
        overrides = {
            "preset": preset,
            "output_dir": str(out_dir / short),
            "overwrite_output_dir": True,  # the demo replaces its own earlier outputs
            "eval_max_images": args.eval_max_images,
        }
        if not args.no_frechet:
            overrides["feature_extractor"] = "fashion-mnist-classifier"
        for key in ("max_steps", "codebook_size", "batch_size"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        if short == "fvq" and not args.no_restarts:
            overrides.update(FVQ_RESTARTS)
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
    if not args.skip_generator:
        results["generator"] = train_generator(args, out_dir, test_pixels, total)
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
        if name == "generator":
            continue
        fd = "n/a" if s.get("frechet_distance") is None else f"{s['frechet_distance']:.2f}"
        lines.append(
            f"| {name} | {s['used_codes']} | {100 * s['usage']:.2f}% | {s['perplexity']:.0f} | {s['dead_codes']} | "
            f"{s['psnr']:.2f} | {s['ssim']:.3f} | {fd} | {s['seconds']} |"
        )
    if "generator" in results:
        lines += generator_table(results["generator"])
    lines += ["", "*in the 128-d feature space of the shipped Fashion-MNIST classifier"]
    table = "\n".join(lines)
    (out_dir / "results.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\ndemo done in {time.time() - _START:.0f} s")
    print(f"wrote {out_dir}/reconstructions.png, code_frequency.png, samples.png, results.json, results.md")
    return results


if __name__ == "__main__":
    main()
