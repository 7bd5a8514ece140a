"""The README's main job: train two small tokenizers on real Fashion-MNIST on the CPU, FVQ (VQBridge) and a plain
VQ of the same size, then tokenize the whole test split and report exact codebook usage and reconstructions.

    python examples/demo.py --output-dir outputs/demo

Writes ``reconstructions.png`` (originals / FVQ / plain VQ), ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from fullvq_hf import CodebookUsage, FVQModel
from fullvq_hf.data import load_fashion_mnist, to_pixels


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="outputs/demo")
    p.add_argument("--codebook-size", type=int, default=16384)
    p.add_argument("--codebook-dim", type=int, default=16)
    p.add_argument("--bridge", default="S/4", help="VQBridge preset <S|B|L|XL>/<patch>")
    p.add_argument("--steps", type=int, default=300, help="training steps per tokenizer")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-images", type=int, default=10000, help="test images tokenized for usage / PSNR")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_model(args, quantizer_type: str) -> FVQModel:
    torch.manual_seed(args.seed)
    return FVQModel.from_preset(
        "cpu-small",
        args.bridge if quantizer_type == "vqbridge" else None,
        quantizer_type=quantizer_type,
        in_channels=1,
        out_channels=1,
        codebook_size=args.codebook_size,
        codebook_dim=args.codebook_dim,
        sample_size=32,
    )


def train(model: FVQModel, train_x: torch.Tensor, args, name: str) -> list[float]:
    g = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.95))
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    )
    model.train()
    losses = []
    bar = tqdm(range(args.steps), desc=f"train {name}", dynamic_ncols=True)
    for _ in bar:
        batch = train_x[torch.randint(len(train_x), (args.batch_size,), generator=g)]
        out = model(batch)
        loss = F.mse_loss(out.sample, batch) + out.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.4f}", batch_usage=f"{out.batch_usage.item():.3f}")
    return losses


@torch.no_grad()
def evaluate(model: FVQModel, test_x: torch.Tensor, batch_size: int = 500) -> tuple[dict, torch.Tensor]:
    model.eval()
    usage = CodebookUsage(model.codebook_size)
    se, recons = 0.0, []
    for i in tqdm(range(0, len(test_x), batch_size), desc="evaluate", dynamic_ncols=True):
        x = test_x[i : i + batch_size]
        ids = model.tokenize(x)
        usage.update(ids)
        rec = model.detokenize(ids).clamp(-1, 1)
        se += F.mse_loss(rec, x, reduction="sum").item()
        if i == 0:
            recons = rec[:16]
    mse = se / test_x.numel()
    stats = usage.compute()
    stats["psnr"] = 10 * math.log10(4.0 / mse)  # pixel range [-1, 1] has peak-to-peak 2
    return stats, recons


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().squeeze(1).numpy()


def save_grid(rows: list[torch.Tensor], labels: list[str], path: Path, scale: int = 3, margin: int = 150) -> None:
    """One row of images per entry, each row labelled on the left."""
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


def main(argv=None):
    args = parse_args(argv)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train_x = to_pixels(load_fashion_mnist("train")[0])
    test_x = to_pixels(load_fashion_mnist("test")[0][: args.eval_images])
    results, recon_rows, labels = {}, [test_x[:16]], ["originals"]
    for name, qtype in (("FVQ (VQBridge)", "vqbridge"), ("plain VQ", "vq")):
        model = make_model(args, qtype)
        t0 = time.time()
        losses = train(model, train_x, args, name)
        stats, recons = evaluate(model, test_x)
        stats.update(train_seconds=round(time.time() - t0, 1), final_loss=float(np.mean(losses[-20:])))
        results[name] = stats
        recon_rows.append(recons)
        labels.append(f"{name}\nusage {100 * stats['usage']:.1f}%\nPSNR {stats['psnr']:.1f} dB")
        model.save_pretrained(out_dir / f"model-{qtype}", fold_codebook=True)
    save_grid(recon_rows, labels, out_dir / "reconstructions.png")
    config = {k: v for k, v in vars(args).items() if k != "output_dir"}
    (out_dir / "results.json").write_text(json.dumps({"config": config, "results": results}, indent=2))
    lines = [
        f"Fashion-MNIST test split ({len(test_x)} images, 8x8 tokens each), K = {args.codebook_size}, "
        f"D = {args.codebook_dim}, {args.steps} steps of batch {args.batch_size}",
        "",
        "| tokenizer | codes used | usage | perplexity | dead codes | PSNR (dB) | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in results.items():
        lines.append(
            f"| {name} | {s['used_codes']} | {100 * s['usage']:.1f}% | {s['perplexity']:.0f} | {s['dead_codes']} | "
            f"{s['psnr']:.2f} | {s['train_seconds']} |"
        )
    table = "\n".join(lines)
    (out_dir / "results.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nwrote {out_dir}/reconstructions.png (rows: originals, FVQ, plain VQ), results.json, results.md")


if __name__ == "__main__":
    main()
