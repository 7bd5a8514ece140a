"""Small builders shared by the tests."""

import torch


def tiny_fvq(**overrides):
    from fullvq_hf import FVQModel

    kwargs = dict(codebook_size=256, codebook_dim=8)
    kwargs.update(overrides)
    return FVQModel.from_preset("tiny", "S/2", **kwargs)


def randomize_bridge(model, std=0.2, seed=0):
    """Give the zero-initialised recover layer weights, so the projected codebook is not all zero."""
    g = torch.Generator().manual_seed(seed)
    lin = model.quantize.qbridge.final_layer.linear
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * std)
        lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * std)
    return model
