"""Pre-tokenize an image dataset for the LlamaGen generator: a tokenizer (any ``FVQModel`` / ``VQGANLCModel``
``from_pretrained`` source) turns every image into its token grid, stored as a ``datasets.Dataset`` with columns

- ``codes``: the H*W token ids in raster order, in the smallest safe integer type (int16 up to 32,768 codes, then
  int32, then int64);
- ``label``: the class (int; 0 for every row when the dataset has no label column);
- ``image_id``: the image's index in the source split, and ``view``: which augmented view of it the row holds.

``save_to_disk(output_dir)`` writes it, with the metadata (grid height/width, codebook size, tokenizer, resolution,
augmentation, classes, source) both in ``Dataset.info.description`` (JSON) and in ``output_dir/fullvq_codes.json``.

Augmentations, as LlamaGen's ``extract_codes_c2i.py``:

- ``none``: one row per image (centre crop of the shorter side, resized to the tokenizer's resolution; images
  smaller than it, e.g. 28x28 Fashion-MNIST at 32, are padded as the tokenizer trainer does);
- ``flip``: two rows per image, the image and its horizontal mirror;
- ``ten-crop``: ten rows per image: the image resized to ``crop_range`` (1.1) x the resolution, then torchvision's
  ``TenCrop`` of the resolution, i.e. the four corner crops and the centre crop, then the mirror images of those five.
  LlamaGen draws one of the views per image each time it reads the image; here every view is a row of its own,
  so an epoch over the rows visits each view once.

Under ``accelerate launch`` each process tokenizes a contiguous shard of the images and writes it to a temporary
Arrow file; the main process concatenates the shards in order, so the result is identical to a one-process run.

    fullvq extract-codes --tokenizer runs/fmnist/model --dataset fashion_mnist --augment flip --output-dir codes/fmnist
    accelerate launch examples/extract_codes.py --tokenizer org/fvq-16k --dataset imagefolder --data-dir imagenet \\
        --augment ten-crop --output-dir codes/imagenet256 --push-to-hub org/imagenet256-fvq-codes
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import ImageTransform, load_image_dataset

CODES_METADATA_FILE = "fullvq_codes.json"
AUGMENTATIONS = {"none": 1, "flip": 2, "ten-crop": 10}  # name -> rows per image

__all__ = [
    "AUGMENTATIONS",
    "CODES_METADATA_FILE",
    "AugmentedViews",
    "codes_dtype",
    "extract_codes",
    "load_codes",
    "main",
]


def codes_dtype(codebook_size: int) -> str:
    """The smallest signed integer type that holds every id in ``[0, codebook_size)``."""
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be positive, got {codebook_size}.")
    for name, high in (("int16", 2**15), ("int32", 2**31)):
        if codebook_size <= high:
            return name
    return "int64"


# ---------------------------------------------------------------------------------------------------- views
class AugmentedViews:
    """One image -> (A, C, size, size) pixels in [-1, 1], A = the augmentation's views (1, 2 or 10)."""

    def __init__(self, size: int, channels: int, augment: str = "none", crop_range: float = 1.1):
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {sorted(AUGMENTATIONS)}, got {augment!r}.")
        if augment == "ten-crop" and crop_range < 1.0:
            raise ValueError(f"crop_range must be >= 1 (the resize before the ten crops), got {crop_range}.")
        self.size, self.augment, self.crop_range = size, augment, crop_range
        self.crop_size = int(size * crop_range) if augment == "ten-crop" else size
        self.base = ImageTransform(self.crop_size, channels, random_crop=False, flip=False)

    def __call__(self, image) -> torch.Tensor:
        x = self.base(image)  # (C, S, S)
        if self.augment == "none":
            return x[None]
        if self.augment == "flip":
            return torch.stack([x, x.flip(-1)])
        s, c = self.crop_size, self.size
        mid = int(round((s - c) / 2.0))
        corners = [(0, 0), (0, s - c), (s - c, 0), (s - c, s - c), (mid, mid)]  # tl, tr, bl, br, centre
        crops = torch.stack([x[:, t : t + c, left : left + c] for t, left in corners])
        return torch.cat([crops, crops.flip(-1)])


def _open_image(image):
    """A PIL image (header only, for its mode) from whatever a datasets row holds; None when unreadable."""
    from PIL import Image

    try:
        if isinstance(image, (list, np.ndarray)):
            return Image.fromarray(np.asarray(image, dtype=np.uint8))
        if isinstance(image, dict):
            return Image.open(io.BytesIO(image["bytes"])) if image.get("bytes") else Image.open(image["path"])
        return image
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # unreadable or over PIL's size limit
        return None


def _native_channels(image) -> int | None:
    """1 for grey images (modes 1, L, LA, I, F; 2-D arrays), 3 for colour, None when unreadable."""
    if isinstance(image, (list, np.ndarray)):
        arr = np.asarray(image)
        return 1 if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 1) else 3
    pil = _open_image(image)
    if pil is None:
        return None
    return 1 if pil.mode in ("1", "L", "LA", "I", "I;16", "F") else 3


def check_channels(
    dataset, image_column: str, in_channels: int, convert_channels: bool, probe: int = 16
) -> None:
    """Refuse a grey dataset for an RGB tokenizer and vice versa (the first ``probe`` readable images all of the
    other kind), unless ``convert_channels``; mixed datasets (ImageNet has a few grey photos) are converted per
    image."""
    found = []
    for i in range(min(probe, len(dataset))):
        channels = _native_channels(dataset[i][image_column])
        if channels is not None:
            found.append(channels)
    if found and all(c != in_channels for c in found) and not convert_channels:
        kind = {1: "grey (1 channel)", 3: "colour (3 channels)"}
        raise ValueError(
            f"The dataset's images are {kind[found[0]]} but the tokenizer expects in_channels={in_channels}: "
            "probably the wrong tokenizer for this data. Pass --convert-channels true to convert the images "
            f"to {in_channels} channel(s) anyway."
        )


class _ViewsDataset(torch.utils.data.Dataset):
    """Rows ``indices`` of a datasets.Dataset -> {"views", "label", "image_id"}; None for an unreadable image."""

    def __init__(self, dataset, indices, views: AugmentedViews, image_column: str, label_column: str | None):
        import datasets

        feature = dataset.features.get(image_column) if dataset.features else None
        if isinstance(feature, datasets.Image) and feature.decode:
            dataset = dataset.cast_column(
                image_column, datasets.Image(decode=False)
            )  # decode here, to skip bad files
        self.dataset, self.indices, self.views = dataset, list(indices), views
        self.image_column, self.label_column = image_column, label_column

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        example = self.dataset[index]
        try:
            views = self.views(example[self.image_column])
        except (OSError, ValueError, SyntaxError):
            return None
        label = int(example[self.label_column]) if self.label_column else 0
        return {"views": views, "label": label, "image_id": index}


def _collate(items: list) -> dict:
    good = [it for it in items if it is not None]
    return {
        "views": torch.stack([it["views"] for it in good]) if good else None,
        "labels": [it["label"] for it in good],
        "image_ids": [it["image_id"] for it in good],
        "num_skipped": len(items) - len(good),
    }


# ---------------------------------------------------------------------------------------------------- extraction
def _process_state():
    """accelerate's process state (rank, world, device), on the CPU when ``accelerate launch`` says so (as
    ``Accelerator`` reads ``ACCELERATE_USE_CPU``; ``PartialState`` alone does not)."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def _features(num_tokens: int, dtype: str):
    import datasets

    return datasets.Features(
        {
            "codes": datasets.Sequence(datasets.Value(dtype), length=num_tokens),
            "label": datasets.Value("int64"),
            "image_id": datasets.Value("int64"),
            "view": datasets.Value("int8"),
        }
    )


def _class_info(dataset, label_column: str | None) -> tuple[int | None, list[str] | None]:
    import datasets

    if label_column is None:
        return 1, None
    feature = dataset.features.get(label_column) if dataset.features else None
    if isinstance(feature, datasets.ClassLabel):
        return feature.num_classes, list(feature.names)
    return None, None  # counted from the labels after extraction


@torch.no_grad()
def extract_codes(
    tokenizer,
    dataset,
    output_dir: str | os.PathLike,
    *,
    augment: str = "none",
    resolution: int | None = None,
    crop_range: float = 1.1,
    batch_size: int = 64,
    max_images: int | None = None,
    image_column: str = "image",
    label_column: str | None = "label",
    convert_channels: bool = False,
    num_workers: int = 0,
    overwrite: bool = False,
    source: dict[str, Any] | None = None,
    progress: bool = True,
):
    """Tokenize ``dataset`` (a map-style ``datasets.Dataset`` with ``image_column``) with ``tokenizer`` and save the
    codes dataset to ``output_dir`` (``save_to_disk`` + ``fullvq_codes.json``). Returns it, loaded from there.

    Runs in every process of an ``accelerate launch`` (each a contiguous shard of the images, merged in order by
    the main process) or in a plain one. ``source`` (e.g. the dataset name, split, tokenizer path) is added to the
    metadata. Unreadable images are skipped and counted (``skipped_images``). A codes dataset already in
    ``output_dir`` is replaced; any other non-empty folder is refused unless ``overwrite``.
    """
    import datasets

    state = _process_state()
    output_dir = Path(output_dir)
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {sorted(AUGMENTATIONS)}, got {augment!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if output_dir.exists() and any(output_dir.iterdir()):
        if not (overwrite or (output_dir / CODES_METADATA_FILE).exists()):
            raise FileExistsError(
                f"{output_dir} exists and is not a codes dataset; choose another --output-dir or pass --overwrite true."
            )
    if image_column not in dataset.column_names:
        raise ValueError(f"The dataset has no column {image_column!r} (columns: {dataset.column_names}).")
    if label_column is not None and label_column not in dataset.column_names:
        warnings.warn(
            f"The dataset has no label column {label_column!r} (columns: {dataset.column_names}); every row gets "
            "label 0 (one class).",
            stacklevel=2,
        )
        label_column = None
    config = tokenizer.config
    in_channels = int(config.in_channels)
    resolution = int(resolution or config.sample_size)
    if resolution % tokenizer.downsample_factor:
        raise ValueError(
            f"resolution={resolution} is not a multiple of the tokenizer's downsampling factor "
            f"{tokenizer.downsample_factor}."
        )
    check_channels(dataset, image_column, in_channels, convert_channels)
    codebook_size = int(tokenizer.codebook_size)
    dtype = codes_dtype(codebook_size)
    grid = (resolution // tokenizer.downsample_factor,) * 2
    views = AugmentedViews(resolution, in_channels, augment, crop_range)
    num_views = AUGMENTATIONS[augment]

    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    rank, world = state.process_index, state.num_processes
    shard = range(rank * n // world, (rank + 1) * n // world)
    work = output_dir.parent / f".{output_dir.name}.tmp-shards"
    if state.is_main_process:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    state.wait_for_everyone()

    device = state.device
    tokenizer = tokenizer.to(device).eval()
    loader = torch.utils.data.DataLoader(
        _ViewsDataset(dataset, shard, views, image_column, label_column),
        batch_size=batch_size,
        collate_fn=_collate,
        num_workers=num_workers,
    )
    from datasets.arrow_writer import ArrowWriter

    features = _features(grid[0] * grid[1], dtype)
    skipped, rows, max_label = 0, 0, -1
    np_dtype = np.dtype(dtype)
    bar = tqdm(
        total=len(shard),
        desc="extract codes",
        unit="img",
        disable=not progress or not state.is_local_main_process,
    )
    with ArrowWriter(features=features, path=str(work / f"shard-{rank:05d}.arrow")) as writer:
        for batch in loader:
            skipped += batch["num_skipped"]
            bar.update(len(batch["labels"]) + batch["num_skipped"])
            if batch["views"] is None:
                continue
            x = batch["views"].to(device)  # (B, A, C, H, W)
            ids = tokenizer.tokenize(x.flatten(0, 1))  # (B*A, h, w); raises a ValueError on bad pixels
            if tuple(ids.shape[-2:]) != grid:
                raise RuntimeError(f"The tokenizer gave a {tuple(ids.shape[-2:])} grid, expected {grid}.")
            codes = ids.flatten(1).cpu().numpy().astype(np_dtype)
            b = x.shape[0]
            labels = np.repeat(np.asarray(batch["labels"], dtype=np.int64), num_views)
            writer.write_batch(
                {
                    "codes": list(codes),
                    "label": labels.tolist(),
                    "image_id": np.repeat(np.asarray(batch["image_ids"], dtype=np.int64), num_views).tolist(),
                    "view": np.tile(np.arange(num_views, dtype=np.int8), b).tolist(),
                }
            )
            rows += codes.shape[0]
            max_label = max(max_label, int(labels.max()))
        writer.finalize()
    bar.close()
    (work / f"shard-{rank:05d}.json").write_text(
        json.dumps({"rows": rows, "skipped": skipped, "max_label": max_label})
    )
    state.wait_for_everyone()
    stats = [json.loads((work / f"shard-{r:05d}.json").read_text()) for r in range(world)]
    if sum(s["rows"] for s in stats) == 0:  # every process sees it, so none waits for the others below
        raise ValueError("No image could be read and tokenized: the codes dataset would be empty.")

    if state.is_main_process:
        parts = [datasets.Dataset.from_file(str(work / f"shard-{r:05d}.arrow")) for r in range(world)]
        codes_ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        num_classes, class_names = _class_info(dataset, label_column)
        if num_classes is None:
            num_classes = max(s["max_label"] for s in stats) + 1
        skipped_total = sum(s["skipped"] for s in stats)
        metadata = {
            "format": "fullvq-codes",
            "version": 1,
            "grid_height": grid[0],
            "grid_width": grid[1],
            "num_tokens": grid[0] * grid[1],
            "codebook_size": codebook_size,
            "dtype": dtype,
            "tokenizer_class": type(tokenizer).__name__,
            "resolution": resolution,
            "in_channels": in_channels,
            "augment": augment,
            "views_per_image": num_views,
            "crop_range": crop_range if augment == "ten-crop" else None,
            "num_images": n - skipped_total,
            "num_rows": len(codes_ds),
            "skipped_images": skipped_total,
            "num_classes": num_classes,
            "class_names": class_names,
            "label_column": label_column,
            "image_column": image_column,
            "num_processes": world,
            "tokenizer": str(config._name_or_path) if getattr(config, "_name_or_path", None) else None,
            **(source or {}),
        }
        codes_ds.info.description = json.dumps(metadata)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        codes_ds.save_to_disk(str(output_dir))
        (output_dir / CODES_METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        del parts, codes_ds
    state.wait_for_everyone()  # every process has read the shard statistics: the shards can go
    if state.is_main_process:
        shutil.rmtree(work, ignore_errors=True)
    return datasets.load_from_disk(str(output_dir))


def load_codes(source: str | os.PathLike, split: str = "train"):
    """A codes dataset and its metadata: a ``save_to_disk`` folder, or a Hub dataset id (``push_to_hub``).

    The metadata comes from ``fullvq_codes.json`` (next to the data, or in the Hub repo), else from the dataset's
    ``info.description``; it is ``{}`` for a dataset made elsewhere (then ``codes`` and ``label`` columns suffice).
    """
    import datasets

    path = Path(source)
    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"{path} holds the splits {list(ds)}, not {split!r}.")
            ds = ds[split]
        meta_file = path / CODES_METADATA_FILE
        metadata = json.loads(meta_file.read_text()) if meta_file.exists() else None
    elif path.exists() or str(source).startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"The codes dataset {source} is not a folder written by extract-codes (save_to_disk)."
        )
    else:
        try:
            ds = datasets.load_dataset(str(source), split=split)
        except Exception as e:
            raise FileNotFoundError(
                f"The codes dataset {source!r} is neither a local folder (save_to_disk of extract-codes) nor a "
                f"loadable Hub dataset: {type(e).__name__}: {e}"
            ) from e
        metadata = None
        try:
            from huggingface_hub import hf_hub_download

            metadata = json.loads(
                Path(hf_hub_download(str(source), CODES_METADATA_FILE, repo_type="dataset")).read_text()
            )
        except Exception:  # no metadata file in the repo (or offline): fall back to the description
            pass
    if metadata is None:
        try:
            metadata = json.loads(ds.info.description or "{}")
        except (TypeError, ValueError):
            metadata = {}
    for column in ("codes", "label"):
        if column not in ds.column_names:
            raise ValueError(
                f"The codes dataset {source} has no {column!r} column (columns: {ds.column_names})."
            )
    return ds, metadata


# ---------------------------------------------------------------------------------------------------- command line
def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from transformers.hf_argparser import string_to_bool  # the trainers' flags parse booleans the same way

    p = argparse.ArgumentParser(
        prog=prog, description="Tokenize an image dataset into a codes dataset for LlamaGen."
    )
    p.add_argument("--tokenizer", required=True, help="from_pretrained source of an FVQModel / VQGANLCModel")
    p.add_argument("--tokenizer-type", default="auto", choices=["auto", "fvq", "vqgan-lc"])
    p.add_argument(
        "--dataset", default="fashion_mnist", help="fashion_mnist | photos | imagefolder | a datasets name"
    )
    p.add_argument("--data-dir")
    p.add_argument("--split", default="train")
    p.add_argument("--image-column", default="image")
    p.add_argument("--label-column", default="label", help="'none': no labels (every row gets class 0)")
    p.add_argument("--resolution", type=int, help="default: the tokenizer's sample_size")
    p.add_argument("--augment", default="none", choices=sorted(AUGMENTATIONS))
    p.add_argument(
        "--crop-range", type=float, default=1.1, help="ten-crop: resize to this x the resolution first"
    )
    p.add_argument(
        "--batch-size", type=int, default=64, help="images per batch (each gives 1, 2 or 10 views)"
    )
    p.add_argument("--max-images", type=int)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument(
        "--convert-channels", type=string_to_bool, default=False, help="allow grey data for RGB tokenizer"
    )
    p.add_argument("--overwrite", type=string_to_bool, default=False)
    p.add_argument("--output-dir", required=True)
    p.add_argument(
        "--push-to-hub", metavar="REPO_ID", help="also push the dataset (and fullvq_codes.json) here"
    )
    p.add_argument("--private", type=string_to_bool, default=None)
    return p


def push_codes_to_hub(output_dir: str | os.PathLike, repo_id: str, private: bool | None = None) -> None:
    """Push a saved codes dataset and its ``fullvq_codes.json`` to a Hub dataset repo."""
    import datasets
    from huggingface_hub import HfApi

    ds = datasets.load_from_disk(str(output_dir))
    ds.push_to_hub(repo_id, private=private)
    HfApi().upload_file(
        path_or_fileobj=str(Path(output_dir) / CODES_METADATA_FILE),
        path_in_repo=CODES_METADATA_FILE,
        repo_id=repo_id,
        repo_type="dataset",
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """Command line: extract codes, print and return the metadata."""
    from ..models.loading import load_tokenizer

    args = build_parser(prog).parse_args(argv)
    label_column = None if args.label_column.lower() in ("none", "") else args.label_column
    tokenizer_source = args.tokenizer
    if Path(tokenizer_source).exists():
        tokenizer_source = str(Path(tokenizer_source).resolve())
    start = time.time()
    tokenizer = load_tokenizer(tokenizer_source)  # the class comes from config.json
    dataset = load_image_dataset(args.dataset, args.split, args.data_dir, False, args.image_column)
    source = {
        "tokenizer": tokenizer_source,
        "dataset": args.dataset,
        "split": args.split,
        "data_dir": args.data_dir,
    }
    ds = extract_codes(
        tokenizer,
        dataset,
        args.output_dir,
        augment=args.augment,
        resolution=args.resolution,
        crop_range=args.crop_range,
        batch_size=args.batch_size,
        max_images=args.max_images,
        image_column=args.image_column,
        label_column=label_column,
        convert_channels=args.convert_channels,
        num_workers=args.num_workers,
        overwrite=args.overwrite,
        source=source,
    )
    metadata = json.loads((Path(args.output_dir) / CODES_METADATA_FILE).read_text())
    state = _process_state()
    if state.is_main_process:
        print(
            f"{len(ds)} rows of {metadata['num_tokens']} codes in {time.time() - start:.1f} s -> {args.output_dir}"
        )
        print(json.dumps(metadata, indent=2))
        if args.push_to_hub:
            push_codes_to_hub(args.output_dir, args.push_to_hub, args.private)
            print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    state.wait_for_everyone()
    return metadata


if __name__ == "__main__":
    main()
