"""Key map between this package's tokenizer (LlamaGen names) and a stock diffusers ``VQModel``.

The two networks are the same computation: LlamaGen's level ``i`` of ``res`` + ``attn`` blocks is diffusers'
``(Attn)DownEncoderBlock2D`` / ``(Attn)UpDecoderBlock2D`` number ``i`` (both list decoder levels lowest resolution
first), Res-Attn-Res is ``UNetMidBlock2D``, 1x1-conv attention projections are diffusers' linear ``to_q/k/v/out``
(single head: ``attention_head_dim`` = channels), and both downsample with pad (0, 1, 0, 1) + stride-2 conv.
"""

from __future__ import annotations

import re

import torch

_RENAMES = [
    # (pattern on our key, replacement in diffusers' key); applied in order, first match wins per rule
    (r"^(encoder)\.conv_blocks\.(\d+)\.res\.", r"\1.down_blocks.\2.resnets."),
    (r"^(encoder)\.conv_blocks\.(\d+)\.attn\.", r"\1.down_blocks.\2.attentions."),
    (r"^(encoder)\.conv_blocks\.(\d+)\.downsample\.", r"\1.down_blocks.\2.downsamplers.0."),
    (r"^(decoder)\.conv_blocks\.(\d+)\.res\.", r"\1.up_blocks.\2.resnets."),
    (r"^(decoder)\.conv_blocks\.(\d+)\.attn\.", r"\1.up_blocks.\2.attentions."),
    (r"^(decoder)\.conv_blocks\.(\d+)\.upsample\.", r"\1.up_blocks.\2.upsamplers.0."),
    (r"^(encoder|decoder)\.mid\.0\.", r"\1.mid_block.resnets.0."),
    (r"^(encoder|decoder)\.mid\.1\.", r"\1.mid_block.attentions.0."),
    (r"^(encoder|decoder)\.mid\.2\.", r"\1.mid_block.resnets.1."),
    (r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out."),
    (r"\.nin_shortcut\.", ".conv_shortcut."),
    (r"(attentions\.\d+)\.norm\.", r"\1.group_norm."),
    (r"(attentions\.\d+)\.q\.", r"\1.to_q."),
    (r"(attentions\.\d+)\.k\.", r"\1.to_k."),
    (r"(attentions\.\d+)\.v\.", r"\1.to_v."),
    (r"(attentions\.\d+)\.proj_out\.", r"\1.to_out.0."),
]


def diffusers_vqmodel_config(config) -> dict:
    """The ``VQModel`` config of a plain-codebook tokenizer config (a dict or FrozenDict)."""
    n = len(config["block_out_channels"])
    return dict(
        in_channels=config["in_channels"],
        out_channels=config["out_channels"],
        down_block_types=("DownEncoderBlock2D",) * (n - 1) + ("AttnDownEncoderBlock2D",),
        up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * (n - 1),
        block_out_channels=tuple(config["block_out_channels"]),
        layers_per_block=config["layers_per_block"],
        latent_channels=config["latent_channels"],
        num_vq_embeddings=config["codebook_size"],
        vq_embed_dim=config["codebook_dim"],
        norm_num_groups=config["norm_num_groups"],
        sample_size=config.get("sample_size", 256),
        scaling_factor=config.get("scaling_factor", 1.0),
    )


def fullvq_to_diffusers_key(key: str) -> str:
    for pattern, repl in _RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def fullvq_to_diffusers_state_dict(state_dict: dict[str, torch.Tensor]) -> dict:
    """Rename every key and turn 1x1-conv attention weights (C, C, 1, 1) into linear weights (C, C)."""
    out = {}
    for key, value in state_dict.items():
        new = fullvq_to_diffusers_key(key)
        if re.search(r"attentions\.\d+\.to_(q|k|v|out\.0)\.weight$", new) and value.ndim == 4:
            value = value[:, :, 0, 0]
        out[new] = value.clone()
    return out
