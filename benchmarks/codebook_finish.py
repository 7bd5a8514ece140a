"""Finish a trained Fashion-MNIST tokenizer's codebook without training: move its rare codes onto train latents.

    python benchmarks/codebook_finish.py RUN_DIR [--rounds 4] [--window 409600] [--threshold 2] [--train-usage]

RUN_DIR is a tokenizer run (``examples/train_tokenizer.py --preset cpu-fmnist-fvq ...``); its exported ``model/``
(for FVQ the folded, plain codebook) is loaded, its encoder kept fixed, and ``reseed_rare_codes``
(``fullvq_hf.training.restarts``) runs on the latents of the whole train split: per round, the codes picked fewer
than ``--threshold`` times in a random ``--window`` of them move onto distinct train latents. Reported before and
after, on the test split: usage, mean squared quantization error, PSNR and SSIM (``evaluate_tokenizer``); with
``--train-usage`` also usage on the train split (slow at 262k codes). The finished model is written to
``RUN_DIR/model-finished`` (atomically) and the figures to ``RUN_DIR/codebook_finish.json``.

Not in any official recipe: it shows how far usage is from where training leaves the codes, and it works the same
on any codebook (compare a plain-VQ run), so a usage figure after it says nothing about FVQ's training.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from codebook_oracle import latents, search_stats  # noqa: E402

from fullvq_hf.data import ImageTransform, load_image_dataset  # noqa: E402
from fullvq_hf.evaluation.tokenizer_eval import evaluate_tokenizer  # noqa: E402
from fullvq_hf.models.loading import load_tokenizer  # noqa: E402
from fullvq_hf.training.loop import atomic_dir, write_json_atomic  # noqa: E402
from fullvq_hf.training.restarts import reseed_rare_codes  # noqa: E402


def measure(model, z_test: torch.Tensor, z_train: torch.Tensor | None, test_set) -> dict:
    codebook = model.quantize.get_codebook().detach().float()
    _, test = search_stats(z_test, codebook)
    out = {"test_usage": test["usage"], "test_used_codes": test["used_codes"], "mse": test["mse"]}
    if z_train is not None:
        out["train_usage"] = search_stats(z_train, codebook)[1]["usage"]
    scores = evaluate_tokenizer(model, test_set, ImageTransform(model.config.sample_size, 1, random_crop=False,
                                                                flip=False), batch_size=500, progress=False)  # fmt: skip
    out.update(psnr=scores["psnr"], ssim=scores["ssim"])
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--window", type=int, default=409_600, help="train latents searched per round (100 steps of 64)")
    p.add_argument("--threshold", type=float, default=2.0, help="codes picked fewer times in a window move")
    p.add_argument("--train-usage", action="store_true", help="also usage on the whole train split (slow at 262k)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    model = load_tokenizer(args.run_dir / "model").eval()
    if model.config.quantizer_type != "vq" or getattr(model.quantize, "code_offset", None) is not None:
        raise SystemExit(f"error: {args.run_dir}/model is not a plain (folded) codebook; export the run first")
    z_train, z_test = latents(model, "train"), latents(model, "test")
    test_set = load_image_dataset("fashion_mnist", "test")
    before = measure(model, z_test, z_train if args.train_usage else None, test_set)
    moved = reseed_rare_codes(model.quantize, z_train, args.rounds, args.window, args.threshold, args.seed)
    after = measure(model, z_test, z_train if args.train_usage else None, test_set)
    with atomic_dir(args.run_dir / "model-finished") as folder:
        model.save_pretrained(folder)
    result = {"run": str(args.run_dir), "codebook_size": model.config.codebook_size, "rounds": args.rounds,
              "window": args.window, "threshold": args.threshold, "seed": args.seed, "moved_per_round": moved,
              "before": before, "after": after, "seconds": round(time.time() - start, 1)}  # fmt: skip
    write_json_atomic(args.run_dir / "codebook_finish.json", result)
    for name, r in (("before", before), ("after", after)):
        train = f", train usage {r['train_usage']:.2%}" if "train_usage" in r else ""
        print(f"{name:<6} test usage {r['test_usage']:.2%}{train}, mse {r['mse']:.5f}, PSNR {r['psnr']:.2f} dB, "
              f"SSIM {r['ssim']:.3f}")  # fmt: skip
    print(f"moved per round {moved}; {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
