"""Score a class-conditional generator (a ``LlamaGenPipeline``) on Fashion-MNIST with the shipped classifier.

Two numbers, both in the offline classifier's terms (no Inception download):
    accuracy          fraction of generated images the classifier assigns to the class they were generated for
                      (the classifier scores 90.97% on real test images);
    frechet_distance  Frechet distance between the classifier's 128-d features of the generated images and of real
                      test images (FID-style, with this small network instead of Inception-v3).
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from ..metrics import FrechetDistance
from .extractors import load_feature_extractor
from .fmnist_classifier import load_classifier


@torch.no_grad()
def generate_per_class(
    pipe,
    num_classes: int,
    per_class: int,
    batch_size: int = 250,
    seed: int = 0,
    progress: bool = True,
    **sample_kw,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` images of each class: (num_classes * per_class, C, H, W) in [-1, 1], and their labels."""
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    generator = torch.Generator(device=pipe.device).manual_seed(seed)
    pipe.set_progress_bar_config(disable=True)
    images = []
    for start in tqdm(range(0, len(labels), batch_size), desc="generating", disable=not progress):
        batch = labels[start : start + batch_size]
        out = pipe(batch, generator=generator, output_type="pt", **sample_kw).images  # (b, C, H, W) in [0, 1]
        images.append(out.cpu() * 2 - 1)
    return torch.cat(images), labels


def real_statistics(real_images: torch.Tensor, batch_size: int = 1000) -> FrechetDistance:
    """A ``FrechetDistance`` in the shipped classifier's feature space holding ``real_images``' statistics."""
    fd = FrechetDistance(load_feature_extractor("fashion-mnist-classifier"))
    for i in range(0, len(real_images), batch_size):
        fd.update(real=real_images[i : i + batch_size])
    return fd


@torch.no_grad()
def evaluate_generator(
    pipe,
    real: torch.Tensor | FrechetDistance,
    per_class: int = 100,
    batch_size: int = 250,
    seed: int = 0,
    progress: bool = True,
    **sample_kw,
) -> dict:
    """Accuracy and Frechet distance of ``per_class`` generated images per class against ``real``: images
    ((N, 1, 32, 32) in [-1, 1], e.g. the test split), or a ``FrechetDistance`` that already holds their statistics
    (its generated side is reset here, so one instance can score several image sets without re-reading the real
    ones). ``sample_kw`` go to the pipeline (guidance_scale, top_k, ...).
    """
    num_classes = pipe.transformer.config.num_classes
    t0 = time.time()
    images, labels = generate_per_class(pipe, num_classes, per_class, batch_size, seed, progress, **sample_kw)
    seconds = time.time() - t0
    classifier = load_classifier()
    predictions = torch.cat(
        [classifier(images[i : i + 1000]).argmax(-1) for i in range(0, len(images), 1000)]
    )
    correct = (predictions == labels).float()
    fd = real if isinstance(real, FrechetDistance) else real_statistics(real)
    fd.reset(real=False)
    for i in range(0, len(images), 1000):
        fd.update(fake=images[i : i + 1000])
    return {
        "num_images": len(images),
        "accuracy": correct.mean().item(),
        "per_class_accuracy": correct.view(num_classes, per_class).mean(1).tolist(),
        "frechet_distance": fd.compute(),
        "generation_seconds": round(seconds, 1),
        "images_per_second": round(len(images) / seconds, 1),
        "sampling": {k: v for k, v in sample_kw.items()},
    }
