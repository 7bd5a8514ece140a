"""Evaluate a tokenizer over a whole split: exact codebook usage and perplexity, PSNR, SSIM, and a Frechet
distance in the feature space of a pluggable extractor (skipped, and said so, when none is given).

    fullvq eval --model outputs/tokenizer/model --dataset fashion_mnist --split test --resolution 32 \
        --feature-extractor fashion-mnist-classifier
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..data import ImageTransform, TransformedImages, collate_images, load_image_dataset
from ..metrics import CodebookUsage, FeatureStatistics, frechet_distance, psnr, ssim
from ..models.loading import load_tokenizer
from .extractors import load_feature_extractor


def _all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


@torch.no_grad()
def evaluate_tokenizer(
    model,
    dataset,
    transform: ImageTransform,
    batch_size: int = 64,
    max_images: int | None = None,
    image_column: str = "image",
    feature_extractor: str | torch.nn.Module | None = None,
    accelerator=None,
    progress: bool = True,
) -> dict:
    """Tokenize -> detokenize every image of ``dataset`` (sharded over processes when ``accelerator`` is given).

    Returns a dict with ``usage``, ``perplexity``, ``dead_codes``, ``used_codes``, ``num_tokens`` (exact, over all
    processes), ``psnr`` and ``ssim`` (means over images, dB / unitless), ``num_images``, and ``frechet_distance``
    (with ``feature_extractor``) or ``frechet_distance: None`` with ``frechet_skipped`` saying why.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size} (--batch-size).")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be at least 1 (or None for the whole split), got {max_images} (--max-images).")
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    rank = accelerator.process_index if accelerator is not None else 0
    world = accelerator.num_processes if accelerator is not None else 1
    model.eval()
    extractor, extractor_name = None, None
    if feature_extractor is not None:
        extractor = load_feature_extractor(feature_extractor) if isinstance(feature_extractor, str) else feature_extractor
        extractor = extractor.to(device).eval()
        extractor_name = feature_extractor if isinstance(feature_extractor, str) else type(feature_extractor).__name__
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    images = TransformedImages(dataset, transform, image_column)
    shard = list(range(rank, n, world))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(images, shard), batch_size=batch_size, collate_fn=collate_images
    )
    usage = CodebookUsage(model.codebook_size, device=device)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # psnr, ssim, images, skipped
    real_stats = fake_stats = None
    for batch in tqdm(loader, desc="evaluate", disable=not progress or rank != 0, dynamic_ncols=True):
        sums[3] += batch["num_skipped"]
        x = batch["pixel_values"]
        if x is None:
            continue
        x = x.to(device)
        ids = model.tokenize(x)
        usage.update(ids)
        rec = model.detokenize(ids).float().clamp(-1, 1)
        sums[0] += psnr(rec, x).clamp(max=100.0).sum()
        sums[1] += ssim(rec, x).sum()
        sums[2] += x.shape[0]
        if extractor is not None:
            f_real, f_fake = extractor(x).double(), extractor(rec).double()
            if real_stats is None:
                real_stats, fake_stats = FeatureStatistics(f_real.shape[1]), FeatureStatistics(f_real.shape[1])
            real_stats.update(f_real)
            fake_stats.update(f_fake)
    totals = _all_reduce_sum(sums)
    results = usage.compute()
    count = max(float(totals[2]), 1.0)
    results.update(psnr=float(totals[0]) / count, ssim=float(totals[1]) / count, num_images=int(totals[2]),
                   skipped_eval_images=int(totals[3]))  # fmt: skip
    if extractor is not None and real_stats is not None:
        results["frechet_distance"] = frechet_distance(real_stats.mean, real_stats.cov, fake_stats.mean, fake_stats.cov)
        results["feature_extractor"] = extractor_name
    else:
        results["frechet_distance"] = None
        results["frechet_skipped"] = "no feature extractor given (--feature-extractor)"
    return results


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Evaluate a tokenizer: usage, perplexity, PSNR, SSIM, Frechet distance.")
    p.add_argument("--model", required=True, help="tokenizer folder or Hub id (the class is read from its config.json)")
    p.add_argument("--subfolder", help="folder inside --model holding config.json (e.g. model)")
    p.add_argument("--revision", help="Hub branch, tag or commit of --model")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-dir")
    p.add_argument("--split", default="test")
    p.add_argument("--image-column", default="image")
    p.add_argument("--resolution", type=int, default=None, help="default: the model's sample_size")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-images", type=int)
    p.add_argument("--feature-extractor", help="'fashion-mnist-classifier' or a weights file")
    p.add_argument("--output", help="write the results JSON here")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    args = build_parser(prog).parse_args(argv)
    model = load_tokenizer(args.model, subfolder=args.subfolder, revision=args.revision)
    resolution = args.resolution or model.config.sample_size
    transform = ImageTransform(resolution, model.config.in_channels, random_crop=False, flip=False)
    dataset = load_image_dataset(args.dataset, args.split, args.data_dir, False, args.image_column)
    results = evaluate_tokenizer(model, dataset, transform, args.batch_size, args.max_images, args.image_column, args.feature_extractor)
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    return results


if __name__ == "__main__":
    main()
