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


# --------------------------------------------------------------------------------------------------------------
# datasets-backed image data for the trainers
# --------------------------------------------------------------------------------------------------------------

# Photos that the scikit-image wheel bundles (no download); grey ones are converted to RGB.
BUNDLED_PHOTOS = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "page", "retina", "rocket", "text",
)  # fmt: skip
BUILTIN_DATASETS = ("fashion_mnist", "photos")


def fashion_mnist_dataset(split: str = "train", root: str | os.PathLike | None = None):
    """Fashion-MNIST as a ``datasets.Dataset`` (``image``: uint8 28x28 array, ``label``: ClassLabel), read from
    Debian's ``dataset-fashion-mnist`` files when present, else from the Hub (``zalando-datasets/fashion_mnist``)."""
    import datasets

    try:
        images, labels = load_fashion_mnist(split, root)
    except FileNotFoundError as local_error:
        try:
            return datasets.load_dataset("zalando-datasets/fashion_mnist", split=split)
        except Exception as hub_error:  # offline and no local files
            raise FileNotFoundError(f"{local_error} (The Hub copy failed too: {hub_error})") from hub_error
    features = datasets.Features(
        {"image": datasets.Array2D(shape=(28, 28), dtype="uint8"), "label": datasets.ClassLabel(names=list(FASHION_MNIST_CLASSES))}
    )
    return datasets.Dataset.from_dict({"image": images, "label": labels.astype(np.int64)}, features=features)


def bundled_photos_dataset():
    """The photos bundled with scikit-image as a tiny RGB ``datasets.Dataset`` (``image``: PIL, ``label``: index)."""
    import datasets
    import skimage.data
    from PIL import Image

    images = []
    for name in BUNDLED_PHOTOS:
        array = getattr(skimage.data, name)()
        images.append(Image.fromarray(array).convert("RGB"))
    return datasets.Dataset.from_dict(
        {"image": images, "label": list(range(len(images)))},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )


def load_image_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    streaming: bool = False,
    image_column: str = "image",
):
    """An image dataset by name:

    - ``"fashion_mnist"``: built in (Debian files, else the Hub);
    - ``"photos"``: the photos bundled with scikit-image (every split is the same ~18 photos);
    - ``"imagefolder"`` with ``data_dir``: a local folder of images (class sub-folders become labels);
    - anything else: ``datasets.load_dataset(name, split=split, streaming=streaming)`` (Hub id or local path).

    The result has an ``image_column`` column; a missing folder or an empty dataset is a clear error. A
    ``datasets.Image`` column comes back undecoded (``{"bytes", "path"}`` rows, ``decode=False``): images are
    decoded where they are used (``ImageTransform``), so one unreadable or oversized file is skipped and counted
    instead of failing the row access that would decode it.
    """
    import datasets

    if name == "fashion_mnist":
        ds = fashion_mnist_dataset("train" if split == "train" else "test")
    elif name == "photos":
        ds = bundled_photos_dataset()
    elif name == "imagefolder":
        if data_dir is None or not Path(data_dir).is_dir():
            raise FileNotFoundError(f"imagefolder needs an existing folder of images; got data_dir={data_dir!r}.")
        ds = datasets.load_dataset("imagefolder", data_dir=str(data_dir), split=split, streaming=streaming)
    else:
        if data_dir is not None and not Path(data_dir).exists():
            raise FileNotFoundError(f"data_dir {data_dir!r} does not exist.")
        ds = datasets.load_dataset(name, data_dir=data_dir, split=split, streaming=streaming)
    if not streaming:
        if len(ds) == 0:
            raise ValueError(f"The dataset {name!r} (split {split!r}) is empty.")
        if image_column not in ds.column_names:
            raise ValueError(
                f"The dataset {name!r} has no column {image_column!r} (columns: {ds.column_names}); pass --image-column."
            )
    return undecoded_images(ds, image_column)


def undecoded_images(dataset, image_column: str = "image"):
    """``dataset`` with its ``datasets.Image`` column ``image_column`` cast to ``decode=False`` (other columns and
    datasets without such a column are returned as they are)."""
    import datasets

    features = getattr(dataset, "features", None)
    feature = features.get(image_column) if features else None
    if isinstance(feature, datasets.Image) and feature.decode:
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset


# 16-bit grey PNG / TIFF modes: PIL's convert("L") clips them at 255 (an almost white image); scale instead.
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def open_image(image):
    """A PIL image from whatever a datasets row holds (PIL image, uint8 array / nested list, or an undecoded
    ``{"bytes", "path"}`` dict), with 16-bit grey images scaled to 8 bits (65535 -> 255).

    Raises:
        ValueError: the file is over PIL's size limit (``PIL.Image.MAX_IMAGE_PIXELS``; a decompression bomb);
            PIL's own errors (``OSError`` for unreadable files) pass through. ``TransformedImages`` skips both.
    """
    import io

    from PIL import Image

    try:
        if isinstance(image, (list, np.ndarray)):  # datasets.Array2D rows come back as nested lists
            image = Image.fromarray(np.asarray(image, dtype=np.uint8))
        elif isinstance(image, dict):  # undecoded datasets.Image
            image = Image.open(io.BytesIO(image["bytes"])) if image.get("bytes") else Image.open(image["path"])
    except Image.DecompressionBombError as err:
        raise ValueError(f"Image skipped: {err}") from err
    if image.mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(image, dtype=np.float64)  # 16-bit values, whatever PIL's storage
        image = Image.fromarray(np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8), mode="L")
    return image


def _center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """torchvision ``CenterCrop(size)`` on an (H, W[, C]) array: pad smaller sides with 0 (left/top gets
    ``(size - n) // 2``), then take ``size`` pixels from offset ``int(round((n - size) / 2))``."""
    h, w = arr.shape[:2]
    pad_h, pad_w = max(size - h, 0), max(size - w, 0)
    if pad_h or pad_w:
        pads = [(pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)] + [(0, 0)] * (arr.ndim - 2)
        arr = np.pad(arr, pads)
        h, w = arr.shape[:2]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return arr[top : top + size, left : left + size]


class ImageTransform:
    """PIL image / uint8 array -> float tensor (C, size, size) in [-1, 1]. No torchvision.

    Random square crop covering ``crop_scale`` of the shorter side (0.8-1.0 by default), resize (bicubic), random
    horizontal flip. Images smaller than ``size`` (e.g. 28x28 Fashion-MNIST at size 32) are padded with black
    instead of resized when ``pad_small=True``. All randomness comes from the ``generator`` passed per call, so a
    run that resumes at step N sees exactly the crops it would have seen.

    ``resize=False`` is the papers' evaluation protocol (FVQ's ``crop_image.py``, torchvision's ``CenterCrop``):
    the central ``size x size`` pixels of the image as they are, no resizing; an image smaller than ``size`` on a
    side is padded with black to it (left/top pad ``(size - w) // 2``), and the crop offset is
    ``round((w - size) / 2)`` (Python rounding, as torchvision). Needs ``random_crop=False``.
    """

    def __init__(
        self,
        size: int,
        channels: int = 3,
        random_crop: bool = True,
        crop_scale: tuple[float, float] = (0.8, 1.0),
        flip: bool = True,
        pad_small: bool = True,
        resize: bool = True,
    ):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}.")
        if not resize and random_crop:
            raise ValueError("resize=False (centre crop without resizing, for evaluation) needs random_crop=False.")
        self.size, self.channels, self.resize = size, channels, resize
        self.random_crop, self.crop_scale, self.flip, self.pad_small = random_crop, crop_scale, flip, pad_small

    def __call__(self, image, generator: torch.Generator | None = None) -> torch.Tensor:
        from PIL import Image

        image = open_image(image).convert("L" if self.channels == 1 else "RGB")
        w, h = image.size
        rand = lambda: float(torch.rand((), generator=generator))  # noqa: E731
        if not self.resize:
            arr = _center_crop(np.asarray(image), self.size)
        elif self.pad_small and max(w, h) <= self.size:
            arr = np.asarray(image)
        else:
            side = min(w, h)
            if self.random_crop:
                side = max(1, int(round(side * (self.crop_scale[0] + (self.crop_scale[1] - self.crop_scale[0]) * rand()))))
                left, top = int(rand() * (w - side + 1)), int(rand() * (h - side + 1))
            else:
                left, top = (w - side) // 2, (h - side) // 2
            image = image.crop((left, top, left + side, top + side)).resize((self.size, self.size), Image.BICUBIC)
            arr = np.asarray(image)
        x = torch.from_numpy(np.array(arr, dtype=np.float32, copy=True)).div_(127.5).sub_(1.0)
        x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)
        if self.flip and rand() < 0.5:
            x = x.flip(-1)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            hh, ww = x.shape[-2:]
            top, left = (self.size - hh) // 2, (self.size - ww) // 2
            x = torch.nn.functional.pad(x, (left, self.size - ww - left, top, self.size - hh - top), value=-1.0)
        return x


# --------------------------------------------------------------------------------------------------------------
# deterministic batching: the batch of global step s is a pure function of (seed, s), so a resumed run sees
# exactly the batches (and the random crops) an uninterrupted run would have seen, whatever the process count.
# --------------------------------------------------------------------------------------------------------------


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64-style), stable across processes and Python versions."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (h ^ (h >> 31)) & 0x7FFFFFFFFFFFFFFF


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields, for each global step in ``[start_step, total_steps)``, this process's share of the global batch as
    ``(step, index)`` keys. Examples are visited in a fresh permutation each epoch (``seed`` + epoch)."""

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        num_processes: int = 1,
        process_index: int = 0,
        seed: int = 0,
        start_step: int = 0,
        total_steps: int = 1,
    ):
        if num_examples < 1:
            raise ValueError("The dataset is empty.")
        self.n, self.batch_size, self.world, self.rank = num_examples, batch_size, num_processes, process_index
        self.seed, self.start_step, self.total_steps = seed, start_step, total_steps
        self._perm_epoch, self._perm = -1, None

    def _position(self, pos: int) -> int:
        epoch, offset = divmod(pos, self.n)
        if epoch != self._perm_epoch:
            self._perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(_mix(self.seed, epoch)))
            self._perm_epoch = epoch
        return int(self._perm[offset])

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def __iter__(self):
        global_batch = self.batch_size * self.world
        for step in range(self.start_step, self.total_steps):
            first = step * global_batch + self.rank * self.batch_size
            yield [(step, self._position(first + i)) for i in range(self.batch_size)]


class TransformedImages(torch.utils.data.Dataset):
    """A map-style ``datasets.Dataset`` read by ``(step, index)`` keys: decodes and transforms one example with a
    generator seeded from (seed, step, index). Unreadable images give ``None`` (skipped and counted by
    ``collate_images``), never a crash."""

    def __init__(self, dataset, transform: ImageTransform, image_column: str = "image", label_column: str | None = "label", seed: int = 0):

        dataset = undecoded_images(dataset, image_column)  # decode here, to skip bad files
        self.dataset, self.transform, self.seed = dataset, transform, seed
        self.image_column = image_column
        self.label_column = label_column if label_column in (dataset.column_names or []) else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        step, index = key if isinstance(key, tuple) else (0, key)
        example = self.dataset[int(index)]
        try:
            pixels = self.transform(example[self.image_column], torch.Generator().manual_seed(_mix(self.seed, step, index)))
        except (OSError, ValueError, SyntaxError):  # PIL.UnidentifiedImageError is an OSError
            return None
        label = int(example[self.label_column]) if self.label_column else -1
        return {"pixel_values": pixels, "labels": label}


def collate_images(items: list) -> dict:
    """Stack the readable examples; ``num_skipped`` counts the unreadable ones."""
    good = [it for it in items if it is not None]
    if not good:
        return {"pixel_values": None, "labels": None, "num_skipped": len(items)}
    return {
        "pixel_values": torch.stack([it["pixel_values"] for it in good]),
        "labels": torch.tensor([it["labels"] for it in good]),
        "num_skipped": len(items) - len(good),
    }
