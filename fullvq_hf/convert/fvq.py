"""Official FVQ checkpoints -> ``FVQModel``.

Three layouts, told apart by the keys:

* training checkpoints with the DiT bridge of ``qbridge.py`` -- what the official recipes train
  (``scripts/recon/FVQ-{16384,65536,262144}.sh`` run ``tokenizer/tokenizer_image/vq_train_qbridge_lr.py``, which
  saves ``{"model", "optimizer", "discriminator", "optimizer_disc", "steps", "args"[, "epoch"], "ema" with --ema}``):
  LlamaGen's VQ model names plus ``quantize.qbridge.pos_embed``, ``.y_embedder.embedding_table``,
  ``.blocks.{i}.adaLN_modulation.1`` and ``.final_layer.adaLN_modulation.1`` -> ``bridge_type="dit"``. A 1-row
  ``embedding_table`` is the unconditional bridge (``--is_uncondition``: label always 0); more rows a
  class-conditional one, whose class count and label dropout come from the stored args (``QB_type``,
  ``is_uncondition``, ``num_classes``) or, without args, must be passed (``bridge_num_classes``,
  ``bridge_class_dropout_prob``).
* training checkpoints with the ViT bridge of ``qbridge_ViT.py`` (``vq_model_qbridge_release.py``): ``x_embedder``,
  plain pre-LN ``blocks`` and ``final_layer.linear`` -> ``bridge_type="vit"``.
  For both bridges the raw codebook ``quantize.embedding.weight`` is laid out row-major on the square
  sqrt(K) x sqrt(K) grid; width, patch size, depth and MLP ratio are read from the tensors. The head count changes
  no shape; every official preset uses 4 (override with ``bridge_num_heads``).
* folded ("VQGAN format") checkpoints written by ``convert_fullvq2vq.py``: a plain LlamaGen VQ state dict whose
  ``quantize.embedding.weight`` is the projected codebook -> ``quantizer_type="vq"``.

l2 normalisation. The official bridge quantizers l2-normalise the raw codebook once at initialisation when trained
with ``--codebook-l2-norm`` and never in the forward: their search is Euclidean on the projected codebook. So
bridge checkpoints convert with ``use_l2_norm=False`` whatever the flag (recorded as ``init_l2_norm``). A folded
checkpoint is read by LlamaGen's ``VQModel``, which normalises latents and codes in the forward when its
``codebook_l2_norm`` is set; convert_fullvq2vq.py stores no args, so the converter asks for ``use_l2_norm`` unless
the checkpoint has args.

Not representable (refused with a ValueError): the linear / MLP "bridges" (``Qbridge-lin/*``) and bridges on a
non-square code grid.
"""

from __future__ import annotations

import logging
import math
import os

from ..models.modeling_fvq import FVQModel
from ..models.vqbridge import DIT_DEFAULT_NUM_CLASSES, QBRIDGE_MODELS
from ._common import (
    apply_overrides,
    check_output_dir,
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
DIT_MARKERS = (".pos_embed", ".y_embedder.", ".adaLN_modulation.")


def _square_side(codebook_size: int, patch: int) -> int:
    side = math.isqrt(codebook_size)
    if side * side != codebook_size or side % patch:
        raise ValueError(
            f"The official VQBridge lays the codebook out on a square sqrt(K) x sqrt(K) grid cut into {patch} x "
            f"{patch} patches; codebook_size={codebook_size} has no such grid, so this checkpoint cannot be "
            "represented."
        )
    return side


def infer_bridge(
    state_dict: dict, codebook_size: int, args: dict | None = None, overrides: dict | None = None
) -> dict:
    """Bridge config (type, patch size, width, depth, MLP ratio; classes for the DiT bridge) of an FVQ bridge
    state dict; ``args`` are the stored training args (or {}), ``overrides`` the options the user passed."""
    args, overrides = args or {}, overrides or {}
    bridge_keys = sorted(k for k in state_dict if k.startswith(BRIDGE + "."))
    proj = state_dict.get(f"{BRIDGE}.x_embedder.proj.weight")
    if proj is None:
        raise ValueError(
            "This FVQ checkpoint's quantize.qbridge is not a transformer VQBridge (no quantize.qbridge.x_embedder.proj;"
            f" keys: {bridge_keys[:6]}); the linear / MLP bridges (Qbridge-lin/*) cannot be represented."
        )
    hidden, _, patch, patch_w = (int(s) for s in proj.shape)
    if patch != patch_w:
        raise ValueError(f"Non-square bridge patches {patch}x{patch_w} cannot be represented.")
    side = _square_side(codebook_size, patch)
    depth = count_indexed(state_dict, f"{BRIDGE}.blocks")
    fc1 = require(state_dict, f"{BRIDGE}.blocks.0.mlp.fc1.weight", "bridge_mlp_ratio", LAYOUT)
    config = dict(
        bridge_type="vit",
        bridge_patch_size=patch,
        bridge_hidden_size=hidden,
        bridge_depth=depth,
        bridge_num_heads=4,
        bridge_mlp_ratio=fc1.shape[0] / hidden,
        bridge_num_classes=0,
    )
    if not any(marker in key for key in bridge_keys for marker in DIT_MARKERS):
        return config
    # ---- the DiT bridge
    config["bridge_type"] = "dit"
    pos = require(state_dict, f"{BRIDGE}.pos_embed", "the DiT bridge's token grid", LAYOUT)
    if tuple(pos.shape) != (1, (side // patch) ** 2, hidden):
        raise ValueError(
            f"quantize.qbridge.pos_embed has shape {tuple(pos.shape)}; a codebook of {codebook_size} codes in "
            f"{patch} x {patch} patches of width {hidden} needs (1, {(side // patch) ** 2}, {hidden})."
        )
    rows = int(
        require(state_dict, f"{BRIDGE}.y_embedder.embedding_table.weight", "the conditioning", LAYOUT).shape[
            0
        ]
    )
    preset = QBRIDGE_MODELS.get(str(args.get("QB_type", "")))
    if preset is not None and preset[:3] != (hidden, patch, depth):
        raise ValueError(
            f"The stored args say QB_type={args['QB_type']!r} (width {preset[0]}, patch {preset[1]}, depth "
            f"{preset[2]}), but the bridge tensors have width {hidden}, patch {patch}, depth {depth}. The args do "
            "not describe these weights; fix the checkpoint's args."
        )
    if "is_uncondition" in args:
        unconditional = bool(args["is_uncondition"])
        if unconditional and rows != 1:
            raise ValueError(
                f"The stored args say is_uncondition=True, but quantize.qbridge.y_embedder.embedding_table has {rows} "
                "rows (an unconditional bridge has 1)."
            )
    else:
        unconditional = rows == 1  # one row: the label is always 0, whatever the bridge was called
    if unconditional:
        if rows != 1:
            raise ValueError(f"An unconditional DiT bridge has a 1-row embedding_table, this one has {rows}.")
        config.update(bridge_num_classes=0, bridge_class_dropout_prob=0.0)
        return config
    if "bridge_num_classes" in overrides:
        num_classes = int(overrides["bridge_num_classes"])
        if rows not in (num_classes, num_classes + 1):
            raise ValueError(
                f"bridge_num_classes={num_classes} does not fit the {rows}-row embedding_table (num_classes rows, "
                "+1 null row when trained with label dropout)."
            )
        if rows == num_classes:
            dropout = 0.0
        elif "bridge_class_dropout_prob" in overrides:
            dropout = float(overrides["bridge_class_dropout_prob"])
        elif preset is not None:
            dropout = preset[3]
        else:
            raise ValueError(
                "This class-conditional DiT bridge has a null row (label dropout), but its probability is not stored: "
                "pass bridge_class_dropout_prob (--bridge-class-dropout-prob; the official presets use 0.1, "
                "'-cdp-' presets their value). It only matters for further training."
            )
    elif preset is not None:  # the official training scripts always store QB_type
        dropout = preset[3]
        num_classes = preset[4] or int(args.get("num_classes") or DIT_DEFAULT_NUM_CLASSES)
        if rows != num_classes + int(dropout > 0):
            raise ValueError(
                f"The stored args (QB_type={args['QB_type']!r}) give {num_classes} classes with label dropout "
                f"{dropout}, i.e. {num_classes + int(dropout > 0)} conditioning rows, but embedding_table has {rows}. "
                "Pass bridge_num_classes (--bridge-num-classes) and bridge_class_dropout_prob."
            )
    else:
        raise ValueError(
            f"This DiT bridge is class-conditional ({rows}-row quantize.qbridge.y_embedder.embedding_table) and the "
            "checkpoint stores no training args, so its class count cannot be read from it: pass "
            f"bridge_num_classes (--bridge-num-classes {rows - 1} if it was trained with label dropout, as every "
            f"official preset, with --bridge-class-dropout-prob; --bridge-num-classes {rows} if without)."
        )
    config.update(bridge_num_classes=num_classes, bridge_class_dropout_prob=dropout)
    return config


def convert_fvq(
    checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    fold: bool = False,
    state_dict_key: str | None = None,
    ema: bool = False,
    **config_overrides,
) -> FVQModel:
    """Convert an official FVQ checkpoint (DiT or ViT bridge, or folded) to an ``FVQModel``.

    Args:
        checkpoint_path: ``.pt``/``.pth`` (loaded with ``weights_only=True``) or ``.safetensors`` file.
        output_dir: When given, ``save_pretrained`` output (config.json + safetensors) and a model card go here.
        fold: For a bridge checkpoint, return (and save) the folded inference model (``quantizer_type="vq"``,
            the projected codebook computed once) instead of the trainable bridge model. Refused for a
            class-conditional DiT bridge (one codebook per class).
        state_dict_key: Entry of the checkpoint dict holding the weights (default: "model", then "state_dict").
        ema: Convert the EMA weights (``checkpoint["ema"]``, what the official evaluation scripts take when present).
        **config_overrides: ``FVQModel`` config values that replace the inferred / default ones, e.g.
            ``use_l2_norm=False`` for a folded checkpoint without stored args, ``bridge_num_classes=1000`` for a
            class-conditional DiT bridge without stored args, ``bridge_num_heads=8``.

    Returns:
        The converted ``FVQModel`` in eval mode.
    """
    if output_dir is not None:
        check_output_dir(output_dir)
    state_dict, args = load_source_state_dict(checkpoint_path, state_dict_key, ema)
    config = infer_backbone(state_dict, LAYOUT)
    config["codebook_size"] = int(
        require(state_dict, "quantize.embedding.weight", "codebook_size", LAYOUT).shape[0]
    )
    has_bridge = any(k.startswith(BRIDGE + ".") for k in state_dict)
    l2 = args.get("codebook_l2_norm")
    if has_bridge:
        config.update(
            quantizer_type="vqbridge",
            **infer_bridge(state_dict, config["codebook_size"], args, config_overrides),
        )
        # the official bridge quantizers normalise the raw codebook at init only; the search is Euclidean
        config.update(use_l2_norm=False, init_l2_norm=bool(l2))
    else:
        config["quantizer_type"] = "vq"
        if l2 is None and "use_l2_norm" not in config_overrides:
            raise ValueError(
                "This folded FVQ checkpoint stores no training args, so whether LlamaGen's VQModel searches it with "
                "l2-normalised codes (codebook_l2_norm) cannot be read from it: pass use_l2_norm (--use-l2-norm "
                "false for FVQ trained as its recipes scripts/recon/FVQ-*.sh, without --codebook-l2-norm; "
                "--use-l2-norm true if it was trained with --codebook-l2-norm)."
            )
        config["use_l2_norm"] = bool(l2)
    config.update(
        beta=float(args.get("commit_loss_beta", 0.25)),
        entropy_loss_weight=float(args.get("entropy_loss_ratio", 0.0)),
        norm_num_groups=32,
    )
    config = apply_overrides(config, config_overrides, FVQModel)
    kind = f"{config.get('bridge_type')} bridge" if has_bridge else "folded"
    logger.info("FVQ config (%s): %s", kind, config)
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
