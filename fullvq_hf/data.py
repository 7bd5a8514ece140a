"""Image data without torchvision. For now: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package
(the four gzipped idx files), as pixels in [-1, 1]."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:  # unsigned byte payload
        raise ValueError(f"{path} is not an idx file of unsigned bytes (magic {magic:#x}).")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def find_fashion_mnist(root: str | os.PathLike | None = None) -> Path:
    candidates = [Path(root)] if root else [Path(p) for p in (os.environ.get("FASHION_MNIST_DIR"), *FASHION_MNIST_DIRS) if p]
    for c in candidates:
        if (c / "t10k-images-idx3-ubyte.gz").exists():
            return c
    raise FileNotFoundError(
        f"Fashion-MNIST idx files not found in {[str(c) for c in candidates]}. Install them with "
        "`apt-get install dataset-fashion-mnist` (or `make data`), or point FASHION_MNIST_DIR at a folder holding "
        "{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz."
    )


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of the ``"train"`` (60,000) or ``"test"`` (10,000) split."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    folder = find_fashion_mnist(root)
    prefix = "train" if split == "train" else "t10k"
    return _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz"), _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")


def to_pixels(images: np.ndarray, size: int = 32) -> torch.Tensor:
    """uint8 (N, H, W) grey images -> float (N, 1, size, size) in [-1, 1], zero-padded (background -1) to ``size``."""
    x = torch.as_tensor(np.ascontiguousarray(images)).float().div(127.5).sub(1.0).unsqueeze(1)
    h, w = x.shape[-2:]
    if size < h or size < w:
        raise ValueError(f"size={size} is smaller than the images ({h}x{w}).")
    top, left = (size - h) // 2, (size - w) // 2
    return torch.nn.functional.pad(x, (left, size - w - left, top, size - h - top), value=-1.0)
