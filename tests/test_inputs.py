"""Inputs a user gets wrong, at the entry points: value checks (finite pixels, id ranges) at tokenize / detokenize /
decode of ids, not in the training forward; other float dtypes are cast; small integer ids are ids."""

import warnings

import pytest
import torch
from helpers import tiny_fvq


@pytest.fixture(scope="module")
def model():
    return tiny_fvq().eval()


@pytest.fixture
def x():
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_pixels_are_cast_to_the_model_dtype(model, x, dtype):
    """Was torch's 'Input type (c10::Half) and bias type (float) should be the same'."""
    pixels = x.to(dtype)
    expected = model.tokenize(pixels.float())  # what the cast gives: the same image in float32
    assert torch.equal(model.tokenize(pixels), expected)
    assert model(pixels).sample.dtype == torch.float32
    assert model.encode(pixels).latents.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_small_integer_ids_are_ids(model, x, dtype):
    ids = model.tokenize(x)
    small = ids.clamp(max=127).to(dtype)
    expected = model.detokenize(small.long())
    torch.testing.assert_close(model.detokenize(small), expected, rtol=0, atol=0)
    torch.testing.assert_close(model.decode(small).sample, expected, atol=1e-5, rtol=1e-4)


def test_empty_batch_is_a_clear_error(model):
    """Was a ZeroDivisionError from the search."""
    with pytest.raises(ValueError, match="empty batch"):
        model.tokenize(torch.zeros(0, 3, 16, 16))


def test_pixels_in_0_255_passed_as_float_warn(model, x):
    with pytest.warns(UserWarning, match=r"x / 127.5 - 1"):
        model.tokenize((x + 1) * 127.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.tokenize(x * 1.05)  # a reconstruction that overshoots a little is fine


def test_training_forward_does_no_value_check(model):
    """Value checks read the tensor back to the host (a sync, a graph break under torch.compile): they belong at
    the user entry points. The training forward checks shapes and dtypes only."""
    nan = torch.full((1, 3, 16, 16), float("nan"))
    model(nan)  # no ValueError: NaN flows on, as in any torch module
    model.encode(nan)
    with pytest.raises(ValueError, match="NaN or inf"):
        model.tokenize(nan)
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        model.decode(torch.full((1, 8, 8), 300))
