"""Evaluate a tokenizer over a whole split: exact codebook usage and perplexity, PSNR, SSIM, and a Frechet
distance in the feature space of a pluggable extractor (skipped, and said so, when none is given), and the
papers' metrics from local weights: Inception FID and IS (``--inception-weights``) and LPIPS (``--lpips``).

    fullvq eval --model outputs/tokenizer/model --dataset fashion_mnist --split test --resolution 32 \
        --feature-extractor fashion-mnist-classifier

The papers' ImageNet protocol (FVQ ``eval_fid_usage_lpips.py``): centre crops of 256 px without resizing, rFID and
IS of the reconstructions with the FID Inception (torch-fidelity preprocessing), LPIPS-AlexNet::

    fullvq eval --model MODEL --dataset imagenet-1k --split validation --resolution 256 --center-crop \
        --inception-weights pt_inception-2015-12-05-6726825d.pth \
        --lpips alex --lpips-weights alexnet-owt-7be5be79.pth alex.pth
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
from .inception import INCEPTION_PROTOCOLS, FIDInceptionV3, InceptionMetrics
from .lpips import LPIPS, LPIPS_CHANNELS


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
    inception: FIDInceptionV3 | None = None,
    lpips: LPIPS | None = None,
    is_splits: int = 10,
) -> dict:
    """Tokenize -> detokenize every image of ``dataset`` (sharded over processes when ``accelerator`` is given).

    Returns a dict with ``usage``, ``perplexity``, ``dead_codes``, ``used_codes``, ``num_tokens`` (exact, over all
    processes), ``psnr`` and ``ssim`` (means over images, dB / unitless), ``num_images``, and ``frechet_distance``
    (with ``feature_extractor``) or ``frechet_distance: None`` with ``frechet_skipped`` saying why.
    With ``inception`` (a loaded ``FIDInceptionV3``): ``inception_fid`` (reconstructions vs. originals),
    ``inception_score`` and ``inception_score_std`` (of the reconstructions, ``is_splits`` chunks); with ``lpips``
    (a loaded ``LPIPS``): ``lpips``, the mean distance. Metrics not asked for are ``None`` with a ``*_skipped`` reason.
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
    if inception is not None and n < max(is_splits, 2):
        raise ValueError(
            f"The Inception Score over {is_splits} splits and FID need at least {max(is_splits, 2)} images; this "
            f"evaluation has {n}. Evaluate more images (--max-images) or use fewer splits (--is-splits)."
        )
    images = TransformedImages(dataset, transform, image_column)
    shard = list(range(rank, n, world))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(images, shard), batch_size=batch_size, collate_fn=collate_images
    )
    usage = CodebookUsage(model.codebook_size, device=device)
    inception_metrics = InceptionMetrics(inception.to(device), is_splits) if inception is not None else None
    lpips_sum = torch.zeros(1, dtype=torch.float64, device=device)
    if lpips is not None:
        lpips = lpips.to(device)
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
        if inception_metrics is not None:
            inception_metrics.update(real=x, fake=rec)
        if lpips is not None:
            lpips_sum += lpips(rec, x).double().sum()
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
    if inception_metrics is not None:
        inception_results = inception_metrics.compute()
        results.update({k: inception_results[k] for k in ("inception_fid", "inception_score", "inception_score_std")})
        results["inception_protocol"] = inception.protocol
    else:
        results.update(inception_fid=None, inception_score=None,
                       inception_skipped="no FID Inception weights given (--inception-weights)")  # fmt: skip
    if lpips is not None:
        results["lpips"] = float(_all_reduce_sum(lpips_sum)[0]) / count
        results["lpips_net"] = lpips.net_name
    else:
        results.update(lpips=None, lpips_skipped="no LPIPS network given (--lpips alex|vgg with --lpips-weights)")
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
    p.add_argument("--center-crop", action="store_true",
                   help="the papers' protocol: the central RESOLUTION x RESOLUTION pixels, not resized (FVQ crop_image.py)")
    p.add_argument("--inception-weights", metavar="FILE_OR_REPO",
                   help="FID Inception weights (pytorch-fid's pt_inception-2015-12-05-6726825d.pth, or a safetensors "
                        "copy; a local file or a Hub repo 'owner/name[/file]'): adds inception_fid and inception_score")
    p.add_argument("--inception-protocol", default="torch-fidelity", choices=list(INCEPTION_PROTOCOLS),
                   help="resize/normalisation before the Inception (default: torch-fidelity, as FVQ and LlamaGen report)")
    p.add_argument("--is-splits", type=int, default=10, help="Inception Score chunks (default 10)")
    p.add_argument("--lpips", choices=list(LPIPS_CHANNELS), help="add LPIPS with this backbone (needs --lpips-weights)")
    p.add_argument("--lpips-weights", nargs="+", metavar="FILE_OR_REPO",
                   help="LPIPS weights: one full LPIPS state dict, or torchvision's backbone file plus the lpips "
                        "package's lin file (e.g. alexnet-owt-7be5be79.pth alex.pth)")
    p.add_argument("--output", help="write the results JSON here")
    return p


def load_metric_networks(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple:
    """The FID Inception and LPIPS networks the options ask for (``None`` where not asked); a missing or wrong
    weights file is one ``error:`` line naming the option."""
    if args.lpips_weights and not args.lpips:
        parser.error("--lpips-weights given without --lpips: say which backbone the weights are for (alex or vgg).")
    if args.lpips and not args.lpips_weights:
        files = "alexnet-owt-7be5be79.pth alex.pth" if args.lpips == "alex" else "vgg16-397923af.pth vgg.pth"
        parser.error(
            f"--lpips {args.lpips} needs its weights, and nothing is downloaded: pass --lpips-weights with torchvision's "
            f"backbone file and the lpips package's lin file ({files}), or one full LPIPS state dict."
        )
    if args.is_splits < 1:
        parser.error(f"--is-splits must be at least 1, got {args.is_splits}.")
    inception = lpips = None
    try:
        if args.inception_weights:
            inception = FIDInceptionV3.from_pretrained(
                args.inception_weights, protocol=args.inception_protocol, option="--inception-weights"
            )
        if args.lpips:
            lpips = LPIPS.from_pretrained(args.lpips_weights, net=args.lpips, option="--lpips-weights")
    except ValueError as err:
        parser.error(str(err))
    return inception, lpips


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    inception, lpips = load_metric_networks(args, parser)
    model = load_tokenizer(args.model, subfolder=args.subfolder, revision=args.revision)
    resolution = args.resolution or model.config.sample_size
    transform = ImageTransform(resolution, model.config.in_channels, random_crop=False, flip=False,
                               resize=not args.center_crop)  # fmt: skip
    dataset = load_image_dataset(args.dataset, args.split, args.data_dir, False, args.image_column)
    n = len(dataset) if args.max_images is None else min(len(dataset), args.max_images)
    if inception is not None and n < max(args.is_splits, 2):
        parser.error(f"--inception-weights: the Inception Score over --is-splits {args.is_splits} needs at least "
                     f"{max(args.is_splits, 2)} images; this split gives {n} (raise --max-images or lower --is-splits).")  # fmt: skip
    results = evaluate_tokenizer(model, dataset, transform, args.batch_size, args.max_images, args.image_column,
                                 args.feature_extractor, inception=inception, lpips=lpips,
                                 is_splits=args.is_splits)  # fmt: skip
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    return results


if __name__ == "__main__":
    main()
