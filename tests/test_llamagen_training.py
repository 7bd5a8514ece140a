"""LlamaGen generator training end to end on CPU: codes extraction from real Fashion-MNIST with a tiny tokenizer
(none / flip / ten-crop), the trainer's smoke run with export, exact resume, weight-decay groups, mismatched codes,
config sources, and a real two-process DDP run through `accelerate launch`."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomize_bridge, tiny_fvq
from safetensors.torch import load_file

from fullvq_hf import LlamaGenConfig, LlamaGenForConditionalGeneration
from fullvq_hf.data import ImageTransform, load_image_dataset
from fullvq_hf.training.codes import AugmentedViews, codes_dtype, extract_codes, load_codes
from fullvq_hf.training.llamagen_trainer import (
    PRESETS,
    make_llamagen_config,
    param_groups,
    parse_args,
    sample_classes,
    train,
)
from fullvq_hf.training.loop import list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
NUM_IMAGES = 64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and lose a lot when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fmnist():
    return load_image_dataset("fashion_mnist", "train")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A tiny grey FVQ tokenizer (256 codes, downsample 2): 16 x 16 pixels -> 8 x 8 tokens."""
    path = tmp_path_factory.mktemp("tokenizer")
    model = randomize_bridge(tiny_fvq(in_channels=1, out_channels=1, sample_size=16))
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def codes_dir(tokenizer_dir, fmnist, tmp_path_factory):
    from fullvq_hf import FVQModel

    out = tmp_path_factory.mktemp("codes") / "fmnist-flip"
    extract_codes(FVQModel.from_pretrained(tokenizer_dir), fmnist, out, augment="flip", max_images=NUM_IMAGES,
                  batch_size=16, source={"tokenizer": str(tokenizer_dir)}, progress=False)  # fmt: skip
    return out


def tiny(out, codes_dir, **kw):
    return make_llamagen_config(
        {"preset": "cpu-tiny-gpt", "codes": str(codes_dir), "output_dir": str(out), **kw}
    )


# ---------------------------------------------------------------------------------------------------- codes
def test_flip_codes_are_the_tokens_of_each_image_and_its_mirror(codes_dir, tokenizer_dir, fmnist):
    from fullvq_hf import FVQModel

    ds, meta = load_codes(codes_dir)
    assert len(ds) == 2 * NUM_IMAGES  # flip: two rows per image
    assert ds.features["codes"].feature.dtype == "int16" and ds.features["codes"].length == 64
    assert (meta["grid_height"], meta["grid_width"], meta["num_tokens"]) == (8, 8, 64)
    assert (meta["codebook_size"], meta["augment"], meta["views_per_image"]) == (256, "flip", 2)
    assert meta["num_classes"] == 10 and meta["class_names"][0] == "T-shirt/top"
    assert meta["tokenizer"] == str(tokenizer_dir) and meta["num_images"] == NUM_IMAGES
    assert json.loads(ds.info.description) == meta  # the same metadata travels inside the dataset
    rows = ds.with_format("numpy")[:]
    assert rows["codes"].min() >= 0 and rows["codes"].max() < 256
    assert rows["image_id"].tolist() == np.repeat(np.arange(NUM_IMAGES), 2).tolist()
    assert rows["view"].tolist() == [0, 1] * NUM_IMAGES
    assert rows["label"].tolist() == np.repeat(np.asarray(fmnist[:NUM_IMAGES]["label"]), 2).tolist()
    tok = FVQModel.from_pretrained(tokenizer_dir).eval()
    transform = ImageTransform(16, 1, random_crop=False, flip=False)
    x = torch.stack([transform(fmnist[i]["image"]) for i in range(3)])
    with torch.no_grad():
        direct, mirrored = tok.tokenize(x).flatten(1), tok.tokenize(x.flip(-1)).flatten(1)
    assert np.array_equal(rows["codes"][0:6:2], direct.numpy())
    assert np.array_equal(rows["codes"][1:6:2], mirrored.numpy())


def test_ten_crop_gives_ten_views_per_image(tokenizer_dir, fmnist, tmp_path):
    from fullvq_hf import FVQModel

    views = AugmentedViews(16, 1, "ten-crop", crop_range=1.25)  # resize to 20, then 16 x 16 crops
    v = views(fmnist[0]["image"])
    big = ImageTransform(20, 1, random_crop=False, flip=False)(fmnist[0]["image"])
    assert v.shape == (10, 1, 16, 16)
    assert torch.equal(v[0], big[:, :16, :16]) and torch.equal(v[3], big[:, 4:, 4:])  # corners
    assert torch.equal(v[4], big[:, 2:18, 2:18])  # centre
    assert torch.equal(v[5:], v[:5].flip(-1))  # then the mirror images of the five
    ds = extract_codes(FVQModel.from_pretrained(tokenizer_dir), fmnist, tmp_path / "tc", augment="ten-crop",
                       max_images=3, progress=False)  # fmt: skip
    assert len(ds) == 30 and list(ds["view"]) == list(range(10)) * 3
    assert json.loads((tmp_path / "tc" / "fullvq_codes.json").read_text())["crop_range"] == 1.1


def test_codes_errors_and_dtypes(tokenizer_dir, fmnist, tmp_path):
    rgb = tiny_fvq(sample_size=16)  # 3 channels
    with pytest.raises(ValueError, match="grey .*in_channels=3.*--convert-channels"):
        extract_codes(rgb, fmnist, tmp_path / "c", max_images=4, progress=False)
    grey = tiny_fvq(in_channels=1, out_channels=1)
    with pytest.raises(ValueError, match="colour .*in_channels=1"):
        extract_codes(grey, load_image_dataset("photos"), tmp_path / "c", resolution=16, progress=False)
    ds = extract_codes(rgb, fmnist, tmp_path / "c", max_images=2, convert_channels=True, progress=False)
    assert len(ds) == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a codes dataset"):
        extract_codes(grey, fmnist, tmp_path / "other", resolution=16, max_images=2, progress=False)
    assert [codes_dtype(k) for k in (256, 32768, 32769, 2**31, 2**31 + 1)] == [
        "int16",
        "int16",
        "int32",
        "int32",
        "int64",
    ]


# ---------------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def reference_run(codes_dir, tokenizer_dir, tmp_path_factory):
    """20 steps of cpu-tiny-gpt; checkpoints and sample grids at 10 and 20; export."""
    out = tmp_path_factory.mktemp("gpt")
    return out, train(tiny(out, codes_dir, tokenizer=str(tokenizer_dir)))


def test_smoke_run_learns_checkpoints_samples_and_exports(reference_run):
    import transformers

    import fullvq_hf  # noqa: F401  (registers model_type "llamagen" with the Auto classes)

    out, results = reference_run
    assert results["step"] == 20 and results["samples_seen"] == 20 * 8
    assert np.isfinite(results["final_loss"]) and results["final_loss"] < results["first_logged_loss"]
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == [
        "checkpoint-00000020",
        "checkpoint-00000010",
    ]
    for step in (10, 20):
        assert (out / "samples" / f"samples-{step:08d}.png").exists()
        tokens = np.load(out / "samples" / f"tokens-{step:08d}.npy")
        assert tokens.shape == (3, 2, 8, 8) and tokens.max() < 256  # 3 classes x 2 samples
    from PIL import Image

    assert Image.open(out / "samples" / "samples-00000020.png").size == (2 * 16, 3 * 16)  # a row per class
    model = LlamaGenForConditionalGeneration.from_pretrained(out / "model")
    auto = transformers.AutoModel.from_pretrained(out / "model")
    assert type(auto) is LlamaGenForConditionalGeneration
    assert (
        model.config.vocab_size == 256 and model.config.grid_size == [8, 8] and model.config.num_classes == 10
    )
    assert model.config.id2label[7] == "Sneaker"
    ids = torch.randint(0, 256, (2, 64))
    with torch.no_grad():
        assert torch.equal(model.eval()(ids, [1, 2]).logits, auto.eval()(ids, [1, 2]).logits)
    saved = json.loads((out / "results.json").read_text())
    assert saved["step"] == 20 and saved["train_time_s"] > 0 and saved["steps_per_second"] > 0
    assert json.loads((out / "training_config.json").read_text())["preset"] == "cpu-tiny-gpt"
    assert list((out / "logs").glob("**/events.out.tfevents.*")) == []  # report_to none in the tiny preset


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_resume_from_step_10_equals_the_uninterrupted_run(reference_run, codes_dir, tokenizer_dir, tmp_path):
    out, results = reference_run
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    shutil.copytree(out / "checkpoints" / "checkpoint-00000010", ckpt / "checkpoint-00000010")
    (ckpt / ".tmp-checkpoint-00000015").mkdir()  # a save killed half-way is ignored
    resumed = train(tiny(tmp_path, codes_dir, tokenizer=str(tokenizer_dir), resume="latest"))
    assert resumed["step"] == 20 and resumed["steps_this_run"] == 10
    assert resumed["final_loss"] == results["final_loss"]
    _same_weights(out, tmp_path)  # dropout, label dropout and batches all continued exactly


def test_weight_decay_only_on_matrices_and_embeddings():
    config = LlamaGenConfig.from_preset("GPT-B", vocab_size=32, grid_size=2, num_classes=3, hidden_size=16,
                                        num_hidden_layers=2, num_attention_heads=2)  # fmt: skip
    decay, no_decay = param_groups(LlamaGenForConditionalGeneration(config), 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert set(no_decay["names"]) == {"norm.weight"} | {
        f"layers.{i}.{n}.weight" for i in range(2) for n in ("attention_norm", "ffn_norm")
    }
    assert {"tok_embeddings.weight", "cls_embedding.embedding_table.weight", "output.weight",
            "layers.0.attention.wqkv.weight", "layers.1.feed_forward.w2.weight"} <= set(decay["names"])  # fmt: skip
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])


def test_codes_that_do_not_fit_the_generator_fail_before_training(codes_dir, tmp_path):
    with pytest.raises(ValueError, match="256 codes but the generator's vocab_size is 128"):
        train(tiny(tmp_path / "a", codes_dir, vocab_size=128))
    with pytest.raises(ValueError, match=r"labels in \[0, 9\] but the generator has num_classes=5"):
        train(tiny(tmp_path / "b", codes_dir, num_classes=5))
    with pytest.raises(ValueError, match="64 tokens per image"):
        train(tiny(tmp_path / "c", codes_dir, grid_size=4))
    with pytest.raises(ValueError, match="--codes is required"):
        train(make_llamagen_config({"preset": "cpu-tiny-gpt", "output_dir": str(tmp_path / "d")}))
    assert not (tmp_path / "a").exists()  # nothing written


def test_accumulation_ema_and_bf16(codes_dir, tmp_path):
    results = train(tiny(tmp_path, codes_dir, gradient_accumulation_steps=2, ema_decay=0.9, mixed_precision="bf16",
                         max_steps=3, checkpoint_every=0, sample_every=0, lr_scheduler="linear"))  # fmt: skip
    assert results["step"] == 3 and results["samples_seen"] == 3 * 2 * 8 and results["ema"]
    model = LlamaGenForConditionalGeneration.from_pretrained(tmp_path / "model")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_config_sources_and_presets(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("preset: cpu-fmnist-gpt\nmax_steps: 7\nhidden_size: 64\n")
    cfg = parse_args(
        ["--config", str(cfg_file), "--max-steps", "9", "--codes", "x", "--sample-top-k", "none"]
    )
    assert (cfg.max_steps, cfg.hidden_size, cfg.codes, cfg.sample_top_k, cfg.batch_size) == (
        9,
        64,
        "x",
        None,
        64,  # from the preset
    )
    assert (cfg.learning_rate, cfg.token_dropout_prob, cfg.class_dropout_prob) == (3e-3, 0.0, 0.1)
    assert {"c2i-gpt-b", "c2i-gpt-l", "cpu-fmnist-gpt"} <= set(PRESETS)
    b = make_llamagen_config({"preset": "c2i-gpt-b"})
    assert (b.model, b.vocab_size, b.grid_size, b.num_classes, b.learning_rate) == (
        "GPT-B",
        16384,
        16,
        1000,
        1e-4,
    )
    assert (b.weight_decay, b.adam_beta1, b.adam_beta2, b.max_grad_norm, b.max_steps) == (
        0.05,
        0.9,
        0.95,
        1.0,
        1501200,
    )
    assert make_llamagen_config({"preset": "c2i-gpt-l"}).model == "GPT-L"
    with pytest.raises(ValueError, match="Unknown preset"):
        make_llamagen_config({"preset": "fvq-16k"})  # a tokenizer preset is not a generator preset
    with pytest.raises(ValueError, match="Unknown option.*LlamaGenTrainingConfig"):
        make_llamagen_config({"hidden_sise": 3})
    assert sample_classes(10, 10) == list(range(10)) and sample_classes(1000, 3) == [0, 500, 999]


# ---------------------------------------------------------------------------------------------------- processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(script: str, args: list[str], timeout: int = 600) -> str:
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), str(ROOT / "examples" / script), *args,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks: leave no orphan behind
        output, _ = proc.communicate()
        pytest.fail(
            f"two-process {script} did not finish in {timeout} s; its output ends with:\n" + output[-4000:]
        )
    assert proc.returncode == 0, output[-4000:]
    return output


def test_two_processes_extract_the_same_codes_and_train_identical_replicas(
    codes_dir, tokenizer_dir, tmp_path
):
    _launch("extract_codes.py", ["--tokenizer", str(tokenizer_dir), "--dataset", "fashion_mnist", "--augment", "flip",
                                 "--max-images", str(NUM_IMAGES), "--batch-size", "16", "--output-dir", str(tmp_path / "codes")])  # fmt: skip
    one, _ = load_codes(codes_dir)
    two, meta = load_codes(tmp_path / "codes")
    assert meta["num_processes"] == 2
    assert two.with_format("numpy")[:]["codes"].tolist() == one.with_format("numpy")[:]["codes"].tolist()
    assert list(two["label"]) == list(one["label"]) and list(two["image_id"]) == list(one["image_id"])

    _launch("train_llamagen.py", ["--preset", "cpu-tiny-gpt", "--codes", str(tmp_path / "codes"), "--output-dir",
                                  str(tmp_path / "gpt"), "--max-steps", "4", "--checkpoint-every", "2",
                                  "--sample-every", "0", "--log-every", "2"])  # fmt: skip
    results = json.loads((tmp_path / "gpt" / "results.json").read_text())
    assert results["num_processes"] == 2 and results["global_batch_size"] == 16
    assert results["replicas_identical"] is True and len(results["replica_checksums"]) == 2
    assert results["samples_seen"] == 4 * 8 * 2 and np.isfinite(results["final_loss"])
    assert [p.name for p in list_checkpoints(tmp_path / "gpt" / "checkpoints")] == [
        "checkpoint-00000004", "checkpoint-00000002",
    ]  # fmt: skip
    checkpoint = tmp_path / "gpt" / "checkpoints" / "checkpoint-00000004"
    assert sorted(p.name for p in checkpoint.glob("rng_state_*")) == [
        "rng_state_0.safetensors", "rng_state_1.safetensors",
    ]  # fmt: skip
    assert not list(checkpoint.glob("*.pkl"))  # no pickles: resume never unpickles
    LlamaGenForConditionalGeneration.from_pretrained(tmp_path / "gpt" / "model")


def test_cli_lists_the_new_commands(capsys):
    from fullvq_hf.cli import main

    assert main([]) == 0
    printed = capsys.readouterr().out
    assert "extract-codes" in printed and "train-llamagen" in printed
    with pytest.raises(SystemExit) as exit_info:
        main(["train-llamagen", "--help"])
    assert exit_info.value.code == 0 and "--sample-guidance-scale" in capsys.readouterr().out
