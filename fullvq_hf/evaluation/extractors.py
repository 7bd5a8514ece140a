"""Named feature extractors for the Frechet distance (``fullvq_hf.metrics.FrechetDistance`` takes the module).

Built in: ``"fashion-mnist-classifier"``, the classifier shipped with the package (``fmnist_classifier``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

FASHION_MNIST_EXTRACTOR = "fashion-mnist-classifier"


class _FeaturesOf(nn.Module):
    """Wraps a model that has ``features(x)`` (like the Fashion-MNIST classifier) as a plain extractor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.feature_dim = getattr(model, "feature_dim", None)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(images)


def load_feature_extractor(name_or_path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    """A built-in feature extractor, in eval mode, mapping images in [-1, 1] (B, C, H, W) to (B, F) features.

    ``"fashion-mnist-classifier"`` gives the classifier shipped with the package (grey 32x32 images -> 128-d
    penultimate features); a path to a ``.safetensors`` file (with its ``.json`` config beside it) or folder
    saved by ``fullvq_hf.evaluation.save_classifier`` gives that classifier. Nothing is ever downloaded: any other
    network (Inception-v3 for FID, VGG, CLIP, ...) is not built in, raises a ``ValueError``, and has to be built by
    you from a local weights file and passed to ``FrechetDistance`` as a module.
    """
    from .fmnist_classifier import load_classifier

    name = os.fspath(name_or_path)
    if name == FASHION_MNIST_EXTRACTOR:
        return _FeaturesOf(load_classifier(device=device)).eval()
    path = Path(name)
    if path.suffix == ".safetensors" or path.is_dir():
        if not path.exists():
            raise ValueError(
                f"No feature-extractor weights at {name!r}: the file does not exist (nothing is downloaded)."
            )
        try:
            return _FeaturesOf(load_classifier(path, device=device)).eval()
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(
                f"{e} Only this package's Fashion-MNIST classifier loads from a path here; for another network, "
                "build the nn.Module yourself, load its local weights, and pass the module to FrechetDistance."
            ) from e
    raise ValueError(
        f"Unknown feature extractor {name!r}, and nothing is downloaded. Built in: {FASHION_MNIST_EXTRACTOR!r} (or a "
        "local .safetensors path of it, with its .json config beside it). Inception-v3 (FID), VGG or other weights "
        "must be given as a local file: for FID, FrechetDistance(FIDInceptionV3.from_pretrained("
        "'pt_inception-2015-12-05-6726825d.pth')) from fullvq_hf.evaluation.inception (or `fullvq eval "
        "--inception-weights FILE`); for another network, load its state dict into your own nn.Module that maps "
        "images in [-1, 1] (B, C, H, W) to features (B, F), and pass that module to FrechetDistance(extractor)."
    )
