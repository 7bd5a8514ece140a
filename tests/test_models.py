"""FVQModel / VQGANLCModel as diffusers models: shapes, save/load, folding, export to VQModel, pipelines."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, LDMPipeline, UNet2DModel, VQModel
from helpers import randomize_bridge, tiny_fvq
from safetensors.torch import load_file

from fullvq_hf import FVQModel, VQGANLCModel


def states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("quantizer_type", ["vqbridge", "vq", "simvq"])
def test_fvq_forward_shapes_and_losses(quantizer_type, pixels):
    m = tiny_fvq(quantizer_type=quantizer_type)
    assert m.downsample_factor == 2
    out = m(pixels)
    assert out.sample.shape == pixels.shape
    assert out.indices.shape == (2, 8, 8) and out.indices.dtype == torch.long
    assert torch.isfinite(out.loss)
    sample, indices, *_ = m(pixels, return_dict=False)
    assert torch.equal(sample, out.sample) and torch.equal(indices, out.indices)


def test_encode_decode_follow_the_vqmodel_interface(pixels):
    m = randomize_bridge(tiny_fvq()).eval()
    h = m.encode(pixels).latents
    assert h.shape == (2, 8, 8, 8)  # (B, codebook_dim, h, w): pre-quantisation
    dec = m.decode(h)
    assert dec.sample.shape == pixels.shape and dec.commit_loss.ndim == 0
    # decode quantises; force_not_quantize skips it
    assert not torch.allclose(m.decode(h, force_not_quantize=True).sample, dec.sample)
    # token ids decode to the same pixels as quantised latents
    ids = m.tokenize(pixels)
    assert torch.allclose(m.detokenize(ids), dec.sample, atol=1e-5)
    assert torch.allclose(m.decode(ids).sample, dec.sample, atol=1e-5)
    # diffusers' flat-ids form (aMUSEd): ids (B, h*w) with shape (B, h, w, C)
    flat = m.decode(ids.reshape(2, -1), force_not_quantize=True, shape=(2, 8, 8, 8)).sample
    assert torch.allclose(flat, dec.sample, atol=1e-5)
    sample, loss = m.decode(h, return_dict=False)
    assert torch.equal(sample, dec.sample)


@pytest.mark.parametrize("quantizer_type", ["vqbridge", "vq", "simvq"])
def test_fvq_save_load_round_trip_is_exact(tmp_path, pixels, quantizer_type):
    m = tiny_fvq(quantizer_type=quantizer_type)
    if quantizer_type == "vqbridge":
        randomize_bridge(m)
    m.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists() and (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = FVQModel.from_pretrained(tmp_path)
    assert states_equal(m, loaded)
    assert json.loads((tmp_path / "config.json").read_text())["quantizer_type"] == quantizer_type
    m.eval(), loaded.eval()
    # weights are bit-equal above; outputs of two instances may take other float kernels (e.g. memory alignment of
    # the loaded tensors picks another oneDNN path), so ids compare exactly and pixels within a tolerance
    out, out_loaded = m(pixels), loaded(pixels)
    assert torch.equal(out.indices, out_loaded.indices)
    torch.testing.assert_close(out_loaded.sample, out.sample, atol=1e-5, rtol=1e-4)


def test_folded_model_matches_the_training_model(tmp_path, pixels):
    m = randomize_bridge(tiny_fvq()).eval()
    m.save_pretrained(tmp_path / "train")
    m.save_pretrained(tmp_path / "infer", fold_codebook=True)
    weights = load_file(tmp_path / "infer" / "diffusion_pytorch_model.safetensors")
    assert not any("qbridge" in k for k in weights)
    folded = FVQModel.from_pretrained(tmp_path / "infer").eval()
    full = FVQModel.from_pretrained(tmp_path / "train").eval()
    assert folded.config.quantizer_type == "vq" and full.config.quantizer_type == "vqbridge"
    assert torch.equal(folded.get_codebook(), full.get_codebook())
    ids = full.tokenize(pixels)
    assert torch.equal(folded.tokenize(pixels), ids)
    torch.testing.assert_close(folded.detokenize(ids), full.detokenize(ids), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(folded(pixels).sample, full(pixels).sample, atol=1e-5, rtol=1e-4)


def test_simvq_folds_too(pixels):
    m = tiny_fvq(quantizer_type="simvq").eval()
    f = m.fold()
    assert torch.equal(f.tokenize(pixels), m.tokenize(pixels))


def test_vqgan_lc_round_trip_keeps_the_frozen_codebook(tmp_path, pixels):
    m = VQGANLCModel.from_preset("tiny", codebook_size=300, codebook_feature_dim=12)
    codebook = torch.randn(300, 12, generator=torch.Generator().manual_seed(1))
    m.load_codebook(codebook)
    m.save_pretrained(tmp_path)
    loaded = VQGANLCModel.from_pretrained(tmp_path)
    assert torch.equal(loaded.quantize.frozen_codebook, codebook)
    assert states_equal(m, loaded)
    assert torch.equal(m.eval().tokenize(pixels), loaded.eval().tokenize(pixels))
    with pytest.raises(ValueError, match="expects \\(300, 12\\)"):
        m.load_codebook(torch.randn(10, 12))


def test_export_to_stock_diffusers_vqmodel(tmp_path, pixels):
    m = randomize_bridge(tiny_fvq()).eval()
    vq = m.to_diffusers_vqmodel()
    assert type(vq) is VQModel
    vq.save_pretrained(tmp_path)
    vq = VQModel.from_pretrained(tmp_path).eval()  # loads in plain diffusers
    with torch.no_grad():
        h = m.encode(pixels).latents
        h_d = vq.encode(pixels).latents
        assert torch.allclose(h, h_d, atol=1e-5)
        _, _, (_, _, idx_d) = vq.quantize(h_d)
        assert torch.equal(idx_d.reshape(2, 8, 8), m.tokenize(pixels))
        assert torch.allclose(vq.decode(h_d).sample, m.decode(h).sample, atol=1e-4)
        assert torch.allclose(vq(pixels).sample, m(pixels).sample, atol=1e-4)


def test_export_refuses_cosine_codebooks():
    with pytest.raises(ValueError, match="l2-normalised"):
        tiny_fvq(quantizer_type="vq", use_l2_norm=True).to_diffusers_vqmodel()


@pytest.mark.parametrize("kind", ["fvq", "lc"])
def test_ldm_pipeline_runs_with_our_tokenizer(kind):
    torch.manual_seed(0)
    if kind == "fvq":
        vqvae = randomize_bridge(tiny_fvq())
    else:
        vqvae = VQGANLCModel.from_preset("tiny", codebook_size=128, codebook_feature_dim=12)
    d = vqvae.config.codebook_dim
    unet = UNet2DModel(
        sample_size=8,
        in_channels=d,
        out_channels=d,
        layers_per_block=1,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    vqvae.eval()
    decoded = []
    decode = vqvae.decode

    def recording_decode(h, *args, **kwargs):  # what the pipeline hands our tokenizer, and what it gets back
        out = decode(h, *args, **kwargs)
        decoded.append((h.detach().clone(), out.sample.detach().clone()))
        return out

    vqvae.decode = recording_decode
    pipe = LDMPipeline(vqvae=vqvae, unet=unet, scheduler=DDIMScheduler(num_train_timesteps=50))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 16, 16, 3)
    # the pipeline decoded float latents (B, codebook_dim, h, w) through our quantizer + decoder, and its images
    # are exactly those pixels mapped from [-1, 1] to [0, 1]
    assert len(decoded) == 1
    latents, pixels = decoded[0]
    assert latents.shape == (2, d, 8, 8) and latents.is_floating_point()
    expected = (pixels / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(images, expected, atol=1e-6)
    assert float(expected.std()) > 0


def test_presets_build_the_official_shapes():
    m = FVQModel.from_preset("VQ-16", "L/4", codebook_size=16384, codebook_dim=256)
    assert m.downsample_factor == 16
    assert m.quantize.qbridge.grid == (128, 128)
    n_backbone = sum(p.numel() for n, p in m.named_parameters() if not n.startswith("quantize."))
    assert 70e6 < n_backbone < 73e6  # LlamaGen VQ-16: ~72M parameters
    assert FVQModel.from_preset("VQ-8", None, quantizer_type="vq").downsample_factor == 8
    with pytest.raises(ValueError, match="Unknown backbone"):
        FVQModel.from_preset("VQ-3")
