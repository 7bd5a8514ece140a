"""The official recipes as trainer presets (FVQ-*.sh, VQGAN-LC's runTrainVQ.sh), run length in epochs, schedule
options, and the GAN step's discriminator passes (tiny, CPU)."""

import copy
import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

from fullvq_hf.models.vqbridge import parse_bridge_preset
from fullvq_hf.training.config import PRESETS, TokenizerTrainingConfig, make_config, parse_args
from fullvq_hf.training.llamagen_trainer import LlamaGenTrainingConfig
from fullvq_hf.training.loop import check_global_batch, resolve_epochs, schedule_options
from fullvq_hf.training.tokenizer_trainer import build_model, dataset_length, train

IMAGENET = 1_281_167


# ---------------------------------------------------------------------------------------------------- presets
@pytest.mark.parametrize(
    ("preset", "bridge", "size", "dim", "patch"),
    [("fvq-16k", "QBridge-L/4", 16384, 256, 4), ("fvq-65k", "QBridge-L/8", 65536, 256, 8),
     ("fvq-262k", "QBridge-L/8", 262144, 256, 8)],
)  # fmt: skip
def test_fvq_presets_are_the_official_scripts(preset, bridge, size, dim, patch):
    cfg = make_config({"preset": preset})
    # scripts/recon/FVQ-*.sh
    assert (cfg.bridge, cfg.codebook_size, cfg.codebook_dim) == (bridge, size, dim)
    assert (cfg.global_batch_size, cfg.batch_size, cfg.learning_rate, cfg.scale_lr) == (128, 16, 1e-4, True)
    assert (cfg.num_epochs, cfg.warmup_epochs, cfg.lr_scheduler) == (40, 4, "annealing")
    assert (cfg.resolution, cfg.use_l2_norm, cfg.quantizer_type, cfg.backbone) == (256, False, "vqbridge", "VQ-16")
    # vq_train_qbridge_lr.py's defaults and what its code does with them
    assert (cfg.hold_fraction, cfg.warmup_start_factor) == (0.3, 0.005)
    assert (cfg.beta, cfg.codebook_loss_weight, cfg.entropy_loss_weight) == (0.25, 1.0, 0.0)
    assert (cfg.reconstruction_loss, cfg.perceptual_weight) == ("l2", 1.0)
    assert (cfg.gan_weight, cfg.discriminator_loss_weight, cfg.adaptive_gan_weight) == (0.5, 0.5, False)
    assert cfg.gan_start_step == 19999  # adopt_weight(..., train_steps + 1, threshold=20000)
    assert cfg.discriminator_adam_idle_steps is True  # stepped on a 0 loss before that
    assert cfg.discriminator_fresh_fakes is False  # the discriminator sees the generator step's recons_imgs
    assert (cfg.discriminator_layers, cfg.discriminator_norm, cfg.discriminator_sync_batchnorm) == (3, "batch", False)
    assert (cfg.adam_beta1, cfg.adam_beta2, cfg.adam_epsilon, cfg.weight_decay) == (0.9, 0.95, 1e-8, 0.0)
    assert (cfg.max_grad_norm, cfg.mixed_precision, cfg.ema_decay) == (1.0, "bf16", 0.0)
    assert (cfg.random_crop, cfg.crop_min_scale, cfg.flip) == (True, 0.8, True)
    # the DiT bridge of qbridge.py, unconditional (--is_uncondition)
    shape = parse_bridge_preset(cfg.bridge)
    assert (shape["bridge_type"], shape["bridge_patch_size"], shape["bridge_num_classes"]) == ("dit", patch, 0)
    assert (shape["bridge_hidden_size"], shape["bridge_depth"]) == (256, 2)


def test_vqgan_lc_preset_is_run_train_vq_sh():
    cfg = make_config({"preset": "vqgan-lc-100k"})
    assert (cfg.model_type, cfg.quantizer_type, cfg.bridge, cfg.backbone) == ("vqgan-lc", "vq", None, "VQ-16")
    assert (cfg.codebook_size, cfg.codebook_dim, cfg.codebook_feature_dim) == (100000, 8, 768)
    # --batch_size 256 on one GPU, --lr 1e-4 absolute (no batch scaling), 100 epochs, 5 of warm-up from 0, cosine
    assert (cfg.global_batch_size, cfg.batch_size, cfg.learning_rate, cfg.scale_lr) == (256, 256, 1e-4, False)
    assert (cfg.num_epochs, cfg.warmup_epochs, cfg.lr_scheduler, cfg.warmup_start_factor) == (100, 5, "cosine", 0.0)
    assert (cfg.adam_beta1, cfg.adam_beta2, cfg.adam_epsilon, cfg.weight_decay) == (0.5, 0.9, 1e-7, 0.0)
    assert (cfg.max_grad_norm, cfg.mixed_precision) == (0.0, "no")
    assert (cfg.reconstruction_loss, cfg.perceptual_weight, cfg.beta, cfg.codebook_loss_weight) == ("l1", 1.0, 0.1, 0.033)
    assert (cfg.gan_weight, cfg.adaptive_gan_weight, cfg.discriminator_loss_weight) == (0.1, True, 1.0)
    assert (cfg.gan_start_step, cfg.discriminator_layers, cfg.discriminator_norm) == (50001, 2, "batch")
    assert cfg.discriminator_adam_idle_steps is False  # its discriminator steps only once the GAN is on
    assert cfg.discriminator_fresh_fakes is True  # its discriminator step runs the updated model again
    assert (cfg.flip, cfg.crop_min_scale) == (False, 1.0)


def test_cpu_presets_keep_their_unweighted_discriminator_loss():
    for name in ("cpu-photos", "cpu-tiny"):
        assert PRESETS[name]["discriminator_loss_weight"] == 1.0
    for name in ("cpu-fmnist-fvq", "cpu-fmnist-vq", "cpu-photos", "cpu-tiny"):
        assert not {"num_epochs", "warmup_epochs", "global_batch_size", "hold_fraction"} & set(PRESETS[name])


# ---------------------------------------------------------------------------------------------------- run length
@pytest.mark.parametrize(("preset", "per_epoch"), [("fvq-16k", IMAGENET // 128), ("vqgan-lc-100k", IMAGENET // 256)])
def test_epochs_convert_to_steps_of_the_global_batch(preset, per_epoch):
    cfg = make_config({"preset": preset})
    fvq = preset.startswith("fvq")
    check_global_batch(cfg, num_processes=8 if fvq else 1)  # the scripts' 16 x 8 / 1 x 256: no error
    assert cfg.batch_size == (16 if fvq else 256)
    resolve_epochs(cfg, IMAGENET, cfg.global_batch_size)
    epochs, warmup = (40, 4) if fvq else (100, 5)
    assert (cfg.max_steps, cfg.warmup_steps) == (epochs * per_epoch, warmup * per_epoch)
    assert (cfg.max_steps, cfg.warmup_steps) == ((400360, 40036) if fvq else (500400, 25020))
    # the preset's documented step numbers are what its epochs give on ImageNet-1k
    assert (PRESETS[preset]["max_steps"], PRESETS[preset]["warmup_steps"]) == (cfg.max_steps, cfg.warmup_steps)


def test_a_recipes_global_batch_is_checked_and_an_explicit_step_option_wins_over_a_presets_epochs():
    cfg = make_config({"preset": "fvq-16k"})
    with pytest.raises(ValueError, match=r"global batch of 128, but --batch-size 16 x 1 process\(es\) x .* = 16: "
                                         r"pass --gradient-accumulation-steps 8 or --batch-size 128; or "
                                         r"--global-batch-size none"):  # fmt: skip
        check_global_batch(cfg, num_processes=1)
    check_global_batch(make_config({"preset": "fvq-16k", "gradient_accumulation_steps": 2}), num_processes=4)
    check_global_batch(make_config({"preset": "fvq-16k", "global_batch_size": None}), num_processes=3)
    # --max-steps given: the preset's epochs give way (and are cleared)
    cfg = parse_args(["--preset", "fvq-16k", "--max-steps", "3"])
    resolve_epochs(cfg, IMAGENET, 128)
    assert (cfg.max_steps, cfg.num_epochs) == (3, None)
    assert cfg.warmup_steps == 4 * (IMAGENET // 128)  # warmup_epochs still from the preset
    with pytest.raises(ValueError, match=r"--num-epochs 2.0 \(20018 steps .*\) and --max-steps 3 both set .* disagree"):
        resolve_epochs(parse_args(["--num-epochs", "2", "--max-steps", "3"]), IMAGENET, 128)
    resolve_epochs(parse_args(["--num-epochs", "2", "--max-steps", "20018"]), IMAGENET, 128)  # agreeing: fine
    cfg = make_config({"num_epochs": 0.5, "warmup_epochs": 0.1})
    resolve_epochs(cfg, 1000, 10)
    assert (cfg.max_steps, cfg.warmup_steps) == (50, 10)
    with pytest.raises(ValueError, match="fewer than one global batch of 128"):
        resolve_epochs(make_config({"num_epochs": 1}), 100, 128)


def test_epochs_without_a_known_dataset_length_name_the_step_options():
    with pytest.raises(ValueError, match=r"--num-epochs 40 and --warmup-epochs 4 need.*unknown.*pass --max-steps and --warmup-steps"):
        resolve_epochs(make_config({"preset": "fvq-16k"}), None, 128)
    # a streamed dataset: its length comes from its info's split sizes, when the dataset has them
    streamed = SimpleNamespace(info=SimpleNamespace(splits={"train": SimpleNamespace(num_examples=IMAGENET)}))
    assert dataset_length(streamed, "train") == IMAGENET
    assert dataset_length(SimpleNamespace(info=SimpleNamespace(splits=None)), "train") is None
    assert dataset_length([1, 2, 3], "train") == 3


def test_epochs_on_a_streamed_dataset_without_sizes_stop_before_anything_is_written(tmp_path):
    import skimage.data
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{name}.png")
    cfg = make_config({"preset": "cpu-tiny", "output_dir": str(tmp_path / "run"), "dataset": "imagefolder",
                       "data_dir": str(folder), "streaming": True, "num_epochs": 1, "eval_split": None})  # fmt: skip
    with pytest.raises(ValueError, match="pass --max-steps instead"):
        train(cfg)
    assert not (tmp_path / "run" / "training_config.json").exists()


def test_shared_schedule_fields_are_in_both_trainer_configs():
    fields = ("num_epochs", "warmup_epochs", "hold_fraction", "warmup_start_factor")
    for cls in (TokenizerTrainingConfig, LlamaGenTrainingConfig):
        names = {f.name for f in dataclasses.fields(cls)}
        assert set(fields) <= names, cls
    assert "global_batch_size" in {f.name for f in dataclasses.fields(TokenizerTrainingConfig)}
    cfg = make_config({"lr_scheduler": "annealing", "num_epochs": 3, "hold_fraction": 0.05}, LlamaGenTrainingConfig)
    assert schedule_options(cfg) == {"hold_fraction": 0.05}


def test_hold_fraction_on_a_schedule_without_hold_is_an_error():
    with pytest.raises(ValueError, match="--hold-fraction 0.5 applies to the annealing schedules"):
        schedule_options(make_config({"lr_scheduler": "cosine", "hold_fraction": 0.5}))
    assert schedule_options(make_config({"warmup_start_factor": 0.0})) == {"start_factor": 0.0}


def test_a_run_in_epochs_with_hold_fraction_reaches_the_schedule(tmp_path):
    """18 bundled photos, global batch 4: 4 steps an epoch; 2 epochs = 8 steps, 1 warm-up epoch = 4 steps; the
    scheduler that ran has those steps and the given hold_fraction and start factor."""
    cfg = make_config({"preset": "cpu-tiny", "output_dir": str(tmp_path), "dataset": "photos", "eval_split": None,
                       "num_epochs": 2, "warmup_epochs": 1, "global_batch_size": 4, "hold_fraction": 0.5,
                       "warmup_start_factor": 0.25, "gan_weight": 0.0, "checkpoint_every": 8, "image_every": 0,
                       "log_every": 1})  # fmt: skip
    results = train(cfg)  # cpu-tiny: batch_size 4 on 1 process
    assert results["step"] == 8 and results["global_batch_size"] == 4
    recorded = json.loads((tmp_path / "training_config.json").read_text())
    assert (recorded["max_steps"], recorded["warmup_steps"], recorded["batch_size"]) == (8, 4, 4)
    state = json.loads((tmp_path / "checkpoints" / "checkpoint-00000008" / "trainer_state.json").read_text())
    schedule = state["schedulers"]["model"]["lr_lambdas"][0]
    assert (schedule["total_steps"], schedule["warmup_steps"]) == (8, 4)
    assert (schedule["hold_fraction"], schedule["start_factor"], schedule["name"]) == (0.5, 0.25, "annealing")
    # the recorded config (epochs and the steps they gave, both) resumes as the README says
    again = train(parse_args(["--config", str(tmp_path / "training_config.json"), "--resume", "latest"]))
    assert again["step"] == 8 and again["steps_this_run"] == 0


# ---------------------------------------------------------------------------------------------------- GAN step
def test_discriminator_takes_several_batches_in_separate_passes():
    from fullvq_hf.training.losses import PatchGANDiscriminator

    torch.manual_seed(0)
    disc = PatchGANDiscriminator(in_channels=1, ndf=8, n_layers=2, norm="batch")
    real, fake = torch.randn(3, 1, 32, 32), torch.randn(3, 1, 32, 32) * 3 + 1
    twin = copy.deepcopy(disc)
    lr_, lf_ = disc(real, fake)
    torch.testing.assert_close(lr_, twin(real))
    torch.testing.assert_close(lf_, twin(fake))
    for a, b in zip(disc.buffers(), twin.buffers()):
        torch.testing.assert_close(a, b)
    concatenated = copy.deepcopy(twin)(torch.cat([real, fake]))
    assert not torch.allclose(concatenated[:3], lr_, atol=1e-3)  # what a concatenated batch would have given


def test_gan_step_sends_real_and_fake_through_a_batchnorm_discriminator_separately(tmp_path, monkeypatch):
    """At the first GAN step the discriminator's logits (and its BatchNorm running statistics) are those of
    separate forwards of the real and the fake images, as the official trainers; a concatenated batch fails this."""
    from fullvq_hf.training import tokenizer_trainer

    initial, seen, steps = [], [], []

    class Recorded(tokenizer_trainer.PatchGANDiscriminator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            initial.append(copy.deepcopy(self))
            steps.append(self)

    hinge = tokenizer_trainer.hinge_d_loss

    def recording_d_loss(logits_real, logits_fake):
        seen.append((logits_real.detach().clone(), logits_fake.detach().clone()))
        return hinge(logits_real, logits_fake)

    monkeypatch.setattr(tokenizer_trainer, "PatchGANDiscriminator", Recorded)
    monkeypatch.setattr(tokenizer_trainer, "hinge_d_loss", recording_d_loss)
    task = tokenizer_trainer.TokenizerTask(
        make_config({"preset": "cpu-tiny", "output_dir": str(tmp_path), "max_steps": 1, "gan_start_step": 0,
                     "discriminator_norm": "batch", "eval_split": None, "checkpoint_every": 0, "image_every": 0})
    )  # fmt: skip
    from fullvq_hf.training.loop import train as run_training

    run_training(task.cfg, task)
    assert len(seen) == 1
    x, fake = task.last
    d0 = initial[0].train()
    d0(fake.detach())  # the generator's GAN term: one pass of the fake images (frozen weights, BN in train mode)
    torch.testing.assert_close(seen[0][0], d0(x.detach()))
    torch.testing.assert_close(seen[0][1], d0(fake.detach()))
    for name, buffer in steps[0].named_buffers():
        torch.testing.assert_close(buffer, dict(d0.named_buffers())[name], msg=name)


@pytest.mark.parametrize(("d_weight", "factor"), [(None, 0.5), (1.0, 1.0), (0.25, 0.25)])
def test_discriminator_loss_carries_its_weight(tmp_path, monkeypatch, d_weight, factor):
    """FVQ / LlamaGen: the discriminator's hinge loss is multiplied by disc_weight (= gan_weight, 0.5) unless
    discriminator_loss_weight says otherwise (VQGAN-LC: 1): the stepped gradient is factor x d(hinge)/dp."""
    from accelerate.optimizer import AcceleratedOptimizer

    from fullvq_hf.training import tokenizer_trainer

    discs, expected, checked = [], [], []

    class Recorded(tokenizer_trainer.PatchGANDiscriminator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            discs.append(self)

    hinge = tokenizer_trainer.hinge_d_loss

    def with_gradient(logits_real, logits_fake):
        loss = hinge(logits_real, logits_fake)
        expected.append(torch.autograd.grad(loss, list(discs[0].parameters()), retain_graph=True))
        return loss

    original_step = AcceleratedOptimizer.step

    def checking_step(self, *args, **kwargs):
        if discs and self.optimizer.param_groups[0]["params"][0] is next(discs[0].parameters()):
            for p, g in zip(discs[0].parameters(), expected[-1]):
                torch.testing.assert_close(p.grad, factor * g, rtol=1e-5, atol=1e-9)
            checked.append(True)
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(tokenizer_trainer, "PatchGANDiscriminator", Recorded)
    monkeypatch.setattr(tokenizer_trainer, "hinge_d_loss", with_gradient)
    monkeypatch.setattr(AcceleratedOptimizer, "step", checking_step)
    train(make_config({"preset": "cpu-tiny", "output_dir": str(tmp_path), "max_steps": 1, "gan_start_step": 0,
                       "gan_weight": 0.5, "discriminator_loss_weight": d_weight, "max_grad_norm": 1e9,
                       "eval_split": None, "checkpoint_every": 0, "image_every": 0}))  # fmt: skip
    assert checked == [True]


def test_adaptive_gan_weight_balances_reconstruction_plus_weighted_perceptual(tmp_path, monkeypatch):
    """VQGAN-LC (models_vq.py:249) and FVQ's VQLoss: the adaptive weight's first loss is rec + perceptual_weight x p."""
    from fullvq_hf.training import tokenizer_trainer
    from fullvq_hf.training.losses import PerceptualLoss

    torch.manual_seed(0)
    weights = PerceptualLoss().save_pretrained(tmp_path / "vgg.safetensors")
    nlls, logs = [], []
    adaptive = tokenizer_trainer.adaptive_gan_weight

    def recording(nll, g_loss, last_layer):
        nlls.append(float(nll.detach()))
        return adaptive(nll, g_loss, last_layer)

    step = tokenizer_trainer.TokenizerTask.training_step

    def recording_step(self, run, batch):
        out = step(self, run, batch)
        logs.append({k: float(v) for k, v in out.items() if k.startswith("loss/")})
        return out

    monkeypatch.setattr(tokenizer_trainer, "adaptive_gan_weight", recording)
    monkeypatch.setattr(tokenizer_trainer.TokenizerTask, "training_step", recording_step)
    train(make_config({"preset": "cpu-tiny", "output_dir": str(tmp_path / "run"), "max_steps": 1, "gan_start_step": 0,
                       "adaptive_gan_weight": True, "perceptual_weight": 0.7, "perceptual_weights": str(weights),
                       "eval_split": None, "checkpoint_every": 0, "image_every": 0}))  # fmt: skip
    assert len(nlls) == 1 and logs[0]["loss/perceptual"] > 0
    assert nlls[0] == pytest.approx(logs[0]["loss/reconstruction"] + 0.7 * logs[0]["loss/perceptual"], rel=1e-5)


def test_vqgan_lc_discriminator_and_adam_epsilon_reach_the_optimizers(tmp_path):
    from fullvq_hf.training import tokenizer_trainer

    cfg = make_config({"preset": "cpu-tiny", "output_dir": str(tmp_path), "discriminator_layers": 2,
                       "adam_epsilon": 1e-7, "discriminator_norm": "batch"})  # fmt: skip
    task = tokenizer_trainer.TokenizerTask(cfg)
    from accelerate import Accelerator

    parts = task.build(Accelerator(cpu=True), 1e-3)
    disc = parts[1].model
    assert disc.n_layers == 2 and len([m for m in disc.modules() if isinstance(m, torch.nn.BatchNorm2d)]) == 2
    assert all(g["eps"] == 1e-7 for p in parts for g in p.optimizer.param_groups)
    assert build_model(cfg).config.codebook_size == 256


def test_a_wrong_global_batch_stops_the_trainer_before_anything_is_written(tmp_path):
    cfg = make_config({"preset": "cpu-tiny", "output_dir": str(tmp_path / "run"), "global_batch_size": 8})
    with pytest.raises(ValueError, match="global batch of 8, .* pass --gradient-accumulation-steps 2 or --batch-size 8"):
        train(cfg)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize("idle", [True, False])
def test_discriminator_adam_counts_the_idle_steps_before_the_gan_as_fvq(tmp_path, monkeypatch, idle):
    """FVQ steps its discriminator on a 0 loss until --disc-start: at the first real step its Adam has step count
    start + 1 and moments (1 - beta) x the first gradient, so the update is (1 - b1) / sqrt(1 - b2) of a fresh
    Adam's. discriminator_adam_idle_steps reproduces that state; off, the Adam starts fresh (VQGAN-LC)."""
    from accelerate.optimizer import AcceleratedOptimizer

    from fullvq_hf.training import tokenizer_trainer

    discs, seen = [], []

    class Recorded(tokenizer_trainer.PatchGANDiscriminator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            discs.append(self)

    original_step = AcceleratedOptimizer.step

    def recording_step(self, *args, **kwargs):
        out = original_step(self, *args, **kwargs)
        params = self.optimizer.param_groups[0]["params"]
        if discs and params[0] is next(discs[0].parameters()):
            state = self.optimizer.state[params[0]]
            seen.append((float(state["step"]), state["exp_avg"].clone(), state["exp_avg_sq"].clone(), params[0].grad))
        return out

    monkeypatch.setattr(tokenizer_trainer, "PatchGANDiscriminator", Recorded)
    monkeypatch.setattr(AcceleratedOptimizer, "step", recording_step)
    train(make_config({"preset": "cpu-tiny", "output_dir": str(tmp_path), "max_steps": 4, "gan_start_step": 3,
                       "discriminator_adam_idle_steps": idle, "eval_split": None, "checkpoint_every": 0,
                       "image_every": 0}))  # fmt: skip
    assert len(seen) == 1  # one discriminator step: the 0-based step 3
    count, exp_avg, exp_avg_sq, _ = seen[0]
    assert count == (4.0 if idle else 1.0)
    assert exp_avg.abs().sum() > 0 and torch.isfinite(exp_avg_sq).all()


def test_count_idle_adam_steps_is_the_state_of_zero_gradient_steps():
    from fullvq_hf.training.tokenizer_trainer import count_idle_adam_steps

    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5))
    b = torch.nn.Parameter(a.detach().clone())
    opt_a, opt_b = torch.optim.Adam([a], lr=0.1, betas=(0.9, 0.95)), torch.optim.Adam([b], lr=0.1, betas=(0.9, 0.95))
    for _ in range(7):  # the official: steps on a zero gradient
        b.grad = torch.zeros_like(b)
        opt_b.step()
    count_idle_adam_steps(opt_a, 7)
    g = torch.randn(5)
    a.grad, b.grad = g.clone(), g.clone()
    opt_a.step()
    opt_b.step()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    assert float(opt_a.state[a]["step"]) == float(opt_b.state[b]["step"]) == 8.0
    count_idle_adam_steps(opt_a, 100)  # has state: left alone
    assert float(opt_a.state[a]["step"]) == 8.0


@pytest.mark.parametrize("fresh", [False, True])
def test_the_discriminators_fakes_are_the_step_reconstructions_or_fresh_ones(tmp_path, monkeypatch, fresh):
    """FVQ / LlamaGen: the fake images are the generator step's reconstructions. VQGAN-LC (engine.py:86) runs the
    model again after the generator's update: with discriminator_fresh_fakes the fakes are the updated model's
    reconstruction of the same images."""
    from fullvq_hf import FVQModel
    from fullvq_hf.training import tokenizer_trainer

    fakes = []

    class Recorded(tokenizer_trainer.PatchGANDiscriminator):
        def forward(self, images, *more):
            if more:
                fakes.append(more[0].detach().clone())
            return super().forward(images, *more)

    monkeypatch.setattr(tokenizer_trainer, "PatchGANDiscriminator", Recorded)
    task = tokenizer_trainer.TokenizerTask(
        make_config({"preset": "cpu-tiny", "output_dir": str(tmp_path), "max_steps": 1, "gan_start_step": 0,
                     "discriminator_fresh_fakes": fresh, "eval_split": None, "checkpoint_every": 0,
                     "image_every": 0})
    )  # fmt: skip
    from fullvq_hf.training.loop import train as run_training

    run_training(task.cfg, task)
    x, step_reconstruction = task.last
    updated = FVQModel.from_pretrained(tmp_path / "model-train").train()
    with torch.no_grad():
        fresh_reconstruction = updated(x).sample
    assert len(fakes) == 1
    assert not torch.allclose(step_reconstruction, fresh_reconstruction, atol=1e-4)  # the step changed the model
    torch.testing.assert_close(fakes[0], fresh_reconstruction if fresh else step_reconstruction.detach())
