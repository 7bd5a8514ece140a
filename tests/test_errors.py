"""Bad input fails early with a ValueError that names the problem and the fix."""

import pytest
import torch
from helpers import tiny_fvq

from fullvq_hf import FVQModel, VQGANLCModel


@pytest.fixture(scope="module")
def model():
    return tiny_fvq().eval()


@pytest.mark.parametrize(
    "x,match",
    [
        (torch.zeros(2, 1, 16, 16), r"Expected 3 input channels.*got 1.*repeat the channel"),
        (torch.zeros(2, 16, 16, 3), r"channels-last.*permute\(0, 3, 1, 2\)"),
        (torch.zeros(2, 3, 15, 16), r"15x16 is not divisible by the downsampling factor 2.*pad to 16x16"),
        (torch.zeros(3, 16, 16), r"\(B, C, H, W\).*x\[None\]"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), r"floating-point.*127.5"),
        (torch.zeros(0, 3, 16, 16), r"empty batch"),
    ],
)
def test_bad_pixels(model, x, match):
    for fn in (model.encode, model.tokenize, model.forward):
        with pytest.raises(ValueError, match=match):
            fn(x)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_pixels_at_the_user_entry_point(model, value):
    x = torch.zeros(1, 3, 16, 16)
    x[0, 1, 3, 4] = value
    with pytest.raises(ValueError, match=r"NaN or inf"):
        model.tokenize(x)


@pytest.mark.parametrize(
    "ids,match",
    [
        (torch.full((1, 8, 8), 256), r"\[0, 255\].*codebook_size=256.*\[256, 256\]"),
        (torch.full((1, 8, 8), -1), r"\[0, 255\]"),
        (torch.zeros(1, 64, dtype=torch.long), r"\(B, h, w\).*view"),
        (torch.zeros(1, 8, 8, dtype=torch.float32).bool(), r"integer tensor"),
    ],
)
def test_bad_token_ids(model, ids, match):
    with pytest.raises(ValueError, match=match):
        model.detokenize(ids)


def test_bad_latents(model):
    with pytest.raises(ValueError, match=r"\(B, 8, h, w\).*codebook_dim"):
        model.decode(torch.zeros(1, 5, 8, 8))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(codebook_size=1000, bridge_patch_size=4), r"codebook_size=1000.*divisible by bridge_patch_size\*\*2 = 16.*992 or 1008"),
        (dict(quantizer_type="ema"), r"quantizer_type='ema'"),
        (dict(block_out_channels=(16, 20)), r"divisible by norm_num_groups=8"),
        (dict(bridge_hidden_size=30), r"divisible by bridge_num_heads=4"),
    ],
)
def test_configs_that_cannot_work(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_fvq(**kwargs)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(EnvironmentError, match="config.json|does not appear"):
        FVQModel.from_pretrained(tmp_path / "nothing-here")


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    tiny_fvq(codebook_size=256).save_pretrained(tmp_path)
    with pytest.raises((ValueError, RuntimeError), match="size mismatch|shape"):
        FVQModel.from_pretrained(tmp_path, codebook_size=512)


def test_wrong_codebook_file(tmp_path):
    m = VQGANLCModel.from_preset("tiny", codebook_size=64, codebook_feature_dim=4)
    with pytest.raises(ValueError):
        m.load_codebook(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="NaN"):
        m.load_codebook(torch.full((64, 4), float("nan")))
