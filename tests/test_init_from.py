"""Starting a tokenizer run from trained weights: ``--init-from`` keeps the source's architecture and refuses, by
name, the model options it cannot honour; ``--finetune-from-vq`` puts a fresh bridge on a plain VQ (the official
``--finetune-from-llmgen``); ``training_config.json`` and the card record the architecture actually trained."""

from __future__ import annotations

import json

import pytest
import torch

from fullvq_hf.hub import render_model_card
from fullvq_hf.models import BACKBONES, FVQModel
from fullvq_hf.training.config import TokenizerTrainingConfig, make_config, parse_args
from fullvq_hf.training.tokenizer_trainer import build_model, main

# a few steps, nothing but the training and its exports
QUICK = ["--preset", "cpu-tiny", "--max-steps", "2", "--eval-split", "none", "--checkpoint-every", "0",
         "--image-every", "0", "--gan-weight", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def plain_vq(tmp_path_factory):
    """A 576-code (24 x 24: a DiT bridge fits) l2-normalised plain VQ on the tiny backbone (unlike cpu-tiny's 256-code S/2 bridge): the role of
    a converted LlamaGen VQ-16."""
    torch.manual_seed(0)
    model = FVQModel(**BACKBONES["tiny"], in_channels=1, out_channels=1, sample_size=32, codebook_size=576,
                     codebook_dim=8, quantizer_type="vq", use_l2_norm=True)  # fmt: skip
    folder = tmp_path_factory.mktemp("vq") / "vq-tiny"
    model.save_pretrained(folder)
    return folder


def test_init_from_refuses_each_option_it_cannot_honour(plain_vq, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*QUICK, "--init-from", str(plain_vq), "--codebook-size", "999", "--bridge", "XL/8",
            "--quantizer-type", "simvq", "--output-dir", str(out)]  # fmt: skip
    assert main(argv, prog="train") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("train: error:")
    assert "--codebook-size 999 (" in err and "has 576)" in err
    assert "--quantizer-type simvq (" in err and "has vq)" in err
    assert "--bridge XL/8 (" in err and "has no bridge)" in err
    assert "--finetune-from-vq" in err  # the way to a bridge on a plain VQ
    assert not (out / "training_config.json").exists()  # nothing trained, nothing recorded


def test_init_from_refuses_a_direct_config_too(plain_vq, tmp_path):
    # built in Python, without make_config: the options that differ from the defaults count as given
    cfg = TokenizerTrainingConfig(init_from=str(plain_vq), backbone="tiny", codebook_dim=16, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"--codebook-dim 16 \(.* has 8\)") as info:
        build_model(cfg)
    assert "--backbone" not in str(info.value)  # tiny is what the source has
    assert "--codebook-size" not in str(info.value)  # the default, not given


def test_init_from_trains_and_records_the_source_architecture(plain_vq, tmp_path):
    out = tmp_path / "run"
    # cpu-tiny's preset says S/2 bridge and 256 codes: defaults, not a conflict; --codebook-size 576 equals the source
    argv = [*QUICK, "--init-from", str(plain_vq), "--codebook-size", "576", "--output-dir", str(out)]
    assert main(argv) == 0
    recorded = json.loads((out / "training_config.json").read_text())
    assert recorded["codebook_size"] == 576 and recorded["quantizer_type"] == "vq"
    assert recorded["use_l2_norm"] is True and recorded["bridge"] is None and recorded["backbone"] == "tiny"
    trained = json.loads((out / "model-train" / "config.json").read_text())
    assert trained["codebook_size"] == 576 and trained["quantizer_type"] == "vq" and trained["use_l2_norm"] is True
    card = str(render_model_card(None, out))
    assert "**576** codes" in card and "| codebook size | `576` |" in card
    assert "VQBridge | " not in card and "inference form" not in card and "`256`" not in card
    assert "A plain VQ baseline" in card
    # the recorded options (every one of them given, from the file) agree with the source: the run can be repeated
    again = parse_args(["--config", str(out / "training_config.json"), "--output-dir", str(tmp_path / "again")])
    assert build_model(again).config.codebook_size == 576


def test_card_reads_the_trained_model_not_ignored_flags(plain_vq, tmp_path):
    # a run folder whose training_config.json holds flags that were not used (as runs before this fix wrote)
    run = tmp_path / "old-run"
    model = FVQModel.from_pretrained(plain_vq)
    model.save_pretrained(run / "model-train")
    model.save_pretrained(run / "model", fold_codebook=True)
    stale = make_config({"preset": "cpu-photos", "init_from": str(plain_vq)}).to_dict()
    (run / "training_config.json").write_text(json.dumps(stale))
    card = str(render_model_card(None, run))
    assert "| codebook size | `576` |" in card and "`4096`" not in card and "S/2" not in card
    assert "inference form" not in card and "A plain VQ baseline" in card
    assert "| backbone | `tiny` |" in card


def test_finetune_from_vq_keeps_the_vq_and_adds_a_fresh_bridge(plain_vq, tmp_path):
    cfg = make_config({"preset": "cpu-tiny", "finetune_from_vq": str(plain_vq), "bridge": "QBridge-XS/2",
                       "output_dir": str(tmp_path)})  # fmt: skip
    model = build_model(cfg)
    source = FVQModel.from_pretrained(plain_vq)
    assert model.config.quantizer_type == "vqbridge" and model.config.bridge_type == "dit"
    assert model.config.codebook_size == 576 and model.config.use_l2_norm is False
    kept = source.state_dict()
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in kept.items())  # encoder, decoder, codebook
    assert any(k.startswith("quantize.qbridge.") for k in state)


def test_finetune_from_vq_trains_and_records_the_bridge(plain_vq, tmp_path):
    out = tmp_path / "run"
    argv = [*QUICK, "--finetune-from-vq", str(plain_vq), "--bridge", "QBridge-XS/2", "--output-dir", str(out)]
    assert main(argv) == 0
    recorded = json.loads((out / "training_config.json").read_text())
    assert recorded["quantizer_type"] == "vqbridge" and recorded["bridge"] == "QBridge-XS/2"
    assert recorded["codebook_size"] == 576 and recorded["use_l2_norm"] is False
    trained = FVQModel.from_pretrained(out / "model-train")
    assert trained.config.bridge_type == "dit" and trained.config.codebook_size == 576
    card = str(render_model_card(None, out))
    assert "| VQBridge | `QBridge-XS/2` |" in card and "**576** codes" in card and "inference form" in card


def test_finetune_from_vq_refusals(plain_vq, tmp_path, capsys):
    # shapes the source fixes, and a quantizer that is not the bridge: each named
    argv = [*QUICK, "--finetune-from-vq", str(plain_vq), "--quantizer-type", "simvq", "--output-dir", str(tmp_path)]
    assert main(argv, prog="train") == 2
    assert "--quantizer-type simvq" in capsys.readouterr().err
    argv = [*QUICK, "--finetune-from-vq", str(plain_vq), "--codebook-size", "1024", "--output-dir", str(tmp_path)]
    assert main(argv, prog="train") == 2
    assert "--codebook-size 1024 (" in capsys.readouterr().err
    # a source that already has a bridge: --init-from is the way
    bridge = tmp_path / "bridge"
    build_model(make_config({"preset": "cpu-tiny"})).save_pretrained(bridge)
    argv = [*QUICK, "--finetune-from-vq", str(bridge), "--output-dir", str(tmp_path / "r")]
    assert main(argv, prog="train") == 2
    err = capsys.readouterr().err
    assert "quantizer_type='vqbridge'" in err and "--init-from" in err
    argv = [*QUICK, "--finetune-from-vq", str(plain_vq), "--init-from", str(plain_vq), "--output-dir", str(tmp_path)]
    assert main(argv, prog="train") == 2
