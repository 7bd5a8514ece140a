"""``FVQModel``: a LlamaGen-style VQ tokenizer whose quantizer is FVQ's VQBridge (or a baseline).

``quantizer_type`` picks the codebook parametrisation:
    "vqbridge"  FVQ: raw codebook -> VQBridge -> projected codebook (the default)
    "vq"        plain trainable codebook (LlamaGen VQ; also what a folded FVQ model is)
    "simvq"     SimVQ: frozen Gaussian codebook x trainable linear map

For inference, ``fold()`` computes the projected codebook once and returns a ``quantizer_type="vq"`` model with
the same tokens and reconstructions and no bridge weights; ``save_pretrained(..., fold_codebook=True)`` saves that.
Both kinds load with ``FVQModel.from_pretrained``.
"""

from __future__ import annotations

import inspect

import torch
from diffusers import ModelMixin, VQModel
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .modeling_tokenizer import BACKBONES, VQTokenizerMixin
from .quantizers import DEFAULT_MAX_SEARCH_ELEMENTS, QUANTIZER_CLASSES
from .vqbridge import parse_bridge_preset


class FVQModel(VQTokenizerMixin, ModelMixin, ConfigMixin):
    r"""
    FVQ (FullVQ) image tokenizer: LlamaGen VQ encoder/decoder + a VQBridge-projected codebook.

    Parameters:
        in_channels (`int`, defaults to 3): Channels of the input images.
        out_channels (`int`, defaults to 3): Channels of the reconstructions.
        block_out_channels (`tuple[int]`, defaults to VQ-16's `(128, 128, 256, 256, 512)`): Channels per level;
            the downsampling factor is `2 ** (len(block_out_channels) - 1)`.
        layers_per_block (`int`, defaults to 2): Res blocks per encoder level (the decoder has one more).
        latent_channels (`int`, defaults to 256): Encoder output channels (LlamaGen's `z_channels`).
        norm_num_groups (`int`, defaults to 32): GroupNorm groups.
        dropout (`float`, defaults to 0.0): Dropout inside res blocks.
        codebook_size (`int`, defaults to 16384): Number of codes K.
        codebook_dim (`int`, defaults to 256): Code dimension D.
        quantizer_type (`str`, defaults to `"vqbridge"`): `"vqbridge"`, `"vq"` or `"simvq"`.
        beta (`float`, defaults to 0.25): Commitment loss weight.
        codebook_loss_weight (`float`, defaults to 1.0): Codebook loss weight.
        entropy_loss_weight (`float`, defaults to 0.0): Entropy loss weight (off in FVQ).
        entropy_temperature (`float`, defaults to 0.01): Temperature of the entropy loss.
        use_l2_norm (`bool`, defaults to False): Cosine search with l2-normalised codes (LlamaGen's own VQ).
        bridge_type (`str`, defaults to `"vit"`): `"vit"`, the paper's ViT VQBridge, or `"dit"`, the DiT bridge the
            official training recipes build (fixed sin-cos `pos_embed`, adaLN-modulated blocks; `codebook_size` must
            then be `(n * bridge_patch_size) ** 2`).
        bridge_patch_size, bridge_hidden_size, bridge_depth, bridge_num_heads, bridge_mlp_ratio: VQBridge shape
            (defaults: the official L/4, depth 2, 4 heads, MLP ratio 2). `codebook_size` must be divisible by
            `bridge_patch_size ** 2`.
        bridge_num_classes (`int`, defaults to 0): DiT bridge only: 0 is the unconditional bridge (the recipes'
            `--is_uncondition`); N > 0 a class-conditional bridge with one codebook per class (tokens use label 0,
            as the official model given no label). A class-conditional bridge cannot be folded or exported.
        bridge_class_dropout_prob (`float`, defaults to 0.1): DiT bridge only: label dropout of the conditional
            bridge in training (a null row `bridge_num_classes` is added when > 0).
        init_l2_norm (`bool`, defaults to False): l2-normalise the raw codebook once at initialisation (the official
            bridge quantizer's `--codebook-l2-norm`; its search stays Euclidean, unlike `use_l2_norm`).
        max_search_elements (`int`, defaults to 2**24): Float32 budget of one block of the distance matrix.
        code_offsets (`bool`, defaults to False): A per-code offset buffer `quantize.code_offset` (K, D) added to
            the codebook, zero at the start; the trainer's dead-code restarts (`--code-restart-every`) move single
            codes onto latents through it. Folding adds it into the plain codebook. Not in the official recipes.
        sample_size (`int`, defaults to 256): Nominal image size (used by pipelines for defaults).
        scaling_factor (`float`, defaults to 1.0): Latent scale read by diffusers pipelines (`LDMPipeline` divides
            latents by it before `decode`).
    """

    _supports_gradient_checkpointing = False
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
        codebook_size: int = 16384,
        codebook_dim: int = 256,
        quantizer_type: str = "vqbridge",
        beta: float = 0.25,
        codebook_loss_weight: float = 1.0,
        entropy_loss_weight: float = 0.0,
        entropy_temperature: float = 0.01,
        use_l2_norm: bool = False,
        bridge_patch_size: int = 4,
        bridge_hidden_size: int = 256,
        bridge_depth: int = 2,
        bridge_num_heads: int = 4,
        bridge_mlp_ratio: float = 2.0,
        bridge_type: str = "vit",
        bridge_num_classes: int = 0,
        bridge_class_dropout_prob: float = 0.1,
        init_l2_norm: bool = False,
        max_search_elements: int = DEFAULT_MAX_SEARCH_ELEMENTS,
        code_offsets: bool = False,
        sample_size: int = 256,
        scaling_factor: float = 1.0,
    ):
        super().__init__()
        if quantizer_type not in ("vqbridge", "vq", "simvq"):
            raise ValueError(f"quantizer_type={quantizer_type!r} is not one of 'vqbridge', 'vq', 'simvq'.")
        kwargs = dict(
            beta=beta,
            codebook_loss_weight=codebook_loss_weight,
            entropy_loss_weight=entropy_loss_weight,
            entropy_temperature=entropy_temperature,
            use_l2_norm=use_l2_norm,
            max_search_elements=max_search_elements,
            code_offsets=code_offsets,
        )
        if quantizer_type == "vqbridge":
            kwargs.update(
                bridge_patch_size=bridge_patch_size,
                bridge_hidden_size=bridge_hidden_size,
                bridge_depth=bridge_depth,
                bridge_num_heads=bridge_num_heads,
                bridge_mlp_ratio=bridge_mlp_ratio,
                bridge_type=bridge_type,
                bridge_num_classes=bridge_num_classes,
                bridge_class_dropout_prob=bridge_class_dropout_prob,
                init_l2_norm=init_l2_norm,
            )
        quantizer = QUANTIZER_CLASSES[quantizer_type](codebook_size, codebook_dim, **kwargs)
        self._build(
            quantizer, in_channels, out_channels, block_out_channels, layers_per_block, latent_channels, norm_num_groups, dropout
        )

    @classmethod
    def from_preset(cls, backbone: str = "VQ-16", bridge: str | None = "L/4", **overrides) -> FVQModel:
        """A fresh model from named presets: ``FVQModel.from_preset("VQ-16", "L/8", codebook_size=65536)``.

        ``backbone`` is one of ``BACKBONES`` (VQ-16, VQ-8, cpu-small, tiny); ``bridge`` a ViT VQBridge preset
        ``"<S|B|L|XL>/<2|4|8>"``, an official DiT-bridge name (``"QBridge-L/8"``, see ``QBRIDGE_MODELS``; the
        unconditional bridge unless ``bridge_num_classes`` is overridden), or None with ``quantizer_type`` given in
        ``overrides``.
        """
        if backbone not in BACKBONES:
            raise ValueError(f"Unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}.")
        config = dict(BACKBONES[backbone])
        if bridge is not None:
            config.update(parse_bridge_preset(bridge))
        config.update(overrides)
        return cls(**config)

    @classmethod
    def from_vq_tokenizer(cls, tokenizer: FVQModel, bridge: str = "QBridge-L/4", **overrides) -> FVQModel:
        """An FVQ model that starts from a trained plain-VQ tokenizer (e.g. a converted LlamaGen VQ-16) with a
        fresh bridge, as the official ``vq_train_qbridge_lr.py --finetune-from-llmgen``.

        Kept: encoder, decoder, ``quant_conv``, ``post_quant_conv`` and the codebook, which becomes the raw
        codebook ``quantize.embedding`` under the bridge. New, with the official initialisation: the bridge
        ``quantize.qbridge`` (its output, the projected codebook, is exactly 0 until it is trained). The search is
        Euclidean on the projected codebook, as the official bridge quantizer, so ``use_l2_norm`` is False.

        Args:
            tokenizer: An ``FVQModel`` with ``quantizer_type="vq"``.
            bridge: A bridge preset as in ``from_preset``: official DiT names (``"QBridge-L/4"``, the recipes'
                unconditional bridge) or ViT ``"<S|B|L|XL>/<patch>"``.
            **overrides: Other config values of the new model (bridge options, losses, ``bridge_num_classes``);
                the kept parts' shapes cannot be changed.
        """
        if not isinstance(tokenizer, FVQModel) or tokenizer.config.quantizer_type != "vq":
            kind = getattr(getattr(tokenizer, "config", None), "quantizer_type", type(tokenizer).__name__)
            raise ValueError(
                f"from_vq_tokenizer needs an FVQModel with a plain codebook (quantizer_type='vq'), got {kind!r}: "
                "a bridge model already has its bridge, and SimVQ / frozen codebooks are not a raw codebook."
            )
        kept = {
            "in_channels", "out_channels", "block_out_channels", "layers_per_block", "latent_channels",
            "norm_num_groups", "codebook_size", "codebook_dim", "quantizer_type",
        }  # fmt: skip
        fixed = sorted(kept & set(overrides))
        if fixed:
            raise ValueError(
                f"from_vq_tokenizer keeps the tokenizer's encoder, decoder and codebook, so {fixed} cannot be "
                "changed; build a fresh model with FVQModel.from_preset instead."
            )
        config = {k: v for k, v in tokenizer.config.items() if not k.startswith("_")}
        config.update(parse_bridge_preset(bridge) if bridge is not None else {})
        config.update(quantizer_type="vqbridge", use_l2_norm=False, code_offsets=False)
        config.update(overrides)
        model = cls(**config)
        state = model.state_dict()
        kept_state = {k: v for k, v in tokenizer.state_dict().items() if k in state and k != "quantize.code_offset"}
        kept_state["quantize.embedding.weight"] = tokenizer.quantize.offset_codebook().detach()  # restarted codes too
        state.update(kept_state)  # everything but quantize.qbridge.* (and fresh code offsets)
        model.load_state_dict(state, strict=True)
        return model.to(device=tokenizer.device, dtype=tokenizer.dtype).train(tokenizer.training)

    # ------------------------------------------------------------------ folding and export
    @torch.no_grad()
    def fold(self) -> FVQModel:
        """A ``quantizer_type="vq"`` copy whose plain codebook is this model's projected codebook.

        Same tokens and reconstructions, no bridge (or SimVQ projection) weights: the inference form. A
        class-conditional DiT bridge is refused: it has one codebook per class label, not one to fold.
        """
        self._check_foldable()
        config = dict(self.config)
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        config.update(quantizer_type="vq", code_offsets=False)  # the offsets are added into the plain codebook
        folded = FVQModel(**config)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("quantize.")}
        state["quantize.embedding.weight"] = self.quantize.offset_codebook().detach().float()
        folded.load_state_dict(state, strict=True)
        if folded.device != self.device or folded.dtype != self.dtype:
            folded = folded.to(device=self.device, dtype=self.dtype)
        return folded.train(self.training)

    def _has_projection(self) -> bool:
        """Whether the searched codebook is computed (bridge, SimVQ projection, restart offsets), not stored."""
        return self.config.quantizer_type != "vq" or bool(self.config.get("code_offsets", False))

    def _check_foldable(self) -> None:
        if getattr(self.quantize, "is_conditional", False):
            raise ValueError(
                f"This FVQ model's DiT bridge is class-conditional (bridge_num_classes="
                f"{self.config.bridge_num_classes}): it makes a different codebook for every class label, so no "
                "single folded codebook gives its tokens for every label. It cannot be folded or exported to a "
                "diffusers VQModel; keep the bridge model (FVQModel with quantizer_type='vqbridge')."
            )

    def save_pretrained(self, save_directory, *args, fold_codebook: bool = False, **kwargs):
        """diffusers' ``save_pretrained``; with ``fold_codebook=True`` the folded inference model is saved."""
        if fold_codebook and self._has_projection():
            return self.fold().save_pretrained(save_directory, *args, **kwargs)
        return super().save_pretrained(save_directory, *args, **kwargs)

    # diffusers' pipelines pass `variant`, `max_shard_size`, `safe_serialization`, ... only to save methods whose
    # signature names them: show ModelMixin's parameters (plus fold_codebook), not a bare *args/**kwargs
    save_pretrained.__signature__ = inspect.signature(ModelMixin.save_pretrained).replace(
        parameters=[
            *list(inspect.signature(ModelMixin.save_pretrained).parameters.values())[:-1],
            inspect.Parameter("fold_codebook", inspect.Parameter.KEYWORD_ONLY, default=False),
            inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
        ]
    )

    def to_diffusers_vqmodel(self) -> VQModel:
        """Export to a stock diffusers ``VQModel`` (same indices and reconstructions, no ``fullvq_hf`` needed).

        Possible when the codebook is plain Euclidean: bridge / SimVQ models are folded first; l2-normalised
        (cosine) codebooks are refused because diffusers' ``VectorQuantizer`` has no normalisation.
        """
        if self.config.use_l2_norm:
            raise ValueError(
                "This tokenizer uses l2-normalised codes (cosine search); diffusers' VQModel has no such quantizer, "
                "so it cannot be exported. Keep using FVQModel."
            )
        if self._has_projection():
            self._check_foldable()
            return self.fold().to_diffusers_vqmodel()
        from .diffusers_vq import diffusers_vqmodel_config, fullvq_to_diffusers_state_dict

        vq = VQModel(**diffusers_vqmodel_config(self.config))
        vq.load_state_dict(fullvq_to_diffusers_state_dict(self.state_dict()))
        if vq.device != self.device or vq.dtype != self.dtype:
            vq = vq.to(device=self.device, dtype=self.dtype)
        return vq.eval()
