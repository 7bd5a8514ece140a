"""Official VQGAN-LC checkpoints (``vqgan-gpt-lc/models/models_vq.py``) -> ``VQGANLCModel``, and its frozen feature
codebook file (a (K, F) tensor saved with ``torch.save``) -> a safetensors codebook for ``load_codebook``.

Source layout (saved as ``{"state_dict" | "model": state_dict, "opt_ae", ..., "args"}``): the taming VQGAN encoder /
decoder, ``quant_conv``, ``post_quant_conv``, the frozen codebook ``tok_embeddings.weight`` (K, F) (an Embedding
weight, so it is in the state dict: 100000 x 768 for the released model), the projector
``codebook_projection`` Linear(F -> D), plus the training-only ``discriminator.*`` and ``perceptual_loss.*``
(dropped).

The taming network is the same computation as ours (``fullvq_hf.models.autoencoder``) under other names:

    ours                                     taming
    {enc}.conv_blocks.{i}.res.{j}            encoder.down.{i}.block.{j}
    {enc}.conv_blocks.{i}.attn.{j}           encoder.down.{i}.attn.{j}
    {enc}.conv_blocks.{i}.downsample.conv    encoder.down.{i}.downsample.conv
    {dec}.conv_blocks.{i}.res.{j}            decoder.up.{n-1-i}.block.{j}    (taming indexes up-levels by
    {dec}.conv_blocks.{i}.attn.{j}           decoder.up.{n-1-i}.attn.{j}      resolution, highest first, and
    {dec}.conv_blocks.{i}.upsample.conv      decoder.up.{n-1-i}.upsample.conv runs them from n-1 down to 0)
    {enc,dec}.mid.{0,1,2}                    {encoder,decoder}.mid.{block_1,attn_1,block_2}
    quantize.frozen_codebook                 tok_embeddings.weight
    quantize.codebook_projection             codebook_projection

Res blocks (GroupNorm(32, eps 1e-6) -> swish -> 3x3 conv, twice, 1x1 ``nin_shortcut`` when channels change, no
time embedding), attention (GroupNorm, 1x1 q/k/v, single head, scale C^-1/2, 1x1 ``proj_out``, residual),
downsampling (pad (0,1,0,1) + stride-2 3x3 conv), upsampling (nearest x2 + 3x3 conv) and the ends (``conv_in``;
``norm_out`` -> swish -> ``conv_out``) match one for one.

Representable only when attention sits in the lowest-resolution level (``attn_resolutions`` = [256 / 2**(n-1)]),
as in the released f16 model (``vq-f16.yaml``: ch_mult 1,1,2,2,4, attention at 16). The f8 config
(``vq-f8.yaml``: ch_mult 1,2,2,4 with attention at 16, a resolution it never reaches) has attention only in the
middle blocks, which this package's encoder/decoder cannot express: such checkpoints are refused. So are the EMA
quantizer, the MLP projector (``use_cblinear=2``), no projector, and 768-d latents (which VQGAN-LC normalises).
"""

from __future__ import annotations

import logging
import os
import re

import torch

from ..models.modeling_vqgan_lc import VQGANLCModel, save_codebook
from ._common import (
    apply_overrides,
    check_output_dir,
    count_indexed,
    indexed_children,
    load_checkpoint,
    load_mapped_state_dict,
    load_source_state_dict,
    require,
    save_converted,
)

logger = logging.getLogger(__name__)

LAYOUT = "VQGAN-LC"
TRAINING_ONLY_PREFIXES = ("discriminator.", "perceptual_loss.")
_MID = {"0": "block_1", "1": "attn_1", "2": "block_2"}
_KIND = {"res": "block", "attn": "attn", "downsample": "downsample", "upsample": "upsample"}


def taming_key(key: str, num_levels: int) -> str:
    """The VQGAN-LC (taming) name of one of our ``VQGANLCModel`` state-dict keys."""
    if key == "quantize.frozen_codebook":
        return "tok_embeddings.weight"
    if key.startswith("quantize.codebook_projection."):
        return key[len("quantize.") :]
    m = re.match(r"^encoder\.conv_blocks\.(\d+)\.(res|attn|downsample)\.(.*)$", key)
    if m:
        level, kind, rest = m.groups()
        return f"encoder.down.{level}.{_KIND[kind]}.{rest}"
    m = re.match(r"^decoder\.conv_blocks\.(\d+)\.(res|attn|upsample)\.(.*)$", key)
    if m:
        level, kind, rest = m.groups()
        return f"decoder.up.{num_levels - 1 - int(level)}.{_KIND[kind]}.{rest}"
    m = re.match(r"^(encoder|decoder)\.mid\.([012])\.(.*)$", key)
    if m:
        part, index, rest = m.groups()
        return f"{part}.mid.{_MID[index]}.{rest}"
    return key  # conv_in, norm_out, conv_out, quant_conv, post_quant_conv


def _is_training_only(key: str) -> bool:
    return key.startswith(TRAINING_ONLY_PREFIXES)


def infer_config(state_dict: dict, args: dict) -> dict:
    """``VQGANLCModel`` config of a VQGAN-LC (taming-layout) state dict; ValueError for unsupported variants."""
    if (
        args.get("quantizer_type", "org") == "ema"
        or "cluster_size" in state_dict
        or "embed_avg" in state_dict
    ):
        raise ValueError(
            "VQGAN-LC's EMA quantizer (quantizer_type='ema') cannot be represented; only 'org' can."
        )
    if "codebook_projection.0.weight" in state_dict:
        raise ValueError(
            "VQGAN-LC's MLP codebook projector (use_cblinear=2) cannot be represented; only the linear one."
        )
    if "codebook_projection.weight" not in state_dict:
        raise ValueError(
            "This VQGAN-LC checkpoint has no codebook_projection.weight (use_cblinear=0): the codebook is used "
            "without a projector, which VQGANLCModel cannot represent."
        )
    n = count_indexed(state_dict, "encoder.down")
    if n == 0:
        require(state_dict, "encoder.down.0.block.0.conv1.weight", "the number of encoder levels", LAYOUT)
    enc_attn = sorted(i for i in range(n) if indexed_children(state_dict, f"encoder.down.{i}.attn"))
    dec_attn = sorted(i for i in range(n) if indexed_children(state_dict, f"decoder.up.{i}.attn"))
    if enc_attn != [n - 1] or dec_attn != [n - 1]:
        raise ValueError(
            f"Attention sits in encoder levels {enc_attn} and decoder up-levels {dec_attn}; this package's "
            f"encoder/decoder have it in the lowest-resolution level ({n - 1}) only (VQGAN-LC's f16 config). "
            "Checkpoints of other attn_resolutions (e.g. the f8 config, attention only in the middle blocks) "
            "cannot be represented."
        )
    codebook = require(state_dict, "tok_embeddings.weight", "codebook_size", LAYOUT)
    codebook_dim = int(require(state_dict, "quant_conv.weight", "codebook_dim", LAYOUT).shape[0])
    if codebook_dim == 768 and args.get("tuning_codebook", 0) != -1:
        raise ValueError(
            "With embed_dim=768 VQGAN-LC l2-normalises the latents before the search, which VQGANLCModel does not; "
            "this checkpoint cannot be represented."
        )
    rate_q = float(args.get("rate_q", 0.1))
    return dict(
        in_channels=int(require(state_dict, "encoder.conv_in.weight", "in_channels", LAYOUT).shape[1]),
        out_channels=int(require(state_dict, "decoder.conv_out.weight", "out_channels", LAYOUT).shape[0]),
        block_out_channels=tuple(
            int(
                require(
                    state_dict, f"encoder.down.{i}.block.0.conv1.weight", "block_out_channels", LAYOUT
                ).shape[0]
            )
            for i in range(n)
        ),
        layers_per_block=count_indexed(state_dict, "encoder.down.0.block"),
        latent_channels=int(
            require(state_dict, "encoder.conv_out.weight", "latent_channels", LAYOUT).shape[0]
        ),
        norm_num_groups=32,
        codebook_size=int(codebook.shape[0]),
        codebook_dim=codebook_dim,
        codebook_feature_dim=int(codebook.shape[1]),
        beta=rate_q,  # VQGAN-LC: rate_q * (mse(sg(z_q), z) + 0.33 * mse(z_q, sg(z)))
        codebook_loss_weight=0.33 * rate_q,
    )


def convert_vqgan_lc(
    checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    codebook: str | os.PathLike | None = None,
    state_dict_key: str | None = None,
    ema: bool = False,
    **config_overrides,
) -> VQGANLCModel:
    """Convert an official VQGAN-LC checkpoint to a ``VQGANLCModel`` (frozen codebook included).

    Args:
        checkpoint_path: ``.pth``/``.pt`` (loaded with ``weights_only=True``) or ``.safetensors`` file.
        output_dir: When given, ``save_pretrained`` output (config.json + safetensors) and a model card go here.
        codebook: A separate feature codebook file (the official ``.pth`` tensor, or a safetensors codebook) used
            instead of the checkpoint's ``tok_embeddings.weight`` (needed when the checkpoint lacks it).
        state_dict_key: Entry of the checkpoint dict holding the weights (default: "model", then "state_dict").
        ema: Convert ``checkpoint["ema"]``.
        **config_overrides: ``VQGANLCModel`` config values that replace the inferred / default ones.

    Returns:
        The converted ``VQGANLCModel`` in eval mode.
    """
    if output_dir is not None:
        check_output_dir(output_dir)
    state_dict, args = load_source_state_dict(checkpoint_path, state_dict_key, ema)
    if codebook is not None:
        if "tok_embeddings.weight" in state_dict:
            logger.info(
                "Using the codebook from %s instead of the checkpoint's tok_embeddings.weight.", codebook
            )
        state_dict["tok_embeddings.weight"] = load_codebook_source(codebook)
    elif "tok_embeddings.weight" not in state_dict:
        raise ValueError(
            "The checkpoint has no frozen codebook (tok_embeddings.weight); pass the codebook file with "
            "codebook=... (--codebook PATH)."
        )
    config = apply_overrides(infer_config(state_dict, args), config_overrides, VQGANLCModel)
    logger.info("VQGAN-LC config: %s", config)
    model = VQGANLCModel(**config)
    n = len(config["block_out_channels"])
    load_mapped_state_dict(
        model,
        state_dict,
        lambda key: taming_key(key, n),
        _is_training_only,
        describe=f"VQGANLCModel({config})",
    )
    model.eval()
    if output_dir is not None:
        # the official VQGAN-LC weights are not on the Hub: no base_model
        card = dict(source="vqgan-lc", base_model=None, checkpoint=os.path.basename(checkpoint_path))
        save_converted(model, output_dir, card)
    return model


# ---------------------------------------------------------------------------------------------------- codebook file
def load_codebook_source(path: str | os.PathLike) -> torch.Tensor:
    """A (K, F) feature codebook from the official ``.pth`` (a bare tensor) or a safetensors / dict file holding
    exactly one 2-D tensor (key ``"codebook"`` preferred). Returned as float32."""
    obj = load_checkpoint(path)
    if isinstance(obj, dict):
        if isinstance(obj.get("codebook"), torch.Tensor):
            obj = obj["codebook"]
        else:
            tensors = [v for v in obj.values() if isinstance(v, torch.Tensor) and v.ndim == 2]
            if len(tensors) != 1:
                raise ValueError(
                    f"{os.fspath(path)!r} holds {len(tensors)} 2-D tensors ({sorted(obj)[:6]}); expected the codebook "
                    "alone, as VQGAN-LC saves it (torch.save(tensor))."
                )
            obj = tensors[0]
    if not isinstance(obj, torch.Tensor) or obj.ndim != 2 or not obj.is_floating_point():
        got = (
            f"a tensor of shape {tuple(obj.shape)} and dtype {obj.dtype}"
            if isinstance(obj, torch.Tensor)
            else type(obj).__name__
        )
        raise ValueError(f"Expected a float codebook tensor (K, F) in {os.fspath(path)!r}, got {got}.")
    return obj.float()


def convert_vqgan_lc_codebook(
    codebook_path: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    *,
    encoder_name: str | None = None,
) -> torch.Tensor:
    """Convert VQGAN-LC's frozen codebook file (e.g. 100000 x 768) to a safetensors codebook.

    Args:
        codebook_path: The official ``.pth`` file (``torch.save`` of the (K, F) tensor), loaded weights_only.
        output_path: A ``.safetensors`` file, or a directory that receives ``codebook.safetensors``.
        encoder_name: Vision encoder the features came from, recorded in the metadata (VQGAN-LC: CLIP ViT-L/14).

    Returns:
        The codebook (K, F), float32; install it with ``VQGANLCModel.load_codebook``.
    """
    codebook = load_codebook_source(codebook_path)
    if not torch.isfinite(codebook).all():
        raise ValueError(f"The codebook in {os.fspath(codebook_path)!r} contains NaN or inf values.")
    if output_path is not None:
        output_path = os.fspath(output_path)
        if not output_path.endswith(".safetensors"):
            os.makedirs(output_path, exist_ok=True)
        meta = {"source": "VQGAN-LC", "original_file": os.path.basename(os.fspath(codebook_path))}
        written = save_codebook(codebook, output_path, encoder_name=encoder_name, metadata=meta)
        logger.info("Wrote the %d x %d codebook to %s", codebook.shape[0], codebook.shape[1], written)
    return codebook
