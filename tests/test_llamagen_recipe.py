"""FVQ's generator recipe as trainer presets (GPT-L / GPT-XL of ``scripts/generation/train_c2i_*_lr.sh``), the global
batch a recipe needs, the sampling defaults an export records, and ``--init-from`` refusing the model options it
cannot honour; tiny models on real Fashion-MNIST codes."""

import dataclasses
import json

import pytest
import torch
from test_llamagen_training import codes_dir, fmnist, one_thread, tokenizer_dir  # noqa: F401  (fixtures)

from fullvq_hf import LlamaGenConfig, LlamaGenForConditionalGeneration
from fullvq_hf.training.llamagen_trainer import (
    PRESETS,
    LlamaGenTrainingConfig,
    build_model,
    main,
    make_llamagen_config,
)
from fullvq_hf.training.loop import check_global_batch
from fullvq_hf.training.schedules import scale_lr

HAS_HOLD_FRACTION = "hold_fraction" in {f.name for f in dataclasses.fields(LlamaGenTrainingConfig)}
QUICK = ["--preset", "cpu-tiny-gpt", "--max-steps", "2", "--checkpoint-every", "0", "--sample-every", "0"]


# ---------------------------------------------------------------------------------------------------- presets
@pytest.mark.parametrize(
    "name, model, global_batch, per_process, epochs, steps_per_epoch, lr, cfg_scale",
    [
        ("fvq-c2i-gpt-l", "GPT-L", 2048, 128, 300, 625, 8e-4, 1.75),  # train_c2i_L_lr.sh
        ("fvq-c2i-gpt-xl", "GPT-XL", 1024, 64, 350, 1251, 4e-4, 1.65),  # train_c2i_XL_lr.sh
    ],
)
def test_fvq_generator_presets_are_the_official_scripts(
    name, model, global_batch, per_process, epochs, steps_per_epoch, lr, cfg_scale
):
    p = PRESETS[name]
    assert p["model"] == model and p["global_batch_size"] == global_batch
    assert p["batch_size"] * 16 == global_batch and p["batch_size"] == per_process  # 2 nodes x 8 GPUs
    assert 1_281_167 // global_batch == steps_per_epoch and p["max_steps"] == epochs * steps_per_epoch
    assert p["scale_lr"] and scale_lr(p["learning_rate"], global_batch, 256) == pytest.approx(lr)
    assert (p["lr_scheduler"], p["warmup_steps"], p["hold_fraction"]) == ("annealing", 0, 0.05)
    assert (p["adam_beta1"], p["adam_beta2"], p["weight_decay"], p["max_grad_norm"]) == (0.9, 0.95, 0.05, 1.0)
    assert p["class_dropout_prob"] == p["token_dropout_prob"] == p["resid_dropout_prob"] == 0.1
    assert (p["mixed_precision"], p["ema_decay"], p["vocab_size"], p["grid_size"]) == ("bf16", 0.0, 16384, 16)
    assert (p["sample_guidance_scale"], p["sample_cfg_interval"], p["sample_top_k"]) == (cfg_scale, -1, None)


@pytest.mark.skipif(not HAS_HOLD_FRACTION, reason="hold_fraction arrives with the shared-schedule options")
def test_fvq_generator_presets_build_configs():
    cfg = make_llamagen_config({"preset": "fvq-c2i-gpt-l", "codes": "x"})
    assert (cfg.model, cfg.hold_fraction, cfg.global_batch_size, cfg.sample_guidance_scale) == (
        "GPT-L",
        0.05,
        2048,
        1.75,
    )
    assert make_llamagen_config({"preset": "fvq-c2i-gpt-xl"}).max_steps == 437_850


def test_a_recipe_global_batch_is_enforced_with_the_fix_named(tmp_path, capsys):
    cfg = LlamaGenTrainingConfig(batch_size=128, global_batch_size=2048)
    check_global_batch(cfg, 16)  # the scripts' 2 x 8 GPUs
    check_global_batch(dataclasses.replace(cfg, global_batch_size=None), 8)  # no recipe batch: anything goes
    with pytest.raises(ValueError, match="global batch of 2048") as info:
        check_global_batch(cfg, 8)
    assert "= 1024" in str(info.value) and "--gradient-accumulation-steps 2" in str(info.value)
    assert "--batch-size 256" in str(info.value) and "--global-batch-size none" in str(info.value)
    check_global_batch(dataclasses.replace(cfg, gradient_accumulation_steps=2), 8)
    # from the command line: one error line, before anything is read or written
    out = tmp_path / "run"
    argv = [*QUICK, "--codes", str(tmp_path / "none"), "--global-batch-size", "32", "--output-dir", str(out)]
    assert main(argv, prog="train") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "global batch of 32" in err
    assert "--gradient-accumulation-steps 4" in err
    assert not out.exists()


def test_the_export_records_the_run_sampling_guidance(codes_dir, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    argv = [*QUICK, "--codes", str(codes_dir), "--output-dir", str(out), "--sample-guidance-scale", "1.75",
            "--sample-cfg-interval", "3"]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((out / "model" / "generation_config.json").read_text())
    assert saved["guidance_scale"] == 1.75 and saved["cfg_interval"] == 3
    model = LlamaGenForConditionalGeneration.from_pretrained(out / "model").eval()
    torch.nn.init.normal_(model.output.weight, std=0.5)  # 2 steps leave the head near 0: make logits differ
    default = model.sample([1, 2], temperature=0)
    assert torch.equal(default, model.sample([1, 2], 1.75, cfg_interval=3, temperature=0))
    assert not torch.equal(model.sample([1, 2], temperature=0), model.sample([1, 2], 1.0, temperature=0))
    assert main([*QUICK, "--codes", str(codes_dir), "--output-dir", str(tmp_path / "bad"),
                 "--sample-cfg-interval", "-4"]) == 2  # fmt: skip


# ---------------------------------------------------------------------------------------------------- --init-from
@pytest.fixture(scope="module")
def small_gpt(tmp_path_factory):
    """A generator for the test codes (256 codes, 8 x 8 grid, 10 classes) unlike the cpu-tiny-gpt preset's shape
    (hidden 32, 2 layers): hidden 16, 1 layer, 2 heads."""
    torch.manual_seed(0)
    config = LlamaGenConfig(vocab_size=256, grid_size=8, num_classes=10, hidden_size=16, num_hidden_layers=1,
                            num_attention_heads=2)  # fmt: skip
    folder = tmp_path_factory.mktemp("gpt") / "small-gpt"
    LlamaGenForConditionalGeneration(config).save_pretrained(folder)
    return folder


def test_init_from_refuses_each_model_option_it_cannot_honour(small_gpt, codes_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    argv = [*QUICK, "--codes", str(codes_dir), "--output-dir", str(out), "--init-from", str(small_gpt),
            "--num-hidden-layers", "99", "--hidden-size", "64", "--model", "GPT-L", "--vocab-size", "512",
            "--grid-size", "4", "--num-classes", "10"]  # fmt: skip
    assert main(argv, prog="train") == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]  # (and a loading bar)
    assert len(lines) == 1 and lines[0].startswith("train: error: --init-from")
    err = lines[0]
    assert "--num-hidden-layers 99 (" in err and "has 1)" in err
    assert "--hidden-size 64 (" in err and "has 16)" in err
    assert "--model GPT-L (" in err and "num_attention_heads=2" in err
    assert "--vocab-size 512 (" in err and "has 256)" in err
    assert "--grid-size 4 (" in err and "has 8x8)" in err
    assert "--num-classes" not in err  # 10 is what it has
    assert not (out / "training_config.json").exists()  # nothing trained, nothing recorded


def test_init_from_refuses_a_direct_config_too(small_gpt):
    # built in Python, without make_config: the options that differ from the class defaults count as given
    cfg = LlamaGenTrainingConfig(init_from=str(small_gpt), num_attention_heads=4, hidden_size=16)
    with pytest.raises(ValueError, match=r"--num-attention-heads 4 \(.* has 2\)") as info:
        build_model(cfg, {})
    assert "--hidden-size" not in str(info.value) and "--model" not in str(info.value)


def test_init_from_trains_and_records_the_source_architecture(small_gpt, codes_dir, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    # cpu-tiny-gpt's preset says hidden 32 and 2 layers: defaults, not a conflict; the given values are the source's
    argv = [*QUICK, "--codes", str(codes_dir), "--output-dir", str(out), "--init-from", str(small_gpt),
            "--num-hidden-layers", "1", "--hidden-size", "16", "--vocab-size", "256", "--grid-size", "8"]  # fmt: skip
    assert main(argv) == 0
    recorded = json.loads((out / "training_config.json").read_text())
    shape = (recorded["hidden_size"], recorded["num_hidden_layers"], recorded["num_attention_heads"])
    assert shape == (16, 1, 2)
    assert (recorded["vocab_size"], recorded["grid_size"], recorded["num_classes"]) == (256, 8, 10)
    trained = json.loads((out / "model" / "config.json").read_text())
    assert (trained["hidden_size"], trained["num_hidden_layers"]) == (16, 1)
    # the recorded options (every one of them given, from the file) agree with the source: the run can be repeated
    again = [*QUICK, "--config", str(out / "training_config.json"), "--output-dir", str(tmp_path / "again")]
    assert main(again) == 0
