"""Outputs that pin a checkpoint's weights, for the Hub tests. Imports nothing from fullvq_hf: the same probes run
in the package's interpreter and in a virtualenv without the package (models loaded as remote code)."""

from __future__ import annotations

import torch


@torch.no_grad()
def probe_tokenizer(model) -> dict[str, torch.Tensor]:
    """Token ids and pixels of a fixed input."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, model.config.in_channels, 16, 16, generator=g) * 2 - 1
    ids = model.eval().tokenize(x)
    return {"indices": ids.contiguous(), "pixels": model.detokenize(ids).contiguous()}


@torch.no_grad()
def probe_generator(model) -> dict[str, torch.Tensor]:
    """Logits of fixed tokens and a greedy CFG sample."""
    model.eval()
    ids = torch.arange(model.config.num_image_tokens).view(1, -1) % model.config.vocab_size
    return {
        "logits": model(ids, torch.tensor([3])).logits.contiguous(),
        "tokens": model.sample([1, 2], guidance_scale=2.0, temperature=0).contiguous(),
    }


@torch.no_grad()
def probe_pipeline(pipe) -> dict[str, torch.Tensor]:
    """Images of a seeded, guided sample."""
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        [1, 2], guidance_scale=2.0, generator=torch.Generator().manual_seed(0), output_type="pt"
    ).images
    return {"images": images.contiguous()}
