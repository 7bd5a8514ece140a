"""Converters of official checkpoints (LlamaGen VQ, FVQ, VQGAN-LC).

The official state dicts are built here from the published architectures (LlamaGen ``vq_model.py``, FVQ
``vq_model_qbridge_release.py`` + ``qbridge_ViT.py``, VQGAN-LC ``models_vq.py`` + taming ``encoder_decoder.py``),
with tiny channels and random values, and saved the way the official scripts save them. Each builder yields
``(official key, our key or None when the converter must drop it, shape)``: the expected key map is written from
the architectures, independently of the converters' own maps.
"""

import argparse
import logging
import math
import pathlib
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_nearest_codes
from safetensors.torch import save_file

from fullvq_hf import FVQModel, VQGANLCModel
from fullvq_hf.cli import main as cli_main
from fullvq_hf.convert import (
    CONVERTERS,
    convert_fvq,
    convert_llamagen_vq,
    convert_vqgan_lc,
    convert_vqgan_lc_codebook,
)

CH, CH_MULT, Z, K, D = 32, (1, 2), 32, 64, 8  # GroupNorm(32) needs channels in multiples of 32


# ---------------------------------------------------------------------------------------------------- layouts
def _conv(src, dst, cout, cin, k):
    yield f"{src}.weight", f"{dst}.weight", (cout, cin, k, k)
    yield f"{src}.bias", f"{dst}.bias", (cout,)


def _norm(src, dst, c):
    yield f"{src}.weight", f"{dst}.weight", (c,)
    yield f"{src}.bias", f"{dst}.bias", (c,)


def _resblock(src, dst, cin, cout):
    yield from _norm(f"{src}.norm1", f"{dst}.norm1", cin)
    yield from _conv(f"{src}.conv1", f"{dst}.conv1", cout, cin, 3)
    yield from _norm(f"{src}.norm2", f"{dst}.norm2", cout)
    yield from _conv(f"{src}.conv2", f"{dst}.conv2", cout, cout, 3)
    if cin != cout:
        yield from _conv(f"{src}.nin_shortcut", f"{dst}.nin_shortcut", cout, cin, 1)


def _attn(src, dst, c):
    yield from _norm(f"{src}.norm", f"{dst}.norm", c)
    for name in ("q", "k", "v", "proj_out"):
        yield from _conv(f"{src}.{name}", f"{dst}.{name}", c, c, 1)


def llamagen_layout(ch=CH, ch_mult=CH_MULT, num_res_blocks=1, z=Z, codebook_size=K, dim=D):
    """LlamaGen VQModel: encoder levels with ``res`` (+ ``attn`` at the last level) and ``downsample``; decoder
    levels lowest resolution first with ``num_res_blocks + 1`` blocks and ``upsample``. Our names are LlamaGen's."""
    n = len(ch_mult)
    out = []
    out += _conv("encoder.conv_in", "encoder.conv_in", ch, 3, 3)
    block_in = ch
    for i in range(n):
        block_out = ch * ch_mult[i]
        for j in range(num_res_blocks):
            name = f"encoder.conv_blocks.{i}.res.{j}"
            out += _resblock(name, name, block_in, block_out)
            block_in = block_out
            if i == n - 1:
                out += _attn(
                    f"encoder.conv_blocks.{i}.attn.{j}", f"encoder.conv_blocks.{i}.attn.{j}", block_in
                )
        if i != n - 1:
            name = f"encoder.conv_blocks.{i}.downsample.conv"
            out += _conv(name, name, block_in, block_in, 3)
    for part in ("encoder", "decoder"):
        c = block_in if part == "encoder" else ch * ch_mult[-1]
        if part == "decoder":
            out += _conv("decoder.conv_in", "decoder.conv_in", c, z, 3)
        out += _resblock(f"{part}.mid.0", f"{part}.mid.0", c, c)
        out += _attn(f"{part}.mid.1", f"{part}.mid.1", c)
        out += _resblock(f"{part}.mid.2", f"{part}.mid.2", c, c)
        if part == "encoder":
            out += _norm("encoder.norm_out", "encoder.norm_out", c)
            out += _conv("encoder.conv_out", "encoder.conv_out", z, c, 3)
    block_in = ch * ch_mult[-1]
    for pos, i in enumerate(reversed(range(n))):
        block_out = ch * ch_mult[i]
        for j in range(num_res_blocks + 1):
            name = f"decoder.conv_blocks.{pos}.res.{j}"
            out += _resblock(name, name, block_in, block_out)
            block_in = block_out
            if i == n - 1:
                out += _attn(
                    f"decoder.conv_blocks.{pos}.attn.{j}", f"decoder.conv_blocks.{pos}.attn.{j}", block_in
                )
        if i != 0:
            name = f"decoder.conv_blocks.{pos}.upsample.conv"
            out += _conv(name, name, block_in, block_in, 3)
    out += _norm("decoder.norm_out", "decoder.norm_out", block_in)
    out += _conv("decoder.conv_out", "decoder.conv_out", 3, block_in, 3)
    out += _conv("quant_conv", "quant_conv", dim, z, 1)
    out += _conv("post_quant_conv", "post_quant_conv", z, dim, 1)
    out.append(("quantize.embedding.weight", "quantize.embedding.weight", (codebook_size, dim)))
    used = 65536 if codebook_size < 65536 else codebook_size + 1  # FVQ's usage buffer; LlamaGen's is 65536
    out.append(("quantize.codebook_used", None, (used,)))
    return out


def bridge_layout(dim=D, patch=2, hidden=32, depth=2, mlp_ratio=2.0):
    """FVQ qbridge_ViT.VQBridge: timm PatchEmbed, ViT blocks (timm Attention qkv/proj, Mlp fc1/fc2; LayerNorms
    without affine), final_layer.linear. Same names in our VQBridge."""
    out, p = [], "quantize.qbridge"
    out += _conv(f"{p}.x_embedder.proj", f"{p}.x_embedder.proj", hidden, dim, patch)
    mlp = int(hidden * mlp_ratio)
    for i in range(depth):
        b = f"{p}.blocks.{i}"
        for name, shape in (("attn.qkv", (3 * hidden, hidden)), ("attn.proj", (hidden, hidden))):
            out += [
                (f"{b}.{name}.weight", f"{b}.{name}.weight", shape),
                (f"{b}.{name}.bias", f"{b}.{name}.bias", shape[:1]),
            ]
        for name, shape in (("mlp.fc1", (mlp, hidden)), ("mlp.fc2", (hidden, mlp))):
            out += [
                (f"{b}.{name}.weight", f"{b}.{name}.weight", shape),
                (f"{b}.{name}.bias", f"{b}.{name}.bias", shape[:1]),
            ]
    out += [
        (f"{p}.final_layer.linear.weight", f"{p}.final_layer.linear.weight", (patch * patch * dim, hidden)),
        (f"{p}.final_layer.linear.bias", f"{p}.final_layer.linear.bias", (patch * patch * dim,)),
    ]
    return out


def taming_layout(
    ch=CH,
    ch_mult=CH_MULT,
    num_res_blocks=1,
    z=Z,
    resolution=16,
    attn_resolutions=(8,),
    codebook_size=K,
    feature_dim=16,
    dim=4,
):
    """VQGAN-LC models_vq.VQModel on taming's Encoder/Decoder: ``down.{i}.block/attn`` (attention where the current
    resolution is in ``attn_resolutions``), ``mid.block_1/attn_1/block_2``, ``up.{i}`` indexed by level (built
    from the lowest resolution and prepended), ``tok_embeddings`` + ``codebook_projection``, and the training-only
    discriminator / LPIPS weights."""
    n, out = len(ch_mult), []
    out += _conv("encoder.conv_in", "encoder.conv_in", ch, 3, 3)
    block_in, res = ch, resolution
    for i in range(n):
        block_out = ch * ch_mult[i]
        for j in range(num_res_blocks):
            out += _resblock(
                f"encoder.down.{i}.block.{j}", f"encoder.conv_blocks.{i}.res.{j}", block_in, block_out
            )
            block_in = block_out
            if res in attn_resolutions:
                out += _attn(f"encoder.down.{i}.attn.{j}", f"encoder.conv_blocks.{i}.attn.{j}", block_in)
        if i != n - 1:
            out += _conv(
                f"encoder.down.{i}.downsample.conv",
                f"encoder.conv_blocks.{i}.downsample.conv",
                block_in,
                block_in,
                3,
            )
            res //= 2
    for part in ("encoder", "decoder"):
        c = block_in if part == "encoder" else ch * ch_mult[-1]
        if part == "decoder":
            out += _conv("decoder.conv_in", "decoder.conv_in", c, z, 3)
        out += _resblock(f"{part}.mid.block_1", f"{part}.mid.0", c, c)
        out += _attn(f"{part}.mid.attn_1", f"{part}.mid.1", c)
        out += _resblock(f"{part}.mid.block_2", f"{part}.mid.2", c, c)
        if part == "encoder":
            out += _norm("encoder.norm_out", "encoder.norm_out", c)
            out += _conv("encoder.conv_out", "encoder.conv_out", z, c, 3)
    block_in, res = ch * ch_mult[-1], resolution // 2 ** (n - 1)
    for pos, i in enumerate(reversed(range(n))):  # ours: position in run order; taming: up[i] (prepended)
        block_out = ch * ch_mult[i]
        for j in range(num_res_blocks + 1):
            out += _resblock(
                f"decoder.up.{i}.block.{j}", f"decoder.conv_blocks.{pos}.res.{j}", block_in, block_out
            )
            block_in = block_out
            if res in attn_resolutions:
                out += _attn(f"decoder.up.{i}.attn.{j}", f"decoder.conv_blocks.{pos}.attn.{j}", block_in)
        if i != 0:
            out += _conv(
                f"decoder.up.{i}.upsample.conv",
                f"decoder.conv_blocks.{pos}.upsample.conv",
                block_in,
                block_in,
                3,
            )
            res *= 2
    out += _norm("decoder.norm_out", "decoder.norm_out", block_in)
    out += _conv("decoder.conv_out", "decoder.conv_out", 3, block_in, 3)
    out += _conv("quant_conv", "quant_conv", dim, z, 1)
    out += _conv("post_quant_conv", "post_quant_conv", z, dim, 1)
    out.append(("tok_embeddings.weight", "quantize.frozen_codebook", (codebook_size, feature_dim)))
    out.append(("codebook_projection.weight", "quantize.codebook_projection.weight", (dim, feature_dim)))
    out.append(("codebook_projection.bias", "quantize.codebook_projection.bias", (dim,)))
    out += [
        ("discriminator.main.0.weight", None, (64, 3, 4, 4)),
        ("discriminator.main.0.bias", None, (64,)),
        ("perceptual_loss.scaling_layer.shift", None, (1, 3, 1, 1)),
        ("perceptual_loss.net.slice1.0.weight", None, (64, 3, 3, 3)),
        ("perceptual_loss.lin0.model.1.weight", None, (1, 64, 1, 1)),
    ]
    return out


def random_state_dict(layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {src: torch.randn(shape, generator=g) * 0.2 for src, _, shape in layout}


def training_checkpoint(state_dict, key="model", **args):
    """Saved like LlamaGen's / FVQ's vq_train (and VQGAN-LC's save_model_vqgan with key="state_dict")."""
    return {
        key: state_dict,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
        "discriminator": {"main.0.weight": torch.zeros(4, 3, 4, 4)},
        "steps": 1000,
        "args": argparse.Namespace(vq_model="VQ-16", codebook_size=K, **args),
    }


def assert_every_tensor_landed(model, layout, source):
    """Each official tensor is in the expected parameter of ours, and every one of ours came from one."""
    ours = model.state_dict()
    expected = {dst: src for src, dst, _ in layout if dst is not None}
    assert set(expected) == set(ours)
    for dst, src in expected.items():
        assert torch.equal(ours[dst], source[src].to(ours[dst].dtype)), f"{src} -> {dst}"


def image(f, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 2 * f, 2 * f, generator=g) * 2 - 1


# ---------------------------------------------------------------------------------------------------- LlamaGen
def test_llamagen_vq_every_tensor_and_l2_search(tmp_path):
    layout = llamagen_layout()
    source = random_state_dict(layout)
    path = tmp_path / "vq_ds16_c2i.pt"
    torch.save(training_checkpoint(source, codebook_l2_norm=True), path)
    model = convert_llamagen_vq(path)
    cfg = model.config
    assert (cfg.quantizer_type, cfg.use_l2_norm, cfg.codebook_size, cfg.codebook_dim) == ("vq", True, K, D)
    assert (tuple(cfg.block_out_channels), cfg.layers_per_block, cfg.latent_channels) == ((32, 64), 1, Z)
    assert_every_tensor_landed(model, layout, source)
    x = image(model.downsample_factor)
    ids = model.tokenize(x)
    # LlamaGen's search: nearest l2-normalised code to the l2-normalised latent
    z = F.normalize(model.encode(x).latents.permute(0, 2, 3, 1).reshape(-1, D), dim=-1)
    codes = F.normalize(source["quantize.embedding.weight"], dim=-1)
    assert_nearest_codes(ids, z, codes)
    assert model.detokenize(ids).shape == x.shape


def test_llamagen_vq_ddp_prefix_ema_and_safetensors(tmp_path):
    layout = llamagen_layout(ch_mult=(1, 1, 2), num_res_blocks=2)
    source, ema = random_state_dict(layout, 0), random_state_dict(layout, 1)
    path = tmp_path / "ddp.pt"
    torch.save({"model": {f"module.{k}": v for k, v in source.items()}, "ema": ema}, path)
    assert_every_tensor_landed(convert_llamagen_vq(path, use_l2_norm=True), layout, source)
    model = convert_llamagen_vq(path, ema=True, use_l2_norm=True)
    assert_every_tensor_landed(model, layout, ema)
    assert model.downsample_factor == 4 and model.config.layers_per_block == 2
    st = tmp_path / "model.safetensors"
    save_file({f"_orig_mod.{k}": v for k, v in source.items()}, str(st))
    assert_every_tensor_landed(convert_llamagen_vq(st, use_l2_norm=True), layout, source)


def test_llamagen_vq_saves_pretrained_and_cli(tmp_path):
    layout = llamagen_layout()
    source = random_state_dict(layout)
    path = tmp_path / "vq.pt"
    torch.save({"model": source}, path)
    out = tmp_path / "out"
    assert cli_main(["convert", "llamagen-vq", str(path), str(out), "--sample-size", "64", "--use-l2-norm", "true"]) == 0
    assert (out / "config.json").is_file() and (out / "diffusion_pytorch_model.safetensors").is_file()
    loaded = FVQModel.from_pretrained(out)
    assert loaded.config.sample_size == 64 and loaded.config.use_l2_norm
    assert_every_tensor_landed(loaded, layout, source)


def test_cli_errors(tmp_path, capsys):
    assert cli_main(["convert", "--help"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in CONVERTERS)
    assert cli_main(["convert", "nope", "a", "b"]) == 2
    path = tmp_path / "vq.pt"
    torch.save({"model": random_state_dict(llamagen_layout())}, path)
    argv = ["convert", "llamagen-vq", str(path), str(tmp_path / "o"), "--use-l2-norm", "true", "--bogus-option", "1"]
    assert cli_main(argv) == 1
    assert "bogus_option" in capsys.readouterr().err
    assert cli_main(["convert", "vqgan-lc-codebook", str(path), str(tmp_path / "o"), "--use-l2-norm"]) == 1
    assert cli_main(["convert", "fvq", str(tmp_path / "missing.pt"), str(tmp_path / "o")]) == 1
    assert "No checkpoint file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- errors
@pytest.fixture
def llamagen_file(tmp_path):
    def write(edit):
        state = random_state_dict(llamagen_layout())
        edit(state)
        path = tmp_path / "edited.pt"
        torch.save(training_checkpoint(state, codebook_l2_norm=True), path)
        return path

    return write


def test_extra_key_is_listed(llamagen_file):
    path = llamagen_file(
        lambda s: s.update({"encoder.extra.weight": torch.zeros(3), "decoder.more.bias": torch.zeros(2)})
    )
    with pytest.raises(ValueError, match="no place in the model") as err:
        convert_llamagen_vq(path)
    assert "encoder.extra.weight" in str(err.value) and "decoder.more.bias" in str(err.value)


def test_missing_key_is_listed(llamagen_file):
    path = llamagen_file(lambda s: [s.pop("decoder.conv_out.bias"), s.pop("encoder.mid.1.q.weight")])
    with pytest.raises(ValueError, match="missing from the checkpoint") as err:
        convert_llamagen_vq(path)
    assert "decoder.conv_out.bias" in str(err.value) and "encoder.mid.1.q.weight" in str(err.value)


def test_shape_mismatch_names_both_shapes(llamagen_file):
    path = llamagen_file(lambda s: s.update({"encoder.mid.0.conv1.weight": torch.zeros(64, 64, 1, 1)}))
    with pytest.raises(ValueError, match="shape mismatch") as err:
        convert_llamagen_vq(path)
    assert "encoder.mid.0.conv1.weight" in str(err.value)
    assert "(64, 64, 1, 1)" in str(err.value) and "(64, 64, 3, 3)" in str(err.value)


class _Payload:
    """Unpickling this would create ``marker``: a stand-in for arbitrary code in a pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_unsafe_pickle_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "unsafe.pt"
    torch.save({"model": random_state_dict(llamagen_layout()), "hook": _Payload(marker)}, path)
    with pytest.raises(ValueError, match="Refusing to load") as err:
        convert_llamagen_vq(path)
    assert "Unsupported global" in str(err.value)
    assert not marker.exists()


def test_wrong_entry_and_unknown_option(tmp_path):
    path = tmp_path / "vq.pt"
    torch.save({"weights": random_state_dict(llamagen_layout()), "steps": 1}, path)
    with pytest.raises(ValueError, match="state_dict_key"):
        convert_llamagen_vq(path)
    assert convert_llamagen_vq(path, state_dict_key="weights", use_l2_norm=True).config.codebook_size == K
    with pytest.raises(ValueError, match="no 'ema' entry"):
        convert_llamagen_vq(path, ema=True)
    with pytest.raises(ValueError, match="Unknown option"):
        convert_llamagen_vq(path, state_dict_key="weights", use_l2_norm=True, codebook_sise=3)


# ---------------------------------------------------------------------------------------------------- FVQ
def official_bridge_codebook(source, dim=D, patch=2, heads=4):
    """The official VQBridge forward (qbridge_ViT.py + vq_model_qbridge_release.py) on the source tensors."""
    p, k = "quantize.qbridge.", source["quantize.embedding.weight"].shape[0]
    side = math.isqrt(k)
    x = source["quantize.embedding.weight"].permute(1, 0).reshape(1, dim, side, side)
    x = F.conv2d(x, source[p + "x_embedder.proj.weight"], source[p + "x_embedder.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2)  # (1, T, C)
    c, depth = x.shape[-1], 1 + max(int(key.split(".")[3]) for key in source if key.startswith(p + "blocks."))
    for i in range(depth):
        b = lambda name: (source[f"{p}blocks.{i}.{name}.weight"], source[f"{p}blocks.{i}.{name}.bias"])  # noqa: B023, E731
        h = F.linear(F.layer_norm(x, (c,), eps=1e-6), *b("attn.qkv")).reshape(1, -1, 3, heads, c // heads)
        q, kk, v = h.permute(2, 0, 3, 1, 4)
        attn = (q @ kk.transpose(-1, -2) * (c // heads) ** -0.5).softmax(-1) @ v
        x = x + F.linear(attn.transpose(1, 2).reshape(1, -1, c), *b("attn.proj"))
        h = F.gelu(F.linear(F.layer_norm(x, (c,), eps=1e-6), *b("mlp.fc1")), approximate="tanh")
        x = x + F.linear(h, *b("mlp.fc2"))
    x = F.linear(
        F.layer_norm(x, (c,), eps=1e-6),
        source[p + "final_layer.linear.weight"],
        source[p + "final_layer.linear.bias"],
    )
    t = side // patch
    x = torch.einsum("nhwpqc->nchpwq", x.reshape(1, t, t, patch, patch, dim)).reshape(1, dim, side, side)
    return x.reshape(1, dim, k).permute(0, 2, 1)[0]


def test_fvq_bridge_checkpoint(tmp_path):
    layout = llamagen_layout() + bridge_layout()
    source = random_state_dict(layout)
    path = tmp_path / "0400000.pt"
    torch.save(training_checkpoint(source, QB_type="QBridge-XS/2", codebook_l2_norm=False), path)
    model = convert_fvq(path)
    cfg = model.config
    assert (cfg.quantizer_type, cfg.use_l2_norm) == ("vqbridge", False)
    bridge = (cfg.bridge_patch_size, cfg.bridge_hidden_size, cfg.bridge_depth, cfg.bridge_mlp_ratio)
    assert bridge == (2, 32, 2, 2.0)
    assert_every_tensor_landed(model, layout, source)
    expected = official_bridge_codebook(source)
    torch.testing.assert_close(model.get_codebook(), expected, rtol=1e-4, atol=1e-5)
    x = image(model.downsample_factor)
    ids = model.tokenize(x)
    out = tmp_path / "folded"
    folded = convert_fvq(path, out, fold=True)
    assert folded.config.quantizer_type == "vq"
    loaded = FVQModel.from_pretrained(out)
    assert loaded.config.quantizer_type == "vq" and not any("qbridge" in k for k in loaded.state_dict())
    assert torch.equal(loaded.tokenize(x), ids)
    torch.testing.assert_close(loaded.detokenize(ids), model.detokenize(ids), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="convert_fvq"):
        convert_llamagen_vq(path)


def test_fvq_folded_checkpoint(tmp_path):
    layout = llamagen_layout(codebook_size=256, dim=D)
    source = random_state_dict(layout)
    path = tmp_path / "fvq2vqgan_16384_40ep.pt"
    torch.save({"model": source}, path)  # as convert_fullvq2vq.py writes it
    with pytest.raises(ValueError, match="use-l2-norm"):  # no stored args: the weights cannot tell
        convert_fvq(path)
    model = convert_fvq(path, use_l2_norm=False)
    cfg = model.config
    assert (cfg.quantizer_type, cfg.use_l2_norm, cfg.codebook_size) == ("vq", False, 256)
    assert_every_tensor_landed(model, layout, source)
    x = image(model.downsample_factor)
    z = model.encode(x).latents.permute(0, 2, 3, 1).reshape(-1, D)
    assert_nearest_codes(model.tokenize(x), z, source["quantize.embedding.weight"])


def test_vqgan_lc_every_tensor_and_search(tmp_path):
    layout = taming_layout()
    source = random_state_dict(layout)
    path = tmp_path / "vqgan_checkpoint-19.pth"
    torch.save(training_checkpoint(source, key="state_dict", rate_q=0.1, use_cblinear=1, embed_dim=4), path)
    model = convert_vqgan_lc(path)
    assert isinstance(model, VQGANLCModel)
    cfg = model.config
    assert (cfg.codebook_size, cfg.codebook_feature_dim, cfg.codebook_dim) == (K, 16, 4)
    assert (tuple(cfg.block_out_channels), cfg.layers_per_block, cfg.latent_channels) == ((32, 64), 1, Z)
    assert_every_tensor_landed(model, layout, source)
    x = image(model.downsample_factor)
    ids = model.tokenize(x)
    codes = F.linear(
        source["tok_embeddings.weight"],
        source["codebook_projection.weight"],
        source["codebook_projection.bias"],
    )
    z = model.encode(x).latents.permute(0, 2, 3, 1).reshape(-1, 4)
    assert_nearest_codes(ids, z, codes)
    assert model.detokenize(ids).shape == x.shape


def test_vqgan_lc_missing_taming_key_named_in_source_terms(tmp_path):
    source = random_state_dict(taming_layout(num_res_blocks=2))
    del source["decoder.up.0.block.2.conv1.weight"]  # the last block of the highest-resolution up level
    path = tmp_path / "bad.pth"
    torch.save({"model": source}, path)
    with pytest.raises(ValueError, match="decoder.up.0.block.2.conv1.weight") as err:
        convert_vqgan_lc(path)
    assert "decoder.conv_blocks.1.res.2.conv1.weight" in str(err.value)


def test_vqgan_lc_f8_attention_layout_is_refused(tmp_path):
    source = random_state_dict(taming_layout(attn_resolutions=(4,)))  # never reached: attention only in mid
    path = tmp_path / "f8.pth"
    torch.save({"model": source}, path)
    with pytest.raises(ValueError, match="cannot be represented"):
        convert_vqgan_lc(path)


def test_vqgan_lc_codebook_file(tmp_path):
    codebook = torch.randn(K, 16, dtype=torch.float64)
    path = tmp_path / "cluster_codebook_1000cls_100000.pth"
    torch.save(codebook, path)
    converted = convert_vqgan_lc_codebook(path, tmp_path / "cb")
    assert converted.dtype == torch.float32
    model = VQGANLCModel.from_preset("tiny", codebook_size=K, codebook_feature_dim=16, codebook_dim=4)
    model.load_codebook(tmp_path / "cb")
    assert torch.equal(model.quantize.frozen_codebook, codebook.float())
    assert cli_main(["convert", "vqgan-lc-codebook", str(path), str(tmp_path / "cb.safetensors")]) == 0
    model.load_codebook(tmp_path / "cb.safetensors")
    # a checkpoint without tok_embeddings takes the codebook from the file
    source = random_state_dict(taming_layout())
    del source["tok_embeddings.weight"]
    ckpt = tmp_path / "no_codebook.pth"
    torch.save({"model": source}, ckpt)
    with pytest.raises(ValueError, match="--codebook"):
        convert_vqgan_lc(ckpt)
    lc = convert_vqgan_lc(ckpt, codebook=path)
    assert torch.equal(lc.quantize.frozen_codebook, codebook.float())
    torch.save(torch.randn(3, 4, 5), tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"\(K, F\)"):
        convert_vqgan_lc_codebook(tmp_path / "bad.pth")


# ---------------------------------------------------------------------------------------------------- model card
def test_model_card(tmp_path, monkeypatch, caplog):
    path = tmp_path / "vq.pt"
    torch.save({"model": random_state_dict(llamagen_layout())}, path)
    # without the card machinery: the weights, no card, a log line
    monkeypatch.setitem(sys.modules, "fullvq_hf.hub", None)
    with caplog.at_level(logging.INFO, logger="fullvq_hf.convert"):
        convert_llamagen_vq(path, tmp_path / "a", use_l2_norm=True)
    assert (tmp_path / "a" / "config.json").is_file() and not (tmp_path / "a" / "README.md").exists()
    assert "No model card" in caplog.text
    calls = []
    hub = types.ModuleType("fullvq_hf.hub")

    def render_model_card(kind, model, base_model=None, license=None):
        calls.append((kind, model, base_model, license))
        return "# card\n"

    hub.render_model_card = render_model_card
    monkeypatch.setitem(sys.modules, "fullvq_hf.hub", hub)
    model = convert_fvq(path, tmp_path / "b", use_l2_norm=False)
    assert (tmp_path / "b" / "README.md").read_text() == "# card\n"
    assert calls == [(None, model, "yfChang/FVQ", None)]  # FVQ's repo states no licence: the card claims none


def test_model_card_rendered_by_hub(tmp_path):
    pytest.importorskip("fullvq_hf.hub")
    pytest.importorskip("jinja2")
    path = tmp_path / "vq.pt"
    torch.save({"model": random_state_dict(llamagen_layout())}, path)
    convert_llamagen_vq(path, tmp_path / "out", use_l2_norm=True)
    text = (tmp_path / "out" / "README.md").read_text()
    assert "FoundationVision/LlamaGen" in text and "FVQModel" in text and "license: mit" in text
