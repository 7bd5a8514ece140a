"""``VQGANLCModel``: VQGAN-LC, a taming-VQGAN tokenizer whose codebook is a frozen set of pretrained image
features (e.g. 100,000 k-means centres of CLIP patch features, 768-d) mapped to the latent space by one trained
linear projector. Build the feature codebook with ``fullvq_hf.data.lc_codebook`` (data preparation: encoder
features + k-means), write it with ``save_codebook`` (here: it is part of this model's serialisation) and install
it with ``load_codebook``; ``from_pretrained`` restores it with the rest of the weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .modeling_tokenizer import BACKBONES, VQTokenizerMixin
from .quantizers import DEFAULT_MAX_SEARCH_ELEMENTS, FrozenCodebookQuantizer

CODEBOOK_KEY = "codebook"  # tensor name inside the safetensors file of a feature codebook
CODEBOOK_FILENAME = "codebook.safetensors"  # file name used when a directory is given


class VQGANLCModel(VQTokenizerMixin, ModelMixin, ConfigMixin):
    r"""
    VQGAN-LC image tokenizer: encoder/decoder + frozen feature codebook (K, F) + trainable Linear(F -> D).

    Parameters (backbone ones as in [`FVQModel`]):
        codebook_size (`int`, defaults to 100000): Number of codes K (rows of the feature codebook).
        codebook_dim (`int`, defaults to 8): Dimension D of the projected codes the search runs in.
        codebook_feature_dim (`int`, defaults to 768): Dimension F of the frozen features.
        beta (`float`, defaults to 0.1): Commitment weight (VQGAN-LC: 1.0 x 0.1).
        codebook_loss_weight (`float`, defaults to 0.033): Codebook weight (VQGAN-LC: 0.33 x 0.1).
    """

    _skip_layerwise_casting_patterns = ["quantize"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (128, 128, 256, 256, 512),
        layers_per_block: int = 2,
        latent_channels: int = 256,
        norm_num_groups: int = 32,
        dropout: float = 0.0,
        codebook_size: int = 100000,
        codebook_dim: int = 8,
        codebook_feature_dim: int = 768,
        beta: float = 0.1,
        codebook_loss_weight: float = 0.033,
        entropy_loss_weight: float = 0.0,
        entropy_temperature: float = 0.01,
        max_search_elements: int = DEFAULT_MAX_SEARCH_ELEMENTS,
        sample_size: int = 256,
        scaling_factor: float = 1.0,
    ):
        super().__init__()
        quantizer = FrozenCodebookQuantizer(
            codebook_size,
            codebook_dim,
            codebook_feature_dim=codebook_feature_dim,
            beta=beta,
            codebook_loss_weight=codebook_loss_weight,
            entropy_loss_weight=entropy_loss_weight,
            entropy_temperature=entropy_temperature,
            max_search_elements=max_search_elements,
        )
        self._build(
            quantizer, in_channels, out_channels, block_out_channels, layers_per_block, latent_channels, norm_num_groups, dropout
        )

    @classmethod
    def from_preset(cls, backbone: str = "VQ-16", **overrides) -> VQGANLCModel:
        """A fresh model on a named backbone (see ``BACKBONES``), e.g. ``from_preset("tiny", codebook_size=4096)``."""
        if backbone not in BACKBONES:
            raise ValueError(f"Unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}.")
        return cls(**{**BACKBONES[backbone], **overrides})

    @torch.no_grad()
    def load_codebook(self, codebook: torch.Tensor | str | os.PathLike) -> None:
        """Install the frozen feature codebook: a (K, F) tensor or a safetensors file written by
        ``save_codebook``. Shapes must match ``codebook_size`` x ``codebook_feature_dim``."""
        if not isinstance(codebook, torch.Tensor):
            codebook = load_codebook_file(codebook)
        expected = (self.config.codebook_size, self.config.codebook_feature_dim)
        if tuple(codebook.shape) != expected:
            raise ValueError(
                f"The feature codebook has shape {tuple(codebook.shape)} but this model expects {expected} "
                "(codebook_size x codebook_feature_dim). Build a model with matching sizes, e.g. "
                f"VQGANLCModel(codebook_size={codebook.shape[0]}, codebook_feature_dim={codebook.shape[-1]}, ...)."
            )
        if not torch.isfinite(codebook).all():
            raise ValueError("The feature codebook contains NaN or inf values.")
        self.quantize.frozen_codebook.copy_(codebook.to(self.quantize.frozen_codebook))


# ---------------------------------------------------------------------------------------------------- files
def _codebook_path(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    return os.path.join(path, CODEBOOK_FILENAME) if os.path.isdir(path) else path


def save_codebook(
    codebook: torch.Tensor,
    path: str | os.PathLike,
    encoder_name: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> str:
    """Save a feature codebook (K, F) as a safetensors file with tensor key ``"codebook"``.

    Args:
        codebook: The (K, F) float tensor, e.g. from ``build_codebook``.
        path: File to write (parent directories are created); for an existing directory,
            ``<path>/codebook.safetensors``.
        encoder_name: Recorded in the metadata (``"encoder"``) when given, e.g. ``"openai/clip-vit-large-patch14"``.
        metadata: Extra string metadata to store.

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    if not isinstance(codebook, torch.Tensor) or codebook.ndim != 2 or not codebook.is_floating_point():
        got = f"{tuple(codebook.shape)} {codebook.dtype}" if isinstance(codebook, torch.Tensor) else type(codebook).__name__
        raise ValueError(f"The codebook must be a float tensor (K, F), got {got}.")
    if not torch.isfinite(codebook).all():
        raise ValueError("The codebook contains NaN or inf values; refusing to save it.")
    meta = {str(key): str(value) for key, value in (metadata or {}).items()}
    meta["shape"] = f"{codebook.shape[0]}x{codebook.shape[1]}"
    meta["codebook_size"] = str(codebook.shape[0])
    meta["codebook_feature_dim"] = str(codebook.shape[1])
    if encoder_name is not None:
        meta["encoder"] = str(encoder_name)
    path = _codebook_path(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    save_file({CODEBOOK_KEY: codebook.detach().cpu().contiguous()}, path, metadata=meta)
    return path


def load_codebook_file(path: str | os.PathLike) -> torch.Tensor:
    """Load a feature codebook (K, F) written by ``save_codebook`` (a file, or a directory holding
    ``codebook.safetensors``). Returns a CPU tensor in the stored dtype."""
    from safetensors import safe_open

    path = _codebook_path(path)
    if not os.path.isfile(path):
        raise ValueError(
            f"No codebook file at {path!r}. Build one with fullvq_hf.data.lc_codebook.build_codebook(...) and write it with "
            "save_codebook(codebook, path), or check the path."
        )
    try:
        with safe_open(path, framework="pt") as handle:
            keys = list(handle.keys())
            if CODEBOOK_KEY not in keys:
                raise ValueError(
                    f"{path!r} has no {CODEBOOK_KEY!r} tensor (it holds {keys}); write codebooks with "
                    "save_codebook, or load the tensor yourself and pass it to load_codebook."
                )
            codebook = handle.get_tensor(CODEBOOK_KEY)
    except ValueError:
        raise
    except Exception as err:  # safetensors raises its own error type for corrupt / non-safetensors files
        raise ValueError(
            f"Could not read {path!r} as a safetensors file ({type(err).__name__}: {err}); codebooks are written by "
            "save_codebook."
        ) from err
    if codebook.ndim != 2:
        raise ValueError(f"The codebook in {path!r} has shape {tuple(codebook.shape)}; expected (K, F).")
    return codebook
