"""Official FVQ checkpoints -> ``FVQModel``.

Two layouts, told apart by the keys:

* training checkpoints of ``tokenizer/tokenizer_image/vq_model_qbridge_release.py`` (the ViT VQBridge of
  ``qbridge_ViT.py``): LlamaGen's VQ model names plus ``quantize.qbridge.x_embedder.proj``,
  ``quantize.qbridge.blocks.{i}.attn.qkv`` / ``.attn.proj`` / ``.mlp.fc1`` / ``.mlp.fc2`` and
  ``quantize.qbridge.final_layer.linear``; the raw codebook ``quantize.embedding.weight`` is laid out row-major on
  a square sqrt(K) x sqrt(K) grid, exactly as ``fullvq_hf.models.vqbridge`` does. -> ``quantizer_type="vqbridge"``
  with the bridge shape read from the tensors: width (S/B/L/XL = 64/128/256/512), patch size, depth, MLP ratio.
  The head count does not change any shape; every official preset uses 4 (override with ``bridge_num_heads``).
* folded ("VQGAN format") checkpoints written by ``convert_fullvq2vq.py``, the form FVQ releases: a plain LlamaGen
  VQ state dict whose ``quantize.embedding.weight`` is the projected codebook. -> ``quantizer_type="vq"`` with
  Euclidean search (FVQ trains with ``codebook_l2_norm=False``; stored args decide when present).

Not representable (refused with a ValueError): the DiT-style bridge of ``qbridge.py`` (fixed sin-cos position
embedding and adaLN modulation, keys ``pos_embed``, ``y_embedder``, ``adaLN_modulation``) and the linear / MLP
"bridges" (``Qbridge-lin/*``). Fold those with the official ``convert_fullvq2vq.py`` first and convert the result.
"""

from __future__ import annotations

import logging
import math
import os

from ..models.modeling_fvq import FVQModel
from ..models.vqbridge import bridge_grid
from ._common import (
    apply_overrides,
    count_indexed,
    load_mapped_state_dict,
    load_source_state_dict,
    require,
    save_converted,
)
from .llamagen_vq import infer_backbone, is_training_only

logger = logging.getLogger(__name__)

LAYOUT = "FVQ"
BRIDGE = "quantize.qbridge"


def infer_bridge(state_dict: dict, codebook_size: int) -> dict:
    """VQBridge config (patch size, width, depth, MLP ratio) of an FVQ ViT-bridge state dict."""
    bridge_keys = sorted(k for k in state_dict if k.startswith(BRIDGE + "."))
    dit = [
        k for k in bridge_keys if any(s in k for s in (".pos_embed", ".y_embedder.", ".adaLN_modulation."))
    ]
    if dit:
        raise ValueError(
            f"This FVQ checkpoint uses the DiT-style VQBridge of qbridge.py (e.g. {dit[0]}): a fixed sin-cos "
            "position embedding and adaLN modulation, which this package's VQBridge (the ViT version of "
            "qbridge_ViT.py, as in the paper) does not have. It cannot be represented; fold it with the official "
            "convert_fullvq2vq.py and convert the folded checkpoint."
        )
    proj = state_dict.get(f"{BRIDGE}.x_embedder.proj.weight")
    if proj is None:
        raise ValueError(
            "This FVQ checkpoint's quantize.qbridge is not the ViT VQBridge (no quantize.qbridge.x_embedder.proj; "
            f"keys: {bridge_keys[:6]}); linear / MLP bridges cannot be represented. Fold it with the official "
            "convert_fullvq2vq.py and convert the folded checkpoint."
        )
    hidden, _, patch, patch_w = (int(s) for s in proj.shape)
    if patch != patch_w:
        raise ValueError(f"Non-square bridge patches {patch}x{patch_w} cannot be represented.")
    depth = count_indexed(state_dict, f"{BRIDGE}.blocks")
    fc1 = require(state_dict, f"{BRIDGE}.blocks.0.mlp.fc1.weight", "bridge_mlp_ratio", LAYOUT)
    side = math.isqrt(codebook_size)
    if side * side != codebook_size or bridge_grid(codebook_size, patch) != (side, side):
        raise ValueError(
            f"The official VQBridge lays the codebook out on a square grid; codebook_size={codebook_size} with "
            f"patch size {patch} gives a {bridge_grid(codebook_size, patch)} grid here instead."
        )
    return dict(
        bridge_patch_size=patch,
        bridge_hidden_size=hidden,
        bridge_depth=depth,
        bridge_num_heads=4,
        bridge_mlp_ratio=fc1.shape[0] / hidden,
    )


def convert_fvq(
    checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    fold: bool = False,
    state_dict_key: str | None = None,
    ema: bool = False,
    **config_overrides,
) -> FVQModel:
    """Convert an official FVQ checkpoint (with VQBridge, or folded) to an ``FVQModel``.

    Args:
        checkpoint_path: ``.pt``/``.pth`` (loaded with ``weights_only=True``) or ``.safetensors`` file.
        output_dir: When given, ``save_pretrained`` output (config.json + safetensors) and a model card go here.
        fold: For a bridge checkpoint, return (and save) the folded inference model (``quantizer_type="vq"``,
            the projected codebook computed once) instead of the trainable bridge model.
        state_dict_key: Entry of the checkpoint dict holding the weights (default: "model", then "state_dict").
        ema: Convert the EMA weights (``checkpoint["ema"]``).
        **config_overrides: ``FVQModel`` config values that replace the inferred / default ones, e.g.
            ``bridge_num_heads=8`` or ``use_l2_norm=True``.

    Returns:
        The converted ``FVQModel`` in eval mode.
    """
    state_dict, args = load_source_state_dict(checkpoint_path, state_dict_key, ema)
    config = infer_backbone(state_dict, LAYOUT)
    config["codebook_size"] = int(
        require(state_dict, "quantize.embedding.weight", "codebook_size", LAYOUT).shape[0]
    )
    has_bridge = any(k.startswith(BRIDGE + ".") for k in state_dict)
    if has_bridge:
        config.update(quantizer_type="vqbridge", **infer_bridge(state_dict, config["codebook_size"]))
    else:
        config["quantizer_type"] = "vq"
    config.update(
        use_l2_norm=bool(args.get("codebook_l2_norm", False)),
        beta=float(args.get("commit_loss_beta", 0.25)),
        entropy_loss_weight=float(args.get("entropy_loss_ratio", 0.0)),
        norm_num_groups=32,
    )
    config = apply_overrides(config, config_overrides, FVQModel)
    logger.info("FVQ config (%s): %s", "with VQBridge" if has_bridge else "folded", config)
    model = FVQModel(**config)
    load_mapped_state_dict(
        model, state_dict, lambda key: key, is_training_only, describe=f"FVQModel({config})"
    )
    model.eval()
    if fold and model.config.quantizer_type != "vq":
        model = model.fold().eval()
    if output_dir is not None:
        card = dict(source="fvq", source_repo="yfChang/FVQ", checkpoint=os.path.basename(checkpoint_path))
        save_converted(model, output_dir, card)
    return model
