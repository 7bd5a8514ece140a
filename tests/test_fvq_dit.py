"""FVQ's DiT bridge (the official recipes' ``qbridge.py``) and the converters' exactness rules.

State dicts are built in the official layouts from the published architecture (``qbridge.py``'s DiT: timm
PatchEmbed, a LabelEmbedder ``embedding_table``, a fixed ``pos_embed``, adaLN-Zero blocks, a modulated final
layer), with tiny widths and random values, and saved as ``vq_train_qbridge_lr.py`` saves them. The reference
forward below is written from that description, independently of ``fullvq_hf.models.vqbridge``.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_nearest_codes
from safetensors.torch import save_file
from test_convert import (
    D,
    K,
    assert_every_tensor_landed,
    image,
    llamagen_layout,
    random_state_dict,
    training_checkpoint,
)
from test_convert import bridge_layout as vit_bridge_layout
from test_convert import official_bridge_codebook as official_vit_codebook

from fullvq_hf import FVQModel
from fullvq_hf.cli import main as cli_main
from fullvq_hf.convert import convert_fvq, convert_llamagen_vq
from fullvq_hf.models.vqbridge import QBRIDGE_MODELS, DiTVQBridge

P = "quantize.qbridge"


def dit_layout(dim=D, patch=2, hidden=32, depth=2, mlp_ratio=2.0, rows=1, codebook_size=K):
    """(official key, our key, shape) of qbridge.py's DiT over a codebook of ``codebook_size`` x ``dim``."""
    tokens = (math.isqrt(codebook_size) // patch) ** 2
    mlp = int(hidden * mlp_ratio)

    def linear(name, cout, cin):
        return [(f"{name}.weight", f"{name}.weight", (cout, cin)), (f"{name}.bias", f"{name}.bias", (cout,))]

    out = [
        (f"{P}.x_embedder.proj.weight", f"{P}.x_embedder.proj.weight", (hidden, dim, patch, patch)),
        (f"{P}.x_embedder.proj.bias", f"{P}.x_embedder.proj.bias", (hidden,)),
        (f"{P}.y_embedder.embedding_table.weight", f"{P}.y_embedder.embedding_table.weight", (rows, hidden)),
        (f"{P}.pos_embed", f"{P}.pos_embed", (1, tokens, hidden)),
    ]
    for i in range(depth):
        b = f"{P}.blocks.{i}"
        out += linear(f"{b}.attn.qkv", 3 * hidden, hidden) + linear(f"{b}.attn.proj", hidden, hidden)
        out += linear(f"{b}.mlp.fc1", mlp, hidden) + linear(f"{b}.mlp.fc2", hidden, mlp)
        out += linear(f"{b}.adaLN_modulation.1", 6 * hidden, hidden)
    out += linear(f"{P}.final_layer.linear", patch * patch * dim, hidden)
    out += linear(f"{P}.final_layer.adaLN_modulation.1", 2 * hidden, hidden)
    return out


def reference_dit_codebook(source, label=0, patch=2, heads=4):
    """The DiT bridge forward of qbridge.py + the quantizer's reshapes, on the source tensors (eval: no dropout)."""
    w = lambda name: (source[f"{P}.{name}.weight"], source[f"{P}.{name}.bias"])  # noqa: E731
    raw = source["quantize.embedding.weight"]
    k, dim = raw.shape
    side = math.isqrt(k)
    x = F.conv2d(raw.t().reshape(1, dim, side, side), *w("x_embedder.proj"), stride=patch)
    x = x.flatten(2).transpose(1, 2) + source[f"{P}.pos_embed"]  # (1, T, C)
    c = source[f"{P}.y_embedder.embedding_table.weight"][label][None]  # (1, C)
    hid = x.shape[-1]
    ln = lambda t: F.layer_norm(t, (hid,), eps=1e-6)  # noqa: E731
    mod = lambda t, shift, scale: t * (1 + scale[:, None]) + shift[:, None]  # noqa: E731
    depth = 1 + max(int(key.split(".")[3]) for key in source if key.startswith(f"{P}.blocks."))
    for i in range(depth):
        s1, sc1, g1, s2, sc2, g2 = F.linear(F.silu(c), *w(f"blocks.{i}.adaLN_modulation.1")).chunk(6, dim=1)
        h = F.linear(mod(ln(x), s1, sc1), *w(f"blocks.{i}.attn.qkv")).reshape(1, -1, 3, heads, hid // heads)
        q, kk, v = h.permute(2, 0, 3, 1, 4)
        a = (q @ kk.transpose(-1, -2) * (hid // heads) ** -0.5).softmax(-1) @ v
        x = x + g1[:, None] * F.linear(a.transpose(1, 2).reshape(1, -1, hid), *w(f"blocks.{i}.attn.proj"))
        h = F.gelu(F.linear(mod(ln(x), s2, sc2), *w(f"blocks.{i}.mlp.fc1")), approximate="tanh")
        x = x + g2[:, None] * F.linear(h, *w(f"blocks.{i}.mlp.fc2"))
    shift, scale = F.linear(F.silu(c), *w("final_layer.adaLN_modulation.1")).chunk(2, dim=1)
    x = F.linear(mod(ln(x), shift, scale), *w("final_layer.linear"))
    t = side // patch
    x = torch.einsum("nhwpqc->nchpwq", x.reshape(1, t, t, patch, patch, dim)).reshape(1, dim, side, side)
    return x.reshape(dim, k).t()


def dit_source(rows=1, seed=0, **layout_kwargs):
    layout = llamagen_layout() + dit_layout(rows=rows, **layout_kwargs)
    source = random_state_dict(layout, seed)
    hidden = source[f"{P}.pos_embed"].shape[-1]
    grid = math.isqrt(source[f"{P}.pos_embed"].shape[1])
    source[f"{P}.pos_embed"] = DiTVQBridge(
        grid * grid * 4, 4, patch_size=2, hidden_size=hidden
    ).pos_embed.clone()
    return layout, source


def assert_euclidean_ids(model, x, codebook):
    """The model's tokens are the nearest codes of ``codebook`` (a reference computed independently)."""
    z = model.encode(x).latents.permute(0, 2, 3, 1).reshape(-1, codebook.shape[1])
    assert_nearest_codes(model.tokenize(x), z, codebook)


# ---------------------------------------------------------------------------------------------------- the module
@pytest.mark.parametrize("num_classes, rows", [(0, 1), (5, 6)])
def test_dit_bridge_keys_shapes_and_zero_init(num_classes, rows):
    bridge = DiTVQBridge(K, D, patch_size=2, hidden_size=32, depth=2, num_classes=num_classes)
    expected = {ours[len(P) + 1 :]: shape for _, ours, shape in dit_layout(rows=rows)}
    assert {k: tuple(v.shape) for k, v in bridge.state_dict().items()} == expected
    assert "pos_embed" not in dict(bridge.named_parameters())  # stored, never trained
    raw = torch.randn(K, D)
    assert torch.count_nonzero(bridge(raw)) == 0  # adaLN-Zero + zero final layer: C' == 0 at step 0
    assert torch.count_nonzero(bridge(raw, torch.tensor([0, 1]))) == 0


def test_pos_embed_is_the_2d_sincos_closed_form():
    hidden, grid = 16, 4
    pos = DiTVQBridge(64, 4, patch_size=2, hidden_size=hidden).pos_embed[0]  # (16 tokens, 16)
    omega = 1.0 / 10000 ** (torch.arange(4, dtype=torch.float64) / 4)
    for row, col in [(0, 0), (0, 1), (2, 3), (3, 0)]:
        a, b = col * omega, row * omega
        expected = torch.cat([a.sin(), a.cos(), b.sin(), b.cos()]).float()
        torch.testing.assert_close(pos[row * grid + col], expected, rtol=0, atol=1e-7)


def test_presets_follow_qbridge_models():
    assert QBRIDGE_MODELS["QBridge-L/8"][:3] == (256, 8, 2) and QBRIDGE_MODELS["QBridge-L/4"][:3] == (
        256,
        4,
        2,
    )
    model = FVQModel.from_preset("tiny", "QBridge-S/2", codebook_size=K, codebook_dim=D)
    cfg = model.config
    assert (cfg.bridge_type, cfg.bridge_hidden_size, cfg.bridge_patch_size, cfg.bridge_num_classes) == (
        "dit",
        64,
        2,
        0,
    )
    with pytest.raises(ValueError, match="Qbridge-lin"):
        FVQModel.from_preset("tiny", "Qbridge-lin/1", codebook_size=K, codebook_dim=D)
    with pytest.raises(ValueError, match="square grid"):
        FVQModel.from_preset("tiny", "QBridge-S/2", codebook_size=128, codebook_dim=D)
    with pytest.raises(ValueError, match="only the DiT bridge"):
        FVQModel.from_preset("tiny", "S/2", codebook_size=K, codebook_dim=D, bridge_num_classes=3)


def test_dit_bridge_trains_and_init_l2_norm():
    model = FVQModel.from_preset(
        "tiny", "QBridge-S/2", codebook_size=K, codebook_dim=D, init_l2_norm=True
    ).train()
    raw = model.quantize.embedding.weight
    torch.testing.assert_close(raw.norm(dim=1), torch.ones(K))  # normalised once, at init
    assert not model.config.use_l2_norm  # ... and the search stays Euclidean
    out = model(image(model.downsample_factor))
    (out.sample.pow(2).mean() + out.loss).backward()
    assert model.quantize.qbridge.final_layer.linear.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------- converting
def test_dit_training_checkpoint_converts_exactly(tmp_path, capsys):
    layout, source = dit_source()
    _, ema = dit_source(seed=1)
    path = tmp_path / "0400000.pt"
    checkpoint = training_checkpoint(
        source, QB_type="QBridge-XS/2", is_uncondition=True, codebook_l2_norm=False
    )
    checkpoint.update(ema=ema, optimizer_disc={"state": {}, "param_groups": []})
    torch.save(checkpoint, path)
    model = convert_fvq(path)
    cfg = model.config
    assert (cfg.quantizer_type, cfg.bridge_type, cfg.bridge_num_classes, cfg.use_l2_norm) == (
        "vqbridge",
        "dit",
        0,
        False,
    )
    assert (cfg.bridge_patch_size, cfg.bridge_hidden_size, cfg.bridge_depth, cfg.bridge_mlp_ratio) == (
        2,
        32,
        2,
        2.0,
    )
    assert_every_tensor_landed(model, layout, source)
    reference = reference_dit_codebook(source)
    torch.testing.assert_close(model.get_codebook(), reference, rtol=1e-4, atol=1e-4)
    x = image(model.downsample_factor)
    ids = model.tokenize(x)
    assert_euclidean_ids(model, x, reference)
    # --ema takes the EMA weights and says so
    out = tmp_path / "ema"
    assert cli_main(["convert", "fvq", str(path), str(out), "--ema"]) == 0
    assert "EMA weights" in capsys.readouterr().out
    assert_every_tensor_landed(FVQModel.from_pretrained(out), layout, ema)
    # folding: same tokens and reconstructions, no bridge; and the stock diffusers export
    folded_dir = tmp_path / "folded"
    model.save_pretrained(folded_dir, fold_codebook=True)
    folded = FVQModel.from_pretrained(folded_dir)
    assert folded.config.quantizer_type == "vq" and not any("qbridge" in k for k in folded.state_dict())
    assert torch.equal(folded.tokenize(x), ids)
    torch.testing.assert_close(folded.detokenize(ids), model.detokenize(ids), rtol=1e-4, atol=1e-4)
    vq = model.to_diffusers_vqmodel()
    torch.testing.assert_close(
        vq.decode(model.encode(x).latents).sample,
        model.decode(model.encode(x).latents).sample,
        rtol=1e-4,
        atol=1e-4,
    )
    # the pretrained bridge model reloads by identity
    model.save_pretrained(tmp_path / "bridge")
    again = FVQModel.from_pretrained(tmp_path / "bridge")
    assert torch.equal(again.tokenize(x), ids) and torch.equal(
        again.quantize.qbridge.pos_embed, source[f"{P}.pos_embed"]
    )


def test_class_conditional_dit_bridge(tmp_path):
    layout, source = dit_source(rows=6)  # 5 classes + the null row of label dropout
    path = tmp_path / "cond.pt"
    torch.save(training_checkpoint(source, QB_type="QBridge-XS/2", is_uncondition=False, num_classes=5), path)
    model = convert_fvq(path)
    assert (model.config.bridge_num_classes, model.config.bridge_class_dropout_prob) == (5, 0.1)
    assert_every_tensor_landed(model, layout, source)
    x = image(model.downsample_factor)
    # no label given: label 0, as the official quantizer given no label
    assert_euclidean_ids(model, x, reference_dit_codebook(source, 0))
    per_class = model.quantize.qbridge(model.quantize.embedding.weight, torch.tensor([3, 5]))
    torch.testing.assert_close(per_class[0], reference_dit_codebook(source, 3), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(per_class[1], reference_dit_codebook(source, 5), rtol=1e-4, atol=1e-4)
    for fold in (
        model.fold,
        model.to_diffusers_vqmodel,
        lambda: model.save_pretrained(tmp_path / "f", fold_codebook=True),
    ):
        with pytest.raises(ValueError, match="class-conditional.*every class label"):
            fold()
    with pytest.raises(ValueError, match="class-conditional"):
        convert_fvq(path, fold=True)
    # without stored args the class count is asked for
    bare = tmp_path / "bare.pt"
    torch.save({"model": source}, bare)
    with pytest.raises(ValueError, match="bridge-num-classes 5"):
        convert_fvq(bare)
    with pytest.raises(ValueError, match="bridge_class_dropout_prob"):
        convert_fvq(bare, bridge_num_classes=5)
    model = convert_fvq(bare, bridge_num_classes=5, bridge_class_dropout_prob=0.2)
    assert model.config.bridge_class_dropout_prob == 0.2


def test_stale_args_and_non_square_grid_are_refused(tmp_path):
    _, source = dit_source()
    path = tmp_path / "a.pt"
    torch.save(training_checkpoint(source, QB_type="QBridge-L/4", is_uncondition=True), path)
    with pytest.raises(ValueError, match="QB_type='QBridge-L/4'"):
        convert_fvq(path)
    layout = llamagen_layout(codebook_size=128) + dit_layout(codebook_size=64)
    source = random_state_dict(layout)
    torch.save({"model": source}, path)
    with pytest.raises(ValueError, match="square"):
        convert_fvq(path)


def test_bridge_codebook_l2_norm_is_init_only(tmp_path):
    """Trained with --codebook-l2-norm, the official bridge quantizer still searches Euclidean on C'."""
    layout = llamagen_layout() + vit_bridge_layout()
    source = random_state_dict(layout)
    path = tmp_path / "l2.pt"
    torch.save(training_checkpoint(source, QB_type="QBridge-XS/2", codebook_l2_norm=True), path)
    model = convert_fvq(path)
    x = image(model.downsample_factor)
    assert_euclidean_ids(model, x, official_vit_codebook(source))
    assert (model.config.use_l2_norm, model.config.init_l2_norm) == (False, True)


def test_folded_file_without_args_is_not_guessed_l2(tmp_path):
    """A folded FVQ file has no args: ``convert llamagen-vq`` asks instead of assuming LlamaGen's l2 search."""
    path = tmp_path / "fvq2vqgan_16384_40ep.pt"
    torch.save({"model": random_state_dict(llamagen_layout())}, path)
    with pytest.raises(ValueError, match="use-l2-norm"):
        convert_llamagen_vq(path)
    assert not convert_llamagen_vq(path, use_l2_norm=False).config.use_l2_norm


# ---------------------------------------------------------------------------------------------------- bad files
def _one_error_line(capsys, argv, *needles):
    assert cli_main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ": error: " in err, err
    for needle in needles:
        assert needle in err, err


def test_text_file_named_pt_gets_one_error_line(tmp_path, capsys):
    text = tmp_path / "notes.pt"
    text.write_text("hello world\n")
    _one_error_line(
        capsys, ["convert", "fvq", str(text), str(tmp_path / "o")], "not a PyTorch checkpoint", "text"
    )


def test_safetensors_file_named_pt_gets_one_error_line(tmp_path, capsys):
    st = tmp_path / "weights.pt"
    save_file(random_state_dict(llamagen_layout()), str(st))
    argv = ["convert", "llamagen-vq", str(st), str(tmp_path / "o")]
    _one_error_line(capsys, argv, "safetensors file", "weights.safetensors")


def test_output_that_is_an_existing_file_gets_one_error_line(tmp_path, capsys):
    good = tmp_path / "vq.pt"
    torch.save(training_checkpoint(random_state_dict(llamagen_layout()), codebook_l2_norm=True), good)
    existing = tmp_path / "taken"
    existing.write_text("x")
    for name in ("llamagen-vq", "fvq"):
        _one_error_line(capsys, ["convert", name, str(good), str(existing)], "existing file")
    assert existing.read_text() == "x"


# ---------------------------------------------------------------------------------------------------- from a VQ
def test_fvq_from_a_trained_plain_vq_tokenizer():
    """As --finetune-from-llmgen: encoder, decoder, convs and codebook kept, a fresh (zero-output) bridge."""
    vq = FVQModel.from_preset(
        "tiny", None, quantizer_type="vq", codebook_size=K, codebook_dim=D, use_l2_norm=True
    )
    with torch.no_grad():
        vq.quantize.embedding.weight.normal_()
    fvq = FVQModel.from_vq_tokenizer(vq, "QBridge-XS/2")
    cfg = fvq.config
    assert (cfg.quantizer_type, cfg.bridge_type, cfg.bridge_hidden_size, cfg.use_l2_norm) == (
        "vqbridge",
        "dit",
        32,
        False,
    )
    ours, theirs = fvq.state_dict(), vq.state_dict()
    assert {k for k in ours if not k.startswith(f"{P}.")} == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert torch.count_nonzero(fvq.get_codebook()) == 0  # the official init: C' == 0 before training
    vit = FVQModel.from_vq_tokenizer(vq, "S/2", bridge_depth=1)
    assert (vit.config.bridge_type, vit.config.bridge_depth) == ("vit", 1)
    with pytest.raises(ValueError, match="codebook_size"):
        FVQModel.from_vq_tokenizer(vq, "QBridge-XS/2", codebook_size=1024)
    with pytest.raises(ValueError, match="plain codebook"):
        FVQModel.from_vq_tokenizer(fvq)
