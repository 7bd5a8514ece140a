"""The tokenizer trainer end to end on CPU: smoke run with export, exact resume, damaged checkpoints, data errors,
and a real two-process DDP run through `accelerate launch`."""

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
from helpers import assert_same_weights
from PIL import Image
from safetensors.torch import load_file

from fullvq_hf import FVQModel
from fullvq_hf.training.config import PRESETS, make_config, parse_args
from fullvq_hf.training.tokenizer_trainer import list_checkpoints, train

ROOT = Path(__file__).resolve().parents[1]


def tiny(tmp, **kw):
    return make_config({"preset": "cpu-tiny", "output_dir": str(tmp), **kw})


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """20 steps (GAN from step 5), checkpoints at 10 and 20, export and evaluation."""
    out = tmp_path_factory.mktemp("ref")
    results = train(tiny(out))
    return out, results


def test_smoke_run_trains_checkpoints_exports_and_evaluates(reference_run):
    out, results = reference_run
    assert results["step"] == 20 and results["images_seen"] == 80
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-00000020", "checkpoint-00000010"]
    folded = FVQModel.from_pretrained(out / "model")
    full = FVQModel.from_pretrained(out / "model-train")
    assert folded.config.quantizer_type == "vq" and full.config.quantizer_type == "vqbridge"
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert torch.equal(folded.eval().tokenize(x), full.eval().tokenize(x))
    assert results["num_images"] == 64 and results["num_tokens"] == 64 * 16 * 16
    assert 0 < results["usage"] <= 1 and results["psnr"] > 0
    assert (out / "samples" / "reconstruction-00000020.png").exists()
    assert json.loads((out / "results.json").read_text())["step"] == 20
    assert json.loads((out / "training_config.json").read_text())["preset"] == "cpu-tiny"


def _resume_from_copy(reference_out, tmp_path, damage=None):
    """Copy the step-10 checkpoint of the reference run into a fresh run and resume it to step 20."""
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir(parents=True)
    shutil.copytree(reference_out / "checkpoints" / "checkpoint-00000010", ckpt / "checkpoint-00000010")
    if damage:
        damage(ckpt)
    results = train(tiny(tmp_path, resume="latest", eval_split=None))
    return results


def test_resume_equals_uninterrupted_run(reference_run, tmp_path):
    out, _ = reference_run
    results = _resume_from_copy(out, tmp_path)
    assert results["step"] == 20
    assert_same_weights(out, tmp_path)


def test_log_history_of_a_resumed_run_equals_the_uninterrupted_one(reference_run, tmp_path):
    out, _ = reference_run
    reference = [json.loads(line) for line in (out / "log_history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in reference] == [5, 10, 15, 20] and "usage" in reference[0]

    def interrupted(ckpt):  # the first run logged steps 5-15, then died after its step-10 checkpoint
        lines = [json.dumps(r) for r in reference[:2]] + [json.dumps({**reference[2], "loss": 123.0})]
        (tmp_path / "log_history.jsonl").write_text("\n".join(lines) + "\n")

    _resume_from_copy(out, tmp_path, interrupted)
    resumed = [json.loads(line) for line in (tmp_path / "log_history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [5, 10, 15, 20]  # the interrupted run's step 15 is gone
    for a, b in zip(resumed, reference):
        assert a.keys() == b.keys()
        assert {k: a[k] for k in a if k != "images_per_second" and a[k] != pytest.approx(b[k], rel=1e-6, abs=1e-9)} == {}, a["step"]


def test_truncated_or_flipped_checkpoints_fall_back_to_the_previous_one(reference_run, tmp_path, capsys):
    out, _ = reference_run

    def damage(ckpt):
        bad = ckpt / "checkpoint-00000015"
        shutil.copytree(ckpt / "checkpoint-00000010", bad)
        weights = bad / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated on disk
        (ckpt / ".tmp-checkpoint-00000018").mkdir()  # a save that was killed half-way
        flipped = ckpt / "checkpoint-00000017"
        shutil.copytree(ckpt / "checkpoint-00000010", flipped)
        data = bytearray((flipped / "model.safetensors").read_bytes())
        data[-100] ^= 0x40  # one flipped bit in a tensor: the file still loads
        (flipped / "model.safetensors").write_bytes(bytes(data))

    _resume_from_copy(out, tmp_path, damage)
    printed = capsys.readouterr().out
    assert "skipped unusable checkpoint" in printed and "checkpoint-00000015" in printed
    assert "checkpoint-00000017: model.safetensors does not match its recorded sha256" in printed
    assert_same_weights(out, tmp_path)  # resumed from step 10, as the uninterrupted run


def test_resume_with_no_usable_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "checkpoints" / "checkpoint-00000005"
    bad.mkdir(parents=True)
    (bad / "COMPLETE").write_text("{}")
    with pytest.raises(RuntimeError, match="(?s)No usable checkpoint.*checkpoint-00000005"):
        train(tiny(tmp_path, resume="latest"))
    with pytest.raises(RuntimeError, match="no such checkpoint folder"):
        train(tiny(tmp_path, resume=str(tmp_path / "nope")))


_PAYLOAD_MARKER = "pwned-by-checkpoint"


class _Payload:
    """A pickle that runs code when unpickled (what a replaced checkpoint file can do to a trusting loader)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_never_unpickles_a_planted_file(reference_run, tmp_path):
    out, _ = reference_run
    assert not list((out / "checkpoints").glob("*/*.pkl"))  # checkpoints hold no pickles (JSON + safetensors)
    marker = tmp_path / _PAYLOAD_MARKER
    ckpt = tmp_path / "run" / "checkpoints"
    ckpt.mkdir(parents=True)
    shutil.copytree(out / "checkpoints" / "checkpoint-00000010", ckpt / "checkpoint-00000010")
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl"):  # what accelerate would load
        torch.save(_Payload(marker), ckpt / "checkpoint-00000010" / name)
    with pytest.raises(RuntimeError, match="unexpected files"):
        train(tiny(tmp_path / "run", resume="latest", eval_split=None))
    assert not marker.exists()


def test_new_run_in_a_folder_of_another_run_stops_unless_overwritten(reference_run, tmp_path):
    out, _ = reference_run
    shutil.copytree(out / "checkpoints", tmp_path / "checkpoints")
    with pytest.raises(RuntimeError, match=r"(?s)--resume latest.*--overwrite-output-dir"):
        train(tiny(tmp_path, max_steps=2, eval_split=None))
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")][0] == "checkpoint-00000020"
    results = train(tiny(tmp_path, max_steps=2, eval_split=None, overwrite_output_dir=True, checkpoint_every=1,
                         gan_weight=0.0, image_every=0))  # fmt: skip
    assert results["step"] == 2
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["checkpoint-00000002", "checkpoint-00000001"]


def test_a_second_trainer_on_a_locked_folder_stops_and_a_stale_lock_is_taken(tmp_path):
    from fullvq_hf.training.loop import LOCK_FILE, RunLock

    cfg = tiny(tmp_path, max_steps=1, eval_split=None, gan_weight=0.0, checkpoint_every=0, image_every=0)
    with RunLock(tmp_path):  # another trainer holds the folder
        with pytest.raises(RuntimeError, match=r"Another trainer is running in output_dir .*pid"):
            train(cfg)
    # a killed run leaves its lock file behind; the kernel has released its flock: the next run goes ahead
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    assert train(cfg)["step"] == 1
    assert (tmp_path / "model" / "config.json").exists()


def test_export_is_atomic(tmp_path, monkeypatch):
    """A run killed while saving the final model leaves no half-written model folder."""

    def save_config_then_die(self, path, **kwargs):
        self.save_config(path)
        raise KeyboardInterrupt("killed while exporting")

    monkeypatch.setattr(FVQModel, "save_pretrained", save_config_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path, max_steps=1, eval_split=None, gan_weight=0.0, checkpoint_every=0, image_every=0))
    assert not (tmp_path / "model-train").exists() and not (tmp_path / "model").exists()


def test_discriminator_steps_on_exactly_its_own_loss_gradient(tmp_path, monkeypatch):
    """The generator's GAN term must not leave gradients in the discriminator: at its step, the discriminator's
    gradient is d(discriminator loss)/d(parameters), nothing more."""
    from accelerate.optimizer import AcceleratedOptimizer

    from fullvq_hf.training import tokenizer_trainer

    discriminators, expected, checked = [], [], []

    class RecordedDiscriminator(tokenizer_trainer.PatchGANDiscriminator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            discriminators.append(self)

    original_d_loss = tokenizer_trainer.hinge_d_loss

    def d_loss_and_its_gradient(logits_real, logits_fake):
        loss = original_d_loss(logits_real, logits_fake)
        params = list(discriminators[0].parameters())
        expected.append(torch.autograd.grad(loss, params, retain_graph=True))
        return loss

    original_step = AcceleratedOptimizer.step

    def checking_step(self, *args, **kwargs):
        params = self.optimizer.param_groups[0]["params"]
        if discriminators and params[0] is next(discriminators[0].parameters()):
            for p, g in zip(discriminators[0].parameters(), expected[-1]):
                torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-8)
            checked.append(True)
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(tokenizer_trainer, "PatchGANDiscriminator", RecordedDiscriminator)
    monkeypatch.setattr(tokenizer_trainer, "hinge_d_loss", d_loss_and_its_gradient)
    monkeypatch.setattr(AcceleratedOptimizer, "step", checking_step)
    # a huge clipping norm: clipping multiplies by exactly 1, so the stepped gradient is the raw one
    train(tiny(tmp_path, max_steps=2, gan_start_step=0, gan_weight=0.5, max_grad_norm=1e9, eval_split=None,
               checkpoint_every=0, image_every=0))  # fmt: skip
    assert len(checked) == 2  # both steps were checked


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_exported_weights_are_the_ema_under_compile(tmp_path, monkeypatch, backend):
    """``--compile --ema-decay``: the exported model holds the EMA weights (as saved in the last checkpoint), not
    the raw ones. The fast variant runs torch.compile with its cheap "eager" backend (the wrappers are those of a
    real compile); the slow one with the default inductor backend."""
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))
    train(tiny(tmp_path, compile=True, ema_decay=0.5, max_steps=3, checkpoint_every=3, gan_weight=0.0,
               eval_split=None, image_every=0))  # fmt: skip
    exported = load_file(tmp_path / "model-train" / "diffusion_pytorch_model.safetensors")
    raw = load_file(tmp_path / "checkpoints" / "checkpoint-00000003" / "model.safetensors")
    raw = {k.removeprefix("_orig_mod."): v for k, v in raw.items()}
    trained = [k for k, v in FVQModel.from_pretrained(tmp_path / "model-train").named_parameters() if v.requires_grad]
    assert any(not torch.equal(exported[k], raw[k]) for k in trained)  # the EMA is not the last weights
    ema = load_file(tmp_path / "checkpoints" / "checkpoint-00000003" / "ema.safetensors")
    assert set(trained) <= set(ema)
    for k in ema:
        assert torch.equal(exported[k], ema[k]), k


def test_resume_with_ema_equals_the_uninterrupted_run(tmp_path):
    """EMAModel's state (numbers in trainer_state.json, weights in ema.safetensors) continues exactly."""
    opts = dict(ema_decay=0.8, max_steps=4, checkpoint_every=2, gan_weight=0.0, eval_split=None, image_every=0)
    train(tiny(tmp_path / "whole", **opts))
    ckpt = tmp_path / "resumed" / "checkpoints"
    ckpt.mkdir(parents=True)
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "checkpoint-00000002", ckpt / "checkpoint-00000002")
    state = json.loads((ckpt / "checkpoint-00000002" / "trainer_state.json").read_text())
    assert state["ema"]["optimization_step"] == 2 and state["ema"]["decay"] == 0.8
    assert train(tiny(tmp_path / "resumed", resume="latest", **opts))["steps_this_run"] == 2
    assert_same_weights(tmp_path / "whole", tmp_path / "resumed")
    for name in ("ema.safetensors", "model.safetensors"):
        a = load_file(tmp_path / "whole" / "checkpoints" / "checkpoint-00000004" / name)
        b = load_file(tmp_path / "resumed" / "checkpoints" / "checkpoint-00000004" / name)
        assert all(torch.equal(a[k], b[k]) for k in a)


# what `accelerate launch` puts in each process's environment (measured with accelerate 1.16 on this CPU machine)
_SIMPLE_LAUNCH_OF_2 = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "ACCELERATE_USE_CPU": "True",
                       "ACCELERATE_MIXED_PRECISION": "no"}  # `--cpu --num_processes 2`: one process  # fmt: skip
_TORCHRUN_OF_2 = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                  "MASTER_PORT": "29611", "ACCELERATE_MIXED_PRECISION": "no"}  # `--multi_gpu`, no GPU  # fmt: skip


def test_launch_mistakes_are_detected_and_name_the_cpu_command():
    from fullvq_hf.training.loop import RunError, check_launch

    one_process = r"starts only ONE process.*ACCELERATE_USE_CPU=true accelerate launch --multi_gpu.*MASTER_PORT.*unset"
    with pytest.raises(RunError, match=one_process):
        check_launch(1, _SIMPLE_LAUNCH_OF_2)
    with pytest.raises(RunError, match=r"did not join one process group.*ACCELERATE_USE_CPU=true accelerate launch"):
        check_launch(1, _TORCHRUN_OF_2)
    check_launch(2, {**_TORCHRUN_OF_2, "ACCELERATE_USE_CPU": "true"})  # the working command
    check_launch(1, {})  # plain python
    check_launch(1, {"ACCELERATE_USE_CPU": "True", "ACCELERATE_MIXED_PRECISION": "no"})  # accelerate launch --cpu


@pytest.mark.slow
def test_real_launch_mistakes_stop_with_one_error_line(tmp_path):
    script = str(ROOT / "examples" / "train_tokenizer.py")
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env["OMP_NUM_THREADS"] = "1"
    base = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]  # fmt: skip
    args = [script, "--preset", "cpu-tiny", "--output-dir", str(tmp_path)]
    for flag, expected in (("--cpu", "starts only ONE process"), ("--multi_gpu", "did not join one process group")):
        proc = subprocess.run([*base, flag, *args], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode != 0 and expected in proc.stderr, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr.split("error:")[0][-200:]
    assert not (tmp_path / "checkpoints").exists()


def test_cli_help_gives_every_option_its_help_and_default_and_lists_the_presets(capsys):
    import dataclasses

    from fullvq_hf.training.config import TokenizerTrainingConfig
    from fullvq_hf.training.tokenizer_trainer import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"], prog="fullvq train-tokenizer")
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    options = text[text.index("options:") :]
    fields = dataclasses.fields(TokenizerTrainingConfig)
    for f in fields:
        flag = "--" + f.name.replace("_", "-")
        assert flag in options, flag
        squeezed = "".join(options.split())  # argparse wraps lines at spaces and hyphens
        assert f.metadata.get("help") and "".join(f.metadata["help"].split()) in squeezed, f.name
    assert options.count("(default: ") >= len(fields)
    for name in PRESETS:
        assert name in text
    assert "--overwrite-output-dir" in text and "--debug" in text


def test_cli_user_errors_are_one_line_and_debug_shows_the_traceback(reference_run, tmp_path, capsys):
    from fullvq_hf.training.tokenizer_trainer import main

    prog = "fullvq train-tokenizer"
    assert main(["--preset", "cpu-tiny", "--output-dir", str(tmp_path), "--reconstruction-loss", "l3"], prog) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"{prog}: error: reconstruction_loss must be 'l2' or 'l1'")
    with pytest.raises(SystemExit) as exit_info:
        main(["--preset", "nope"], prog)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.count("\n") == 0 and "invalid choice: 'nope'" in err and "cpu-tiny" in err
    out, _ = reference_run
    assert main(["--preset", "cpu-tiny", "--output-dir", str(out)], prog) == 2  # a folder holding another run
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--resume latest" in err and "--overwrite-output-dir" in err
    with pytest.raises(ValueError, match="reconstruction_loss"):
        main(["--preset", "cpu-tiny", "--output-dir", str(tmp_path), "--reconstruction-loss", "l3", "--debug"], prog)


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    folder = tmp_path / "images" / "train" / "things"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    (folder / "broken.png").write_bytes(b"this is not a png")
    cfg = tiny(tmp_path / "run", dataset="imagefolder", data_dir=str(tmp_path / "images"), in_channels=3,
               eval_split=None, max_steps=4, gan_weight=0.0, checkpoint_every=0, image_every=0, batch_size=7)  # fmt: skip
    results = train(cfg)
    assert results["step"] == 4
    assert results["skipped_images"] == 4  # the broken file is in every batch of 7 (the whole folder)


def test_data_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="imagefolder"):
        train(tiny(tmp_path, dataset="imagefolder", data_dir=str(tmp_path / "missing")))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises((ValueError, FileNotFoundError)):
        train(tiny(tmp_path, dataset="imagefolder", data_dir=str(empty)))


def test_config_sources_and_presets(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("preset: cpu-fmnist-fvq\nmax_steps: 7\ncodebook_size: 4096\n")
    cfg = parse_args(["--config", str(cfg_file), "--max-steps", "9", "--bridge", "B/4"])
    assert (cfg.max_steps, cfg.codebook_size, cfg.bridge, cfg.resolution) == (9, 4096, "B/4", 32)
    assert {"fvq-16k", "fvq-65k", "fvq-262k", "vqgan-lc-100k", "llamagen-vq16", "cpu-fmnist-fvq"} <= set(PRESETS)
    with pytest.raises(ValueError, match="Unknown preset"):
        make_config({"preset": "nope"})
    with pytest.raises(ValueError, match="Unknown option"):
        make_config({"codebok_size": 3})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two_processes(out, *extra: str) -> None:
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        str(ROOT / "examples" / "train_tokenizer.py"), "--preset", "cpu-tiny", "--output-dir", str(out),
        "--max-steps", "6", "--checkpoint-every", "3", "--image-every", "0", "--gan-start-step", "2",
        "--bridge-restart-every", "2",  # picks summed over both processes, the restarted rows the same on both
        "--bridge", "S/4",  # 16 positions: some are still restarted after the resume point below
        "--code-restart-every", "2", "--code-restart-window", "1",  # last picks merged, the main process's offsets
        "--code-track-rate", "0.5",  # the latents' sums of both processes
        *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks: leave no orphan behind
        output, _ = proc.communicate()
        pytest.fail("two-process run did not finish in 900 s; its output ends with:\n" + output[-4000:])
    assert proc.returncode == 0, output[-4000:]


def test_two_process_ddp_keeps_replicas_identical_and_counts_usage_over_both(tmp_path):
    _launch_two_processes(tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["num_processes"] == 2
    assert results["replicas_identical"] is True and len(results["replica_checksums"]) == 2
    last_log = json.loads((tmp_path / "log_history.jsonl").read_text().splitlines()[-1])
    assert last_log["bridge_restarts"] > 0 and last_log["code_restarts"] > 0
    assert results["images_seen"] == 6 * 4 * 2  # global batch = 2 processes x 4
    # the eval split is sharded across the ranks; usage counts must cover both shards exactly
    assert results["num_images"] == 64 and results["num_tokens"] == 64 * 16 * 16
    assert list_checkpoints(tmp_path / "checkpoints")
    # resumed from step 3, in the middle of a restart window, with a restart after it: the saved picks of both
    # processes and the RNG states (set once the data iterator exists) give the same weights to the bit
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "checkpoints" / "checkpoint-00000003", resumed / "checkpoints" / "checkpoint-00000003")
    _launch_two_processes(resumed, "--resume", "latest", "--eval-split", "none")
    assert_same_weights(tmp_path, resumed)


def test_finetune_from_pretrained_with_bf16_accumulation_and_ema(reference_run, tmp_path):
    out, _ = reference_run
    cfg = tiny(tmp_path, init_from=str(out / "model-train"), mixed_precision="bf16", gradient_accumulation_steps=2,
               ema_decay=0.9, max_steps=3, eval_split=None, checkpoint_every=0, image_every=0, gan_weight=0.0)  # fmt: skip
    results = train(cfg)
    assert results["step"] == 3 and results["images_seen"] == 3 * 2 * 4  # 2 micro-batches of 4 per step
    start = FVQModel.from_pretrained(out / "model-train")
    tuned = FVQModel.from_pretrained(tmp_path / "model-train")
    assert tuned.config.codebook_size == start.config.codebook_size
    moved = [k for k, v in tuned.state_dict().items() if not torch.equal(v, start.state_dict()[k])]
    assert moved  # it trained from the released weights
    assert all(torch.isfinite(v).all() for v in tuned.state_dict().values())


def test_streaming_imagefolder_with_photos(tmp_path):
    folder = tmp_path / "photos" / "train"
    folder.mkdir(parents=True)
    import skimage.data

    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{name}.png")
    cfg = tiny(tmp_path / "run", dataset="imagefolder", data_dir=str(tmp_path / "photos"), streaming=True,
               in_channels=3, eval_split=None, max_steps=2, gan_weight=0.0, checkpoint_every=0, image_every=0)  # fmt: skip
    assert train(cfg)["step"] == 2


def test_bridge_lr_multiplier_puts_the_bridge_in_its_own_group_and_the_schedule_scales_both(tmp_path):
    from fullvq_hf.training.schedules import get_scheduler
    from fullvq_hf.training.tokenizer_trainer import build_model, model_param_groups

    cfg = make_config({"preset": "cpu-tiny", "bridge_lr_multiplier": 4.0, "output_dir": str(tmp_path)})
    assert parse_args(["--preset", "cpu-tiny", "--bridge-lr-multiplier", "4"]).bridge_lr_multiplier == 4.0
    model = build_model(cfg)
    groups = model_param_groups(model, 1e-3, cfg.bridge_lr_multiplier)
    bridge_ids = {id(p) for n, p in model.named_parameters() if n.startswith("quantize.qbridge.")}
    assert bridge_ids and {id(p) for p in groups[1]["params"]} == bridge_ids
    assert not bridge_ids & {id(p) for p in groups[0]["params"]}
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))
    opt = torch.optim.Adam(groups, lr=1e-3)
    sched = get_scheduler("annealing", opt, 10, 2)
    for _ in range(3):
        opt.step()
        sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[1] == pytest.approx(4.0 * lrs[0]) and 0 < lrs[0] <= 1e-3
    # default: one group; a model without a bridge or a bad value is a clear error
    assert len(model_param_groups(model, 1e-3)) == 1
    vq = build_model(make_config({"preset": "cpu-tiny", "bridge": None, "quantizer_type": "vq"}))
    with pytest.raises(ValueError, match="needs a VQBridge"):
        model_param_groups(vq, 1e-3, 4.0)
    with pytest.raises(ValueError, match="must be > 0"):
        model_param_groups(model, 1e-3, 0.0)
