"""Data preparation, above ``models``: image datasets and transforms (``images``), and the VQGAN-LC feature
codebook builder (``lc_codebook``: encoder features + k-means). Token datasets for the generator are extracted by
``fullvq_hf.training.codes``.

The names of ``images`` are re-exported here (``from fullvq_hf.data import ImageTransform``); ``lc_codebook``
(which needs transformers) is imported only when asked for: ``from fullvq_hf.data.lc_codebook import kmeans``.
"""

from .images import (
    BUILTIN_DATASETS,
    BUNDLED_PHOTOS,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIRS,
    ImageTransform,
    StepBatchSampler,
    TransformedImages,
    bundled_photos_dataset,
    collate_images,
    fashion_mnist_dataset,
    find_fashion_mnist,
    load_fashion_mnist,
    load_image_dataset,
    open_image,
    to_pixels,
    undecoded_images,
)

__all__ = [
    "BUILTIN_DATASETS",
    "BUNDLED_PHOTOS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIRS",
    "ImageTransform",
    "StepBatchSampler",
    "TransformedImages",
    "bundled_photos_dataset",
    "collate_images",
    "fashion_mnist_dataset",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "load_image_dataset",
    "open_image",
    "to_pixels",
    "undecoded_images",
]
