"""``VQGANLCModel``: VQGAN-LC, a taming-VQGAN tokenizer whose codebook is a frozen set of pretrained image
features (e.g. 100,000 k-means centres of CLIP patch features, 768-d) mapped to the latent space by one trained
linear projector. Build the feature codebook with ``fullvq_hf.models.lc_codebook`` and install it with
``load_codebook``; ``from_pretrained`` restores it with the rest of the weights.
"""

from __future__ import annotations

import os

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .modeling_tokenizer import BACKBONES, VQTokenizerMixin
from .quantizers import DEFAULT_MAX_SEARCH_ELEMENTS, FrozenCodebookQuantizer


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
        ``lc_codebook.save_codebook``. Shapes must match ``codebook_size`` x ``codebook_feature_dim``."""
        if not isinstance(codebook, torch.Tensor):
            from .lc_codebook import load_codebook_file

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
