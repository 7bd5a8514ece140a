"""LlamaGen class-to-image GPT checkpoints (``c2i_{B,L}_256.pt``, ``c2i_{B,L,XL,XXL,3B}_384.pt``) ->
``LlamaGenForConditionalGeneration``.

The official layout (``autoregressive/models/gpt.py``), per layer i::

    tok_embeddings.weight                    (vocab, D)
    cls_embedding.embedding_table.weight     (num_classes + 1, D)   the last row is the null class
    layers.i.attention.wqkv.weight           (3D, D)
    layers.i.attention.wo.weight             (D, D)
    layers.i.feed_forward.w1/w3.weight       (F, D);  w2: (D, F)
    layers.i.attention_norm.weight, layers.i.ffn_norm.weight, norm.weight   (D,)
    output.weight                            (vocab, D)

Our module names are the same, so the key map is the identity once DDP / FSDP / torch.compile prefixes are
stripped. Shapes give the vocabulary, width, depth, classes and SwiGLU width; the number of heads (not visible in
any shape) comes from LlamaGen's preset table by (depth, width) (else its usual head size 64), and the token grid from the checkpoint's training
args (``image_size / downsample_size``) or the file name (``_256`` -> 16 x 16, ``_384`` -> 24 x 24), else
``grid_size=`` must be given.
"""

from __future__ import annotations

import logging
import os
import re

from ..models.configuration_llamagen import LLAMAGEN_PRESETS, LlamaGenConfig
from ..models.modeling_llamagen import LlamaGenForConditionalGeneration
from ._common import (
    check_output_dir,
    count_indexed,
    load_mapped_state_dict,
    load_source_state_dict,
    require,
    save_converted,
)

logger = logging.getLogger(__name__)

LAYOUT = "LlamaGen c2i GPT"
DOWNSAMPLE = 16  # LlamaGen's c2i GPTs are trained on VQ-16 tokens
HEAD_DIM = 64  # the head size of every LlamaGen c2i preset but GPT-3B (100)


def is_training_only(key: str) -> bool:
    """Tensors that are not weights: a KV cache or masks some scripts leave in the state dict."""
    return ".kv_cache." in key or key in ("freqs_cis", "causal_mask")


def infer_grid_size(checkpoint_path: str | os.PathLike, args: dict) -> int | None:
    if args.get("image_size") and args.get("downsample_size"):
        return int(args["image_size"]) // int(args["downsample_size"])
    match = re.search(
        r"_(\d{3,4})(?:\D*)$", os.path.splitext(os.path.basename(os.fspath(checkpoint_path)))[0]
    )
    return int(match.group(1)) // DOWNSAMPLE if match else None


def convert_llamagen_gpt(
    checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    state_dict_key: str | None = None,
    ema: bool = False,
    **config_overrides,
) -> LlamaGenForConditionalGeneration:
    """Convert a LlamaGen class-to-image GPT checkpoint.

    Args:
        checkpoint_path: ``.pt``/``.pth`` (loaded with ``weights_only=True``) or ``.safetensors``.
        output_dir: When given, ``save_pretrained`` output (config.json + model.safetensors) and a model card.
        state_dict_key / ema: Which weights of a training checkpoint (default "model"; ``ema=True`` for "ema").
        **config_overrides: ``LlamaGenConfig`` fields, e.g. ``grid_size=24`` or ``num_attention_heads=16`` for a
            depth/width pair outside LlamaGen's presets.
    """
    if output_dir is not None:
        check_output_dir(output_dir)
    state_dict, args = load_source_state_dict(checkpoint_path, state_dict_key, ema)
    embed = require(state_dict, "tok_embeddings.weight", "vocab_size and hidden_size", LAYOUT)
    classes = require(state_dict, "cls_embedding.embedding_table.weight", "num_classes", LAYOUT)
    w1 = require(state_dict, "layers.0.feed_forward.w1.weight", "intermediate_size", LAYOUT)
    if "cls_embedding.cap_proj.fc1.weight" in state_dict:
        raise ValueError(
            "This is a text-to-image (t2i) LlamaGen checkpoint; only class-to-image GPTs convert."
        )
    vocab_size, hidden_size = map(int, embed.shape)
    depth = count_indexed(state_dict, "layers")
    config = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=depth,
        intermediate_size=int(w1.shape[0]),
        num_classes=int(classes.shape[0]) - 1,  # trained with label dropout: the last row is the null class
        class_dropout_prob=float(args.get("class_dropout_prob", 0.1)),
        token_dropout_prob=float(args.get("token_dropout_p", 0.1)),
        resid_dropout_prob=float(args.get("dropout_p", 0.1)),
        ffn_dropout_prob=float(args.get("dropout_p", 0.1)),
    )
    presets = {(layers, hidden): (name, heads) for name, (layers, heads, hidden) in LLAMAGEN_PRESETS.items()}
    if (depth, hidden_size) in presets:
        name, config["num_attention_heads"] = presets[(depth, hidden_size)]
        logger.info("%s: %d layers x %d wide is LlamaGen's %s", checkpoint_path, depth, hidden_size, name)
    elif "num_attention_heads" not in config_overrides:
        if hidden_size % HEAD_DIM:
            raise ValueError(
                f"{depth} layers x {hidden_size} wide is not one of LlamaGen's presets {sorted(LLAMAGEN_PRESETS)} "
                f"and not a multiple of its usual head size {HEAD_DIM}, so the number of heads cannot be inferred; "
                "pass num_attention_heads=... (--num-attention-heads)."
            )
        config["num_attention_heads"] = hidden_size // HEAD_DIM
        logger.warning(
            "%d layers x %d wide is not a LlamaGen preset; assuming its usual head size %d (%d heads). Pass "
            "num_attention_heads=... if the model was trained otherwise: the weights load either way, the logits "
            "do not match.",
            depth,
            hidden_size,
            HEAD_DIM,
            hidden_size // HEAD_DIM,
        )
    grid = infer_grid_size(checkpoint_path, args)
    if grid is not None:
        config["grid_size"] = grid
    elif "grid_size" not in config_overrides:
        raise ValueError(
            f"Cannot tell the token grid of {os.fspath(checkpoint_path)!r} (no image_size/downsample_size in its args, "
            "no _256/_384 in its name); pass grid_size=16 for 256 px or 24 for 384 px (--grid-size)."
        )
    unknown = set(config_overrides) - set(LlamaGenConfig().to_dict()) - {"grid_size"}
    if unknown:
        raise ValueError(f"Unknown LlamaGenConfig option(s) {sorted(unknown)}.")
    config.update(config_overrides)
    model = LlamaGenForConditionalGeneration(LlamaGenConfig(**config))
    load_mapped_state_dict(
        model,
        state_dict,
        lambda key: key,
        is_training_only,
        describe=f"LlamaGenForConditionalGeneration({config})",
    )
    model.eval()
    if output_dir is not None:
        card = dict(
            source="llamagen-gpt",
            source_repo="FoundationVision/LlamaGen",
            license="mit",  # LlamaGen's LICENSE
            checkpoint=os.path.basename(checkpoint_path),
        )
        save_converted(model, output_dir, card)
    return model
