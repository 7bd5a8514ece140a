"""LlamaGen c2i GPT checkpoints -> LlamaGenForConditionalGeneration.

The source state dicts are written here from LlamaGen's published architecture (autoregressive/models/gpt.py:
names and shapes), with random values, and saved the way its training scripts save them.
"""

import argparse

import pytest
import torch

from fullvq_hf import LlamaGenForConditionalGeneration
from fullvq_hf.convert.llamagen_gpt import convert_llamagen_gpt


def official_gpt_state_dict(layers=2, dim=64, vocab=128, classes=10, seed=0):
    """Keys and shapes of LlamaGen's c2i Transformer (cls_token_num=1, class dropout > 0, n_kv_head = n_head)."""
    ffn = -(-int(2 * 4 * dim / 3) // 256) * 256
    shapes = {
        "tok_embeddings.weight": (vocab, dim),
        "cls_embedding.embedding_table.weight": (classes + 1, dim),
        "norm.weight": (dim,),
        "output.weight": (vocab, dim),
    }
    for i in range(layers):
        shapes.update(
            {
                f"layers.{i}.attention.wqkv.weight": (3 * dim, dim),
                f"layers.{i}.attention.wo.weight": (dim, dim),
                f"layers.{i}.feed_forward.w1.weight": (ffn, dim),
                f"layers.{i}.feed_forward.w3.weight": (ffn, dim),
                f"layers.{i}.feed_forward.w2.weight": (dim, ffn),
                f"layers.{i}.attention_norm.weight": (dim,),
                f"layers.{i}.ffn_norm.weight": (dim,),
            }
        )
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.05 for k, s in shapes.items()}


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "_fsdp_wrapped_module."])
def test_every_tensor_lands_in_place_and_the_model_runs(tmp_path, prefix):
    source = official_gpt_state_dict(layers=2, dim=64)
    path = tmp_path / "c2i_custom.pt"
    args = argparse.Namespace(
        image_size=64, downsample_size=16, class_dropout_prob=0.1, token_dropout_p=0.1, dropout_p=0.1
    )
    torch.save({"model": {prefix + k: v for k, v in source.items()}, "steps": 100, "args": args}, path)
    model = convert_llamagen_gpt(path, num_attention_heads=4)
    assert (
        model.config.grid_size == [4, 4] and model.config.num_classes == 10 and model.config.vocab_size == 128
    )
    converted = model.state_dict()
    assert converted.keys() == source.keys()
    for key, value in source.items():
        assert torch.equal(converted[key], value), key
    tokens = model.sample([1, 2], guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert tokens.shape == (2, 4, 4) and tokens.max() < 128


def test_preset_heads_grid_from_the_file_name_and_save(tmp_path):
    source = official_gpt_state_dict(layers=12, dim=768, vocab=64, classes=3)  # GPT-B's depth and width
    path = tmp_path / "c2i_B_384.pt"
    torch.save({"model": source}, path)
    model = convert_llamagen_gpt(path, tmp_path / "out")
    assert model.config.num_attention_heads == 12 and model.config.grid_size == [24, 24]
    assert model.config.intermediate_size == 2048
    assert (tmp_path / "out" / "model.safetensors").exists()
    from huggingface_hub import ModelCard

    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.license == "mit" and card.data.base_model == "FoundationVision/LlamaGen"  # the source's licence
    assert card.data.library_name == "transformers" and "llamagen" in card.data.tags
    loaded = LlamaGenForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in source.items())


def test_mismatches_are_listed(tmp_path):
    source = official_gpt_state_dict()
    source["layers.0.attention.extra.weight"] = torch.zeros(2)
    del source["layers.1.ffn_norm.weight"]
    source["layers.0.feed_forward.w2.weight"] = torch.zeros(64, 7)
    path = tmp_path / "c2i_B_256.pt"
    torch.save({"model": source}, path)
    with pytest.raises(ValueError) as err:
        convert_llamagen_gpt(path, num_attention_heads=4)
    text = str(err.value)
    assert "layers.0.attention.extra.weight" in text and "layers.1.ffn_norm.weight" in text
    assert "layers.0.feed_forward.w2.weight" in text and "(64, 7)" in text and "(64, 256)" in text


def test_missing_facts_ask_for_options(tmp_path):
    path = tmp_path / "gpt.pt"
    torch.save({"model": official_gpt_state_dict()}, path)
    assert convert_llamagen_gpt(path, grid_size=4).config.num_attention_heads == 1  # width 64: head size 64
    odd = tmp_path / "odd.pt"
    torch.save({"model": official_gpt_state_dict(dim=96)}, odd)
    with pytest.raises(ValueError, match="num_attention_heads"):
        convert_llamagen_gpt(odd, grid_size=4)
    with pytest.raises(ValueError, match="grid_size=16"):
        convert_llamagen_gpt(path, num_attention_heads=4)
    assert convert_llamagen_gpt(path, num_attention_heads=4, grid_size=4).config.grid_size == [4, 4]


def test_cli_converts_a_gpt(tmp_path):
    from fullvq_hf.cli import main

    path = tmp_path / "gpt.pt"
    torch.save({"model": official_gpt_state_dict()}, path)
    assert (
        main(
            [
                "convert",
                "llamagen-gpt",
                str(path),
                str(tmp_path / "out"),
                "--num-attention-heads",
                "4",
                "--grid-size",
                "4",
            ]
        )
        == 0
    )
    model = LlamaGenForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert model.config.num_attention_heads == 4 and model.config.grid_size == [4, 4]
