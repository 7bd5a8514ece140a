"""LlamaGen's VQ tokenizers (``vq_ds16_c2i.pt``, ``vq_ds8_c2i.pt``) -> ``FVQModel(quantizer_type="vq")``.

Source layout (LlamaGen ``tokenizer/tokenizer_image/vq_model.py``, saved as ``{"model": state_dict, ...}``, training
checkpoints also with "optimizer", "discriminator", "ema", "args"): ``encoder.conv_in``,
``encoder.conv_blocks.{i}.res.{j}`` / ``.attn.{j}`` / ``.downsample.conv``, ``encoder.mid.{0,1,2}``,
``encoder.norm_out``, ``encoder.conv_out``, the same under ``decoder.`` (levels lowest resolution first,
``.upsample.conv``), ``quant_conv``, ``post_quant_conv``, ``quantize.embedding.weight`` (K, D) and the usage buffer
``quantize.codebook_used`` (dropped). Our module names are LlamaGen's, so the key map is the identity.

Inferred from the tensors: channels per level, res blocks per level, latent channels, codebook size and dimension,
in/out channels. Whether codes are searched l2-normalised is the stored ``codebook_l2_norm`` arg; a checkpoint
without args (a released file, or a folded FVQ one) needs ``use_l2_norm`` given: LlamaGen's own tokenizers use
True, FVQ's recipes False, and the weights cannot tell them apart.
"""

from __future__ import annotations

import logging
import os

from ..models.modeling_fvq import FVQModel
from ._common import (
    apply_overrides,
    check_output_dir,
    count_indexed,
    indexed_children,
    load_mapped_state_dict,
    load_source_state_dict,
    require,
    save_converted,
)

logger = logging.getLogger(__name__)

LAYOUT = "LlamaGen VQ"
# Buffers of the official quantizer that hold training statistics, not weights.
TRAINING_ONLY_KEYS = ("quantize.codebook_used",)


def infer_backbone(state_dict: dict, layout: str = LAYOUT) -> dict:
    """Backbone config (channels, blocks, latent/code sizes) of a LlamaGen-layout state dict."""
    num_levels = count_indexed(state_dict, "encoder.conv_blocks")
    if num_levels == 0:
        require(
            state_dict, "encoder.conv_blocks.0.res.0.conv1.weight", "the number of encoder levels", layout
        )
    layers = count_indexed(state_dict, "encoder.conv_blocks.0.res")
    channels = tuple(
        int(
            require(
                state_dict, f"encoder.conv_blocks.{i}.res.0.conv1.weight", "block_out_channels", layout
            ).shape[0]
        )
        for i in range(num_levels)
    )
    attn_levels = sorted(
        i for i in range(num_levels) if indexed_children(state_dict, f"encoder.conv_blocks.{i}.attn")
    )
    if attn_levels != [num_levels - 1]:
        raise ValueError(
            f"Attention sits in encoder levels {attn_levels}; this package's encoder has it in the last, "
            f"lowest-resolution level ({num_levels - 1}) only, as LlamaGen does. This checkpoint cannot be "
            "represented."
        )
    quant_conv = require(state_dict, "quant_conv.weight", "codebook_dim", layout)
    return dict(
        in_channels=int(require(state_dict, "encoder.conv_in.weight", "in_channels", layout).shape[1]),
        out_channels=int(require(state_dict, "decoder.conv_out.weight", "out_channels", layout).shape[0]),
        block_out_channels=channels,
        layers_per_block=layers,
        latent_channels=int(
            require(state_dict, "encoder.conv_out.weight", "latent_channels", layout).shape[0]
        ),
        codebook_dim=int(quant_conv.shape[0]),
    )


def is_training_only(key: str) -> bool:
    return key in TRAINING_ONLY_KEYS


def convert_llamagen_vq(
    checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    state_dict_key: str | None = None,
    ema: bool = False,
    **config_overrides,
) -> FVQModel:
    """Convert a LlamaGen VQ tokenizer checkpoint to an ``FVQModel`` with a plain (l2-normalised) codebook.

    Args:
        checkpoint_path: ``.pt``/``.pth`` (loaded with ``weights_only=True``) or ``.safetensors`` file.
        output_dir: When given, ``save_pretrained`` output (config.json + safetensors) and a model card go here.
        state_dict_key: Entry of the checkpoint dict holding the weights (default: "model", then "state_dict").
        ema: Convert the EMA weights (``checkpoint["ema"]``).
        **config_overrides: ``FVQModel`` config values that replace the inferred / default ones, e.g.
            ``use_l2_norm=False``, ``sample_size=384``. Shape-bearing overrides must agree with the tensors.

    Returns:
        The converted ``FVQModel`` in eval mode.
    """
    if output_dir is not None:
        check_output_dir(output_dir)
    state_dict, args = load_source_state_dict(checkpoint_path, state_dict_key, ema)
    if any(k.startswith("quantize.qbridge.") for k in state_dict):
        raise ValueError(
            "This checkpoint has a VQBridge (quantize.qbridge.*): it is an FVQ training checkpoint. "
            "Convert it with convert_fvq (fullvq convert fvq ...)."
        )
    config = infer_backbone(state_dict)
    config["codebook_size"] = int(
        require(state_dict, "quantize.embedding.weight", "codebook_size", LAYOUT).shape[0]
    )
    if "codebook_l2_norm" not in args and "use_l2_norm" not in config_overrides:
        raise ValueError(
            "This checkpoint stores no training args, so whether its codes are searched l2-normalised cannot be "
            "read from it: pass use_l2_norm (--use-l2-norm true for LlamaGen's tokenizers, e.g. vq_ds16_c2i.pt, "
            "trained with codebook_l2_norm; --use-l2-norm false for a folded FVQ checkpoint of "
            "convert_fullvq2vq.py, or convert that with `fullvq convert fvq`)."
        )
    config.update(
        quantizer_type="vq",
        use_l2_norm=bool(args.get("codebook_l2_norm", True)),
        beta=float(args.get("commit_loss_beta", 0.25)),
        entropy_loss_weight=float(args.get("entropy_loss_ratio", 0.0)),
        norm_num_groups=32,
    )
    config = apply_overrides(config, config_overrides, FVQModel)
    logger.info("LlamaGen VQ config: %s", config)
    model = FVQModel(**config)
    load_mapped_state_dict(
        model, state_dict, lambda key: key, is_training_only, describe=f"FVQModel({config})"
    )
    model.eval()
    if output_dir is not None:
        card = dict(
            source="llamagen-vq",
            source_repo="FoundationVision/LlamaGen",
            license="mit",  # LlamaGen's LICENSE
            checkpoint=os.path.basename(checkpoint_path),
        )
        save_converted(model, output_dir, card)
    return model
