"""Build the frozen feature codebook of VQGAN-LC from a pretrained vision encoder.

VQGAN-LC (Zhu et al., 2024) never trains its codebook: it is a fixed set of image features, mapped to the latent
space by one trained linear projector (see ``VQGANLCModel``). The paper builds it once, like this:

1. run CLIP ViT-L/14 (224 px, a 16 x 16 patch grid) over every training image and keep the final-layer patch
   tokens after the post-layernorm and the 768-d visual projection (``extract_features``);
2. average-pool the 16 x 16 grid to 4 x 4, i.e. 16 feature vectors per image;
3. run k-means per class with k = 100 (``kmeans``): 1000 ImageNet classes x 100 = 100,000 centres;
4. save the (100000, 768) float tensor (``save_codebook``), later installed with ``VQGANLCModel.load_codebook``.

``build_codebook`` does steps 1-3 in one call. The paper notes that any vision backbone works nearly as well, so
``load_vision_encoder`` accepts any transformers vision model (ViT, DINOv2, SigLIP, ConvNeXt, ...), local or Hub.

Memory: ``extract_features`` keeps N * pool_size**2 * F float32 values on the CPU (ImageNet-1k with CLIP ViT-L/14:
1.28M x 16 x 768 x 4 B ~ 63 GB). For data that large, build per-class codebooks in pieces with
``extract_features`` + ``kmeans`` on one class at a time and ``torch.cat`` them in sorted label order, which is
exactly what the per-class mode of ``build_codebook`` computes.

Example::

    from fullvq_hf.data.lc_codebook import build_codebook, save_codebook

    codebook = build_codebook(dataset, labels="label", codes_per_class=100)  # (num_classes * 100, 768)
    save_codebook(codebook, "lc_codebook.safetensors", encoder_name="openai/clip-vit-large-patch14")
    model.load_codebook("lc_codebook.safetensors")
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..models.modeling_vqgan_lc import CODEBOOK_FILENAME, CODEBOOK_KEY, load_codebook_file, save_codebook
from ..models.quantizers import DEFAULT_MAX_SEARCH_ELEMENTS, nearest_codes

__all__ = [
    "CODEBOOK_FILENAME",
    "CODEBOOK_KEY",
    "DEFAULT_ENCODER",
    "build_codebook",
    "extract_features",
    "kmeans",
    "load_codebook_file",
    "load_vision_encoder",
    "save_codebook",
]

DEFAULT_ENCODER = "openai/clip-vit-large-patch14"
# k-means++ makes k sequential passes over the data; above this many centres "auto" uses random sampling.
KMEANS_PLUS_PLUS_MAX_K = 4096


# ---------------------------------------------------------------------------------------------------- helpers
def _default_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(
            f"dtype={dtype!r} is not a floating-point torch dtype; use e.g. torch.float32, torch.float16 or 'bfloat16'."
        )
    return resolved


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report while loading only the vision half of a full CLIP checkpoint (its
    text-tower weights are expected to be unused)."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def _model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters(), None)
    if param is None:
        return torch.device("cpu"), torch.float32
    return param.device, param.dtype


# ---------------------------------------------------------------------------------------------------- encoder
def load_vision_encoder(
    name_or_path: str | os.PathLike = DEFAULT_ENCODER,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
) -> tuple[torch.nn.Module, Any]:
    """Load a pretrained vision encoder and its image processor with transformers, in eval mode.

    Args:
        name_or_path: A Hub id (e.g. ``"openai/clip-vit-large-patch14"``, the VQGAN-LC default, or
            ``"facebook/dinov2-base"``) or a local directory written by ``save_pretrained`` that also holds the
            image processor (``preprocessor_config.json``).
        device: Where to put the model; defaults to CUDA when available, else CPU.
        dtype: Model dtype (``torch.float16``, ``"bfloat16"``, ...); defaults to the checkpoint's loading default.

    Returns:
        ``(model, image_processor)``. For CLIP checkpoints (``CLIPConfig`` or ``CLIPVisionConfig``) the model is a
        ``CLIPVisionModelWithProjection`` so that ``extract_features`` can send every patch token through
        ``vision_model.post_layernorm`` and ``visual_projection`` (features of size ``projection_dim``); any
        other backbone is loaded with ``AutoModel`` and its ``last_hidden_state`` patch tokens are used
        (features of size ``hidden_size``).
    """
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        CLIPConfig,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    name = os.fspath(name_or_path)
    torch_dtype = _as_dtype(dtype)
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"Could not load a model config from {name!r}: {err}\nPass a local directory written by "
            "model.save_pretrained(...) (it must contain config.json) or a Hub id such as "
            f"{DEFAULT_ENCODER!r} (downloading needs network access)."
        ) from err

    if isinstance(config, CLIPConfig):
        # Only the vision tower; the projection width lives on the top-level config.
        vision_config = config.vision_config
        vision_config.projection_dim = config.projection_dim
        with _quiet_transformers():
            model = CLIPVisionModelWithProjection.from_pretrained(name, config=vision_config)
    elif isinstance(config, CLIPVisionConfig):
        model = CLIPVisionModelWithProjection.from_pretrained(name, config=config)
    else:
        try:
            model = AutoModel.from_pretrained(name)
        except ValueError as err:
            raise ValueError(
                f"transformers' AutoModel cannot load {name!r} (config class {type(config).__name__}): {err}\n"
                "Use a vision backbone checkpoint (CLIP, ViT, DINOv2, SigLIP, ConvNeXt, ...)."
            ) from err

    try:
        image_processor = AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"No image processor could be loaded from {name!r} ({type(err).__name__}: {err}). Save the one the "
            "encoder was trained with next to the weights, e.g. CLIPImageProcessor(...).save_pretrained(path) "
            "(writes preprocessor_config.json), or load the model yourself and pass image_processor= to "
            "extract_features / build_codebook."
        ) from err

    model = model.to(device=_default_device(device), dtype=torch_dtype).eval()
    model.requires_grad_(False)
    return model, image_processor


def _clip_parts(encoder: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module | None] | None:
    """``(vision tower, post_layernorm, visual_projection or None)`` for CLIP models, else None."""
    from transformers import CLIPConfig, CLIPVisionConfig

    if not isinstance(getattr(encoder, "config", None), (CLIPConfig, CLIPVisionConfig)):
        return None
    vision = getattr(encoder, "vision_model", encoder)
    post_layernorm = getattr(vision, "post_layernorm", None)
    if post_layernorm is None:  # CLIPVisionModel of older transformers: .vision_model.post_layernorm
        vision = getattr(vision, "vision_model", vision)
        post_layernorm = getattr(vision, "post_layernorm", None)
    if post_layernorm is None:
        return None
    return vision, post_layernorm, getattr(encoder, "visual_projection", None)


def _patch_grid(seq_len: int, height: int, width: int, config: Any) -> tuple[int, int, int]:
    """``(grid_h, grid_w, prefix)`` of a token sequence: patch tokens form a grid, the ``prefix`` tokens before
    them (CLS, registers, distillation) are dropped. Uses the config's ``patch_size`` and the actual pixel size
    (more reliable than ``config.image_size``, which e.g. DINOv2 sets to 518 while its processor crops to 224);
    without a usable patch size the grid is the largest square that fits."""
    patch = getattr(config, "patch_size", None)
    if patch is not None:
        ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)[:2]
        gh, gw = height // ph, width // pw
        if 0 < gh * gw <= seq_len:
            return gh, gw, seq_len - gh * gw
    image_size = getattr(config, "image_size", None)
    if patch is not None and isinstance(image_size, int) and isinstance(patch, int):
        g = image_size // patch
        if 0 < g * g <= seq_len:
            return g, g, seq_len - g * g
    g = math.isqrt(seq_len)
    return g, g, seq_len - g * g


@torch.no_grad()
def _feature_maps(encoder: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Pixels (B, 3, H, W) -> patch feature maps (B, F, g_h, g_w)."""
    height, width = pixel_values.shape[-2:]
    clip = _clip_parts(encoder)
    if clip is not None:
        vision, post_layernorm, projection = clip
        hidden = vision(pixel_values=pixel_values).last_hidden_state  # (B, prefix + g*g, hidden)
        gh, gw, prefix = _patch_grid(hidden.shape[1], height, width, encoder.config)
        tokens = post_layernorm(hidden[:, prefix:])
        if projection is not None:
            tokens = projection(tokens)  # (B, g*g, projection_dim)
    else:
        # Multimodal models (e.g. SiglipModel) expose their image tower as .vision_model.
        tower = encoder.vision_model if hasattr(encoder, "vision_model") else encoder
        out = tower(pixel_values=pixel_values)
        hidden = getattr(out, "last_hidden_state", None)
        if hidden is None:
            raise ValueError(
                f"{type(encoder).__name__} returns no last_hidden_state; use a backbone model (AutoModel), "
                "not a task head (e.g. ViTModel rather than ViTForImageClassification)."
            )
        if hidden.ndim == 4:  # convolutional backbones: already a (B, C, h, w) map
            return hidden
        if hidden.ndim != 3:
            raise ValueError(f"Expected last_hidden_state (B, tokens, F) or (B, F, h, w), got {tuple(hidden.shape)}.")
        config = getattr(tower, "config", encoder.config)
        gh, gw, prefix = _patch_grid(hidden.shape[1], height, width, config)
        tokens = hidden[:, prefix:]
    b, _, feat = tokens.shape
    return tokens.transpose(1, 2).reshape(b, feat, gh, gw)


def _resolve_encoder(
    encoder: str | os.PathLike | torch.nn.Module | tuple,
    image_processor: Any,
    device: str | torch.device | None,
) -> tuple[torch.nn.Module, Any]:
    if isinstance(encoder, (str, os.PathLike)):
        model, processor = load_vision_encoder(encoder, device=device)
        return model, image_processor if image_processor is not None else processor
    if isinstance(encoder, tuple):
        if len(encoder) != 2:
            raise ValueError("encoder given as a tuple must be (model, image_processor), as load_vision_encoder returns.")
        model, processor = encoder
        return model, image_processor if image_processor is not None else processor
    if not isinstance(encoder, torch.nn.Module):
        raise ValueError(
            f"encoder must be a Hub id / local path, a torch model or a (model, image_processor) tuple; "
            f"got {type(encoder).__name__}."
        )
    if device is not None:
        encoder = encoder.to(device)
    return encoder, image_processor


def _iter_images(images: Any) -> Iterator[Any]:
    """Yields the images of a list / iterable of images or of a ``datasets`` dataset with an "image" column."""
    columns = getattr(images, "column_names", None)
    if isinstance(columns, list) and "image" not in columns:
        raise ValueError(
            f"The dataset has no 'image' column (columns: {columns}); rename yours with "
            "dataset.rename_column(name, 'image')."
        )
    if isinstance(columns, list) and hasattr(images, "select_columns"):
        images = images.select_columns(["image"])  # do not decode other columns
    for item in images:
        if isinstance(item, Mapping):
            if "image" not in item:
                raise ValueError(f"Dataset rows must have an 'image' field; got keys {sorted(item)}.")
            item = item["image"]
        yield item


def _prepare(image: Any) -> Any:
    """PIL images become RGB (grayscale / CMYK / RGBA photos are common in ImageNet); arrays pass through."""
    if hasattr(image, "convert") and hasattr(image, "mode"):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, (np.ndarray, torch.Tensor)):
        return image
    raise ValueError(
        f"Expected PIL images (or numpy arrays / tensors the image processor accepts), got {type(image).__name__}."
    )


def extract_features(
    images: Iterable[Any] | torch.Tensor,
    encoder: str | os.PathLike | torch.nn.Module | tuple = DEFAULT_ENCODER,
    image_processor: Any = None,
    pool_size: int = 4,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Pooled patch features of every image, the raw material of the VQGAN-LC codebook.

    Per batch: image processor -> encoder -> final-layer patch tokens (the CLS / register prefix dropped) ->
    for CLIP, ``post_layernorm`` + ``visual_projection`` on every patch token -> feature map (B, F, g, g) ->
    ``adaptive_avg_pool2d`` to (B, F, pool_size, pool_size) -> rows (B * pool_size**2, F).

    Args:
        images: An iterable of PIL images (numpy arrays also work), a ``datasets`` dataset with an ``"image"``
            column, or an already preprocessed float tensor of pixels (N, 3, H, W) (then no image processor is
            used).
        encoder: A model from ``load_vision_encoder``, a ``(model, image_processor)`` tuple, or a Hub id / local
            path to load with it.
        image_processor: Overrides the one that comes with ``encoder``; required for a bare model.
        pool_size: Side of the pooled grid: pool_size**2 vectors per image (4 in VQGAN-LC).
        batch_size: Images per forward pass.
        device: Device to run the encoder on; defaults to where the model already is.
        progress: Show a tqdm progress bar.

    Returns:
        float32 CPU tensor (N * pool_size**2, F): image-major, then the pooled grid in row-major order, so rows
        ``i * pool_size**2 : (i + 1) * pool_size**2`` belong to image ``i``. ``F`` is ``projection_dim`` for CLIP
        (768 for ViT-L/14), else the backbone's hidden size.
    """
    if not isinstance(pool_size, int) or pool_size < 1:
        raise ValueError(f"pool_size must be a positive integer (4 in VQGAN-LC), got {pool_size!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    model, processor = _resolve_encoder(encoder, image_processor, device)
    model.eval()
    model_device, model_dtype = _model_device_dtype(model)

    pixel_tensor = isinstance(images, torch.Tensor)
    if pixel_tensor:
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(
                f"A tensor of images must be preprocessed float pixels (N, 3, H, W); got {tuple(images.shape)} "
                f"{images.dtype}. Pass PIL images with an image processor instead."
            )
        batches: Iterable[Any] = images.split(batch_size)
        total = images.shape[0]
    else:
        if processor is None:
            raise ValueError(
                "No image processor: pass image_processor= (e.g. AutoImageProcessor.from_pretrained(name)) or load "
                "the encoder with load_vision_encoder(name), which returns (model, image_processor)."
            )
        batches = _batched(_iter_images(images), batch_size)
        total = len(images) if hasattr(images, "__len__") else None

    chunks: list[torch.Tensor] = []
    with torch.no_grad(), tqdm(total=total, disable=not progress, desc="Extracting features", unit="img") as bar:
        for batch in batches:
            if pixel_tensor:
                pixels = batch
            else:
                pixels = processor(images=[_prepare(im) for im in batch], return_tensors="pt")["pixel_values"]
            pixels = pixels.to(device=model_device, dtype=model_dtype)
            fmap = _feature_maps(model, pixels)  # (B, F, gh, gw)
            if pool_size > min(fmap.shape[-2:]):
                raise ValueError(
                    f"pool_size={pool_size} is larger than the encoder's {fmap.shape[-2]}x{fmap.shape[-1]} patch grid; "
                    "use a smaller pool_size or larger input images."
                )
            pooled = F.adaptive_avg_pool2d(fmap.float(), pool_size)  # (B, F, p, p)
            chunks.append(pooled.flatten(2).transpose(1, 2).reshape(-1, pooled.shape[1]).cpu())
            bar.update(pixels.shape[0])
    if not chunks:
        raise ValueError("No images were given: `images` is empty.")
    return torch.cat(chunks)


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------------- k-means
def _sq_dist_to(x: torch.Tensor, x_sq: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Squared distances (N,) of the rows of ``x`` to one centre (F,), without an (N, F) temporary."""
    return (x_sq - 2 * (x @ centre) + centre.dot(centre)).clamp_min_(0)


def _kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    x_sq = x.pow(2).sum(1)
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [first]
    min_d2 = _sq_dist_to(x, x_sq, x[first])
    for _ in range(1, k):
        cumulative = min_d2.double().cumsum(0)
        total = float(cumulative[-1])
        if total > 0:
            u = float(torch.rand((), generator=generator, dtype=torch.float64)) * total
            idx = int(torch.searchsorted(cumulative, torch.tensor([u], dtype=torch.float64, device=x.device), right=True))
            idx = min(idx, n - 1)
        else:  # every point already coincides with a centre: any point will do
            idx = int(torch.randint(n, (1,), generator=generator))
        chosen.append(idx)
        torch.minimum(min_d2, _sq_dist_to(x, x_sq, x[idx]), out=min_d2)
    return x[torch.tensor(chosen, device=x.device)].clone()


@torch.no_grad()
def kmeans(
    x: torch.Tensor,
    k: int,
    num_iters: int = 20,
    seed: int = 0,
    max_search_elements: int = DEFAULT_MAX_SEARCH_ELEMENTS,
    progress: bool = False,
    init: str = "auto",
) -> torch.Tensor:
    """Lloyd's k-means in torch, on whatever device ``x`` is on.

    Assignment uses the chunked exact search ``nearest_codes`` (never a full N x k distance matrix: at most
    ``max_search_elements`` float32 distances at a time), the update ``index_add_`` / ``bincount``. A cluster that
    ends up empty is re-seeded with the point currently farthest from its own centre. Stops early once the
    assignment no longer changes.

    Args:
        x: Features (N, F), any float dtype (computed in float32).
        k: Number of centres, ``1 <= k <= N``.
        num_iters: Maximum number of Lloyd iterations.
        seed: Seed of the ``torch.Generator`` used for the initialisation (same seed, same result).
        max_search_elements: Largest block of the distance matrix held at once.
        progress: Show a tqdm bar over the iterations.
        init: ``"k-means++"`` (D^2 sampling; k sequential passes over x), ``"random"`` (k distinct random points)
            or ``"auto"``: k-means++ up to 4096 centres, else random.

    Returns:
        Centres (k, F), float32, on ``x.device``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"kmeans expects a float tensor of features (N, F); got {got}.")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (the number of centres) must be a positive integer, got {k!r}.")
    if not isinstance(num_iters, int) or num_iters < 0:
        raise ValueError(f"num_iters must be a non-negative integer, got {num_iters!r}.")
    n = x.shape[0]
    if n < k:
        raise ValueError(f"not enough features: N={n} < k={k}; use fewer centres or more images.")
    if init == "auto":
        init = "k-means++" if k <= KMEANS_PLUS_PLUS_MAX_K else "random"
    if init not in ("k-means++", "random"):
        raise ValueError(f"init must be 'k-means++', 'random' or 'auto', got {init!r}.")
    x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError("The features contain NaN or inf values; check the encoder's dtype (try float32).")

    generator = torch.Generator().manual_seed(seed)  # CPU generator: same init on every device
    if init == "k-means++":
        centres = _kmeans_plus_plus(x, k, generator)
    else:
        centres = x[torch.randperm(n, generator=generator)[:k].to(x.device)].clone()

    previous: torch.Tensor | None = None
    for _ in tqdm(range(num_iters), disable=not progress, desc="k-means", unit="it"):
        assign, sq_dist = nearest_codes(x, centres, max_search_elements)
        if previous is not None and torch.equal(assign, previous):
            break
        previous = assign
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        filled = counts > 0
        centres = torch.where(filled[:, None], sums / counts.clamp_min(1)[:, None].to(sums.dtype), centres)
        empty = (~filled).nonzero().flatten()
        if empty.numel():
            farthest = sq_dist.topk(empty.numel()).indices
            centres[empty] = x[farthest]
    return centres


# ---------------------------------------------------------------------------------------------------- codebook
def _labels_list(labels: Any, images: Any) -> list[Any]:
    if isinstance(labels, str):
        columns = getattr(images, "column_names", None)
        if not isinstance(columns, list):
            raise ValueError(
                f"labels={labels!r} names a column, which needs `images` to be a datasets.Dataset; pass a list of "
                "labels instead."
            )
        if labels not in columns:
            raise ValueError(f"The dataset has no {labels!r} column to take labels from (columns: {columns}).")
        return list(images[labels])
    if isinstance(labels, (torch.Tensor, np.ndarray)):
        if labels.ndim != 1:
            raise ValueError(f"labels must be one per image (1-D), got shape {tuple(labels.shape)}.")
        return labels.tolist()
    if isinstance(labels, Sequence):
        return list(labels)
    return list(labels)


def build_codebook(
    images: Iterable[Any] | torch.Tensor,
    labels: Sequence[Any] | torch.Tensor | np.ndarray | str | None = None,
    codebook_size: int | None = None,
    codes_per_class: int | None = None,
    encoder: str | os.PathLike | torch.nn.Module | tuple = DEFAULT_ENCODER,
    image_processor: Any = None,
    pool_size: int = 4,
    batch_size: int = 32,
    num_iters: int = 20,
    seed: int = 0,
    device: str | torch.device | None = None,
    max_search_elements: int = DEFAULT_MAX_SEARCH_ELEMENTS,
    init: str = "auto",
    progress: bool = True,
) -> torch.Tensor:
    """Build a VQGAN-LC feature codebook: ``extract_features`` over ``images``, then k-means.

    Exactly one mode:

    * global: ``codebook_size=K`` -> one k-means with K centres over all features (``labels`` not given);
    * per class (the paper's recipe, ``codes_per_class=100`` on ImageNet-1k): ``labels`` (one per image) and
      ``codes_per_class=k`` -> k centres per distinct label, concatenated in sorted label order, so
      K = number of classes x k.

    Args:
        images: As in ``extract_features`` (PIL images, a ``datasets`` dataset with an "image" column, or pixels).
        labels: One label per image (ints or any sortable values), or the name of a label column of ``images``.
        codebook_size: K for the global mode.
        codes_per_class: Centres per class for the per-class mode.
        encoder, image_processor, pool_size, batch_size: As in ``extract_features``. A name or path is loaded
            with ``load_vision_encoder`` on ``device``.
        num_iters, seed, max_search_elements, init: As in ``kmeans`` (class i uses seed + i).
        device: Where the encoder and k-means run; defaults to CUDA when available for a name, else the model's
            device.
        progress: Progress bars for feature extraction and over the classes.

    Returns:
        The codebook (K, F), float32, on the CPU; save it with ``save_codebook``.
    """
    per_class = labels is not None
    if per_class:
        if codes_per_class is None or codebook_size is not None:
            raise ValueError(
                "With labels, give codes_per_class (centres per class, 100 in VQGAN-LC) and not codebook_size; "
                "the codebook then has num_classes * codes_per_class rows. For one global k-means drop labels."
            )
        k = codes_per_class
        name = "codes_per_class"
    else:
        if codes_per_class is not None:
            raise ValueError(
                "codes_per_class needs labels (one per image) to group the features by class; pass labels=, or "
                "use codebook_size= for one global k-means."
            )
        if codebook_size is None:
            raise ValueError(
                "Give either codebook_size= (global k-means) or labels= with codes_per_class= (per-class k-means, "
                "the VQGAN-LC recipe)."
            )
        k = codebook_size
        name = "codebook_size"
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{name} must be a positive integer, got {k!r}.")

    label_list = _labels_list(labels, images) if per_class else None
    model, processor = _resolve_encoder(encoder, image_processor, device)
    features = extract_features(images, (model, processor), pool_size=pool_size, batch_size=batch_size, progress=progress)
    kmeans_device = torch.device(device) if device is not None else _model_device_dtype(model)[0]
    per_image = pool_size**2
    num_images = features.shape[0] // per_image

    if not per_class:
        return kmeans(
            features.to(kmeans_device), k, num_iters, seed, max_search_elements, init=init, progress=progress
        ).cpu()

    if len(label_list) != num_images:
        raise ValueError(
            f"Got {len(label_list)} labels for {num_images} images; give exactly one label per image, in order."
        )
    classes = sorted(set(label_list))
    index_of = {c: i for i, c in enumerate(classes)}
    image_class = torch.tensor([index_of[c] for c in label_list])
    feature_class = image_class.repeat_interleave(per_image)
    centres = []
    for i, cls in enumerate(tqdm(classes, disable=not progress, desc="k-means per class", unit="class")):
        class_features = features[feature_class == i]
        if class_features.shape[0] < k:
            raise ValueError(
                f"Class {cls!r} has only {class_features.shape[0] // per_image} image(s) = {class_features.shape[0]} "
                f"features (pool_size**2={per_image} per image), fewer than codes_per_class={k}; use fewer centres "
                "per class, a larger pool_size, or more images of that class."
            )
        centres.append(
            kmeans(class_features.to(kmeans_device), k, num_iters, seed + i, max_search_elements, init=init).cpu()
        )
    return torch.cat(centres)
