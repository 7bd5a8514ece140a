"""Train a tokenizer (FVQ / VQGAN-LC / plain VQ / SimVQ) with accelerate: one process on a CPU up to many GPUs
and nodes (``accelerate launch``), exact resume, atomic checkpoints, trackers, and a final export.

Order of one step (global batch = batch_size x processes x accumulation):
    pixels -> model -> reconstruction loss + perceptual + quantizer loss (+ GAN generator term) -> generator step
    [after gan_start_step] real, fake -> discriminator (two separate passes) -> weighted hinge loss -> its step
    (fake: the reconstruction of the generator step; with discriminator_fresh_fakes, as VQGAN-LC, a second
    forward of the tokenizer after its update)
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import time

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from ..data import ImageTransform, StepBatchSampler, TransformedImages, collate_images, load_image_dataset
from ..metrics import CodebookUsage
from ..models import BACKBONES, QBRIDGE_MODELS, FVQModel, VQGANLCModel, load_tokenizer
from ..models.vqbridge import BRIDGE_WIDTHS, parse_bridge_preset
from .config import TokenizerTrainingConfig, explicit_options, run_cli
from .loop import (  # noqa: F401  (list_checkpoints re-exported: the name lived here first)
    Part,
    Run,
    Task,
    atomic_dir,
    list_checkpoints,
    save_image_grid,
)
from .loop import train as run_training
from .losses import (
    PatchGANDiscriminator,
    adaptive_gan_weight,
    build_perceptual_loss,
    hinge_d_loss,
    hinge_g_loss,
)
from .restarts import BridgePositionRestarts, CodeRestarts, share_threshold

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- model
# the options that describe a tokenizer's architecture (compared with a loaded model's config, and recorded from it)
MODEL_OPTIONS = ("model_type", "backbone", "bridge", "quantizer_type", "codebook_size", "codebook_dim", "use_l2_norm",
                 "entropy_loss_weight", "beta", "codebook_loss_weight", "codebook_feature_dim", "in_channels")  # fmt: skip
_BRIDGE_KEYS = ("bridge_type", "bridge_patch_size", "bridge_hidden_size", "bridge_depth", "bridge_num_heads",
                "bridge_mlp_ratio", "bridge_num_classes")  # fmt: skip


def _bridge_name(config: dict) -> str | None:
    """The ``--bridge`` preset name that builds exactly this config's bridge, or None (no bridge, or none fits)."""
    if config.get("quantizer_type") != "vqbridge":
        return None
    defaults = {k: v.default for k, v in inspect.signature(FVQModel.__init__).parameters.items()}
    names = [f"{s}/{p}" for s in BRIDGE_WIDTHS for p in (2, 4, 8)] + list(QBRIDGE_MODELS)
    for name in names:
        preset = {k: defaults[k] for k in _BRIDGE_KEYS} | parse_bridge_preset(name)
        if all(config.get(k, preset[k]) == preset[k] for k in _BRIDGE_KEYS):
            return name
    return None


def model_options(model: FVQModel | VQGANLCModel) -> dict:
    """The trainer options (``MODEL_OPTIONS``) that describe ``model``, read from its config: what a run with it
    actually trains. ``backbone`` / ``bridge`` are preset names, None where no preset builds that shape."""
    config = dict(model.config)
    backbone = next((name for name, shape in BACKBONES.items()
                     if all(_same(config.get(k), v) for k, v in shape.items())), None)  # fmt: skip
    out = {"model_type": "vqgan-lc" if isinstance(model, VQGANLCModel) else "fvq", "backbone": backbone,
           "bridge": _bridge_name(config), "in_channels": config.get("in_channels")}  # fmt: skip
    for name in MODEL_OPTIONS:
        if name not in out and name in config:
            out[name] = config[name]
    if isinstance(model, VQGANLCModel):
        out["quantizer_type"] = "vq"
    return out


def _same(a, b) -> bool:
    return list(a) == list(b) if isinstance(a, list | tuple) and isinstance(b, list | tuple) else a == b


def check_model_options(cfg: TokenizerTrainingConfig, model: FVQModel | VQGANLCModel, source: str, flag: str) -> None:
    """ValueError naming every model option the user set (``explicit_options``) to a value ``model`` (loaded
    from ``source`` by ``flag``) does not have: such a run would silently train ``source``'s architecture."""
    config, have = dict(model.config), model_options(model)
    given = explicit_options(cfg)
    conflicts = []
    for name in MODEL_OPTIONS:
        value = getattr(cfg, name)
        if name not in given or value is None:  # None: "the model's own"
            continue
        if name not in have:  # an option of the other model class (e.g. codebook_feature_dim for FVQ): unused
            continue
        if name == "backbone":
            shape = BACKBONES.get(value)
            ok = shape is not None and all(_same(config.get(k), v) for k, v in shape.items())
        elif name == "bridge":
            if config.get("quantizer_type") != "vqbridge":
                ok = False
            else:
                preset = parse_bridge_preset(value)
                ok = all(config.get(k) == v for k, v in preset.items())
        else:
            ok = _same(have.get(name), value)
        if not ok:
            shown = have.get(name)
            if name == "bridge" and shown is None:
                shown = (", ".join(f"{k}={config.get(k)}" for k in _BRIDGE_KEYS)
                         if config.get("quantizer_type") == "vqbridge" else "no bridge")  # fmt: skip
            if name == "backbone" and shown is None:
                shown = f"block_out_channels={list(config.get('block_out_channels', ()))}"
            conflicts.append(f"--{name.replace('_', '-')} {value} ({source} has {shown})")
    if "lc_codebook" in given and cfg.lc_codebook:
        conflicts.append(f"--lc-codebook {cfg.lc_codebook} ({source} has its own codebook)")
    if conflicts:
        raise ValueError(
            f"{flag} {source} keeps that tokenizer's "
            f"{'architecture' if flag == '--init-from' else 'encoder, decoder and codebook'}, so these options "
            "cannot be honoured: "
            f"{'; '.join(conflicts)}. Leave them out (or give the values it has); to train another architecture, "
            f"start from scratch (without {flag})" + (
                "; to add a fresh bridge to a plain VQ, use --finetune-from-vq instead of --init-from"
                if flag == "--init-from" else "") + "."
        )  # fmt: skip


def build_model(cfg: TokenizerTrainingConfig) -> FVQModel | VQGANLCModel:
    """A fresh tokenizer from the config; ``init_from`` (any tokenizer folder or Hub id) to continue training it as
    it is; or ``finetune_from_vq`` (a plain-VQ tokenizer) to start FVQ from it with a fresh ``bridge``
    (``FVQModel.from_vq_tokenizer``). Model options the loaded model cannot honour are a ValueError naming them."""
    if cfg.model_type not in ("fvq", "vqgan-lc"):
        raise ValueError(f"model_type={cfg.model_type!r} is not one of 'fvq', 'vqgan-lc'.")
    if cfg.init_from and cfg.finetune_from_vq:
        raise ValueError(
            "--init-from and --finetune-from-vq both give the starting weights: use --init-from to continue a "
            "tokenizer as it is, --finetune-from-vq to add a fresh bridge to a plain VQ."
        )
    if cfg.init_from:
        model = load_tokenizer(cfg.init_from)
        check_model_options(cfg, model, cfg.init_from, "--init-from")
        return model
    if cfg.finetune_from_vq:
        return _from_vq(cfg)
    cls = {"fvq": FVQModel, "vqgan-lc": VQGANLCModel}[cfg.model_type]
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"Unknown backbone {cfg.backbone!r}; choose one of {sorted(BACKBONES)}.")
    kwargs = dict(BACKBONES[cfg.backbone], in_channels=cfg.in_channels, out_channels=cfg.in_channels,
                  codebook_size=cfg.codebook_size, codebook_dim=cfg.codebook_dim, sample_size=cfg.resolution,
                  entropy_loss_weight=cfg.entropy_loss_weight)  # fmt: skip
    for name in ("beta", "codebook_loss_weight"):
        if getattr(cfg, name) is not None:
            kwargs[name] = getattr(cfg, name)
    if cls is FVQModel:
        kwargs.update(quantizer_type=cfg.quantizer_type, use_l2_norm=cfg.use_l2_norm,
                      code_offsets=bool(cfg.code_restart_every))  # fmt: skip
        if cfg.quantizer_type == "vqbridge":
            kwargs.update(parse_bridge_preset(cfg.bridge or "L/4"))
        return FVQModel(**kwargs)
    model = VQGANLCModel(codebook_feature_dim=cfg.codebook_feature_dim, **kwargs)
    if cfg.lc_codebook:
        model.load_codebook(cfg.lc_codebook)
    else:
        logger.warning("vqgan-lc without --lc-codebook: the frozen codebook is random Gaussian features.")
    return model


def _from_vq(cfg: TokenizerTrainingConfig) -> FVQModel:
    """``finetune_from_vq``: the plain VQ's encoder, decoder and codebook under a fresh ``cfg.bridge``."""
    source = load_tokenizer(cfg.finetune_from_vq)
    if not isinstance(source, FVQModel) or source.config.quantizer_type != "vq":
        kind = f"quantizer_type={source.config.quantizer_type!r}" if isinstance(source, FVQModel) else type(source).__name__
        raise ValueError(
            f"--finetune-from-vq needs a plain-VQ tokenizer (an FVQModel with quantizer_type='vq', e.g. a converted "
            f"LlamaGen VQ-16), but {cfg.finetune_from_vq} holds {kind}; to continue that model as it is, use "
            "--init-from."
        )
    given = explicit_options(cfg)
    conflicts = []
    if cfg.model_type != "fvq":
        conflicts.append(f"--model-type {cfg.model_type} (the result is an FVQ model)")
    if "quantizer_type" in given and cfg.quantizer_type != "vqbridge":
        conflicts.append(f"--quantizer-type {cfg.quantizer_type} (the result has a bridge: 'vqbridge')")
    if "use_l2_norm" in given and cfg.use_l2_norm:
        conflicts.append("--use-l2-norm true (the bridge quantizer searches the projected codebook unnormalised)")
    if conflicts:
        raise ValueError(f"--finetune-from-vq cannot honour: {'; '.join(conflicts)}. Leave them out.")
    # the kept parts' shapes come from the source: options that set them must agree with it
    shape_check = dataclasses.replace(cfg, bridge=None, quantizer_type="vq", use_l2_norm=source.config.use_l2_norm)
    honoured = {"bridge", "quantizer_type", "use_l2_norm", "model_type", "beta", "codebook_loss_weight", "entropy_loss_weight"}
    shape_check._explicit_options = given - honoured
    check_model_options(shape_check, source, cfg.finetune_from_vq, "--finetune-from-vq")
    overrides = {name: getattr(cfg, name) for name in ("beta", "codebook_loss_weight", "entropy_loss_weight")
                 if name in given and getattr(cfg, name) is not None}  # fmt: skip
    if cfg.code_restart_every:
        overrides["code_offsets"] = True
    return FVQModel.from_vq_tokenizer(source, cfg.bridge or "QBridge-L/4", **overrides)


def record_trained_architecture(cfg: TokenizerTrainingConfig, model: FVQModel | VQGANLCModel) -> None:
    """Set ``cfg``'s model options to what ``model`` is (so ``training_config.json`` and the card record the
    architecture actually trained, never an option that was not used)."""
    for name, value in model_options(model).items():
        setattr(cfg, name, value)


# ---------------------------------------------------------------------------------------------------- data
def load_train_dataset(cfg: TokenizerTrainingConfig):
    return load_image_dataset(cfg.dataset, cfg.train_split, cfg.data_dir, cfg.streaming, cfg.image_column)


def dataset_length(dataset, split: str) -> int | None:
    """Number of examples of a loaded dataset: ``len`` of a map-style one; for a streamed one the split size its
    ``info`` records (Hub datasets with metadata), else None."""
    try:
        return len(dataset)
    except TypeError:
        pass
    splits = getattr(getattr(dataset, "info", None), "splits", None) or {}
    info = splits.get(split) if hasattr(splits, "get") else None
    return int(info.num_examples) if info is not None and info.num_examples else None


def build_dataloader(cfg: TokenizerTrainingConfig, accelerator: Accelerator, start_step: int, dataset=None):
    """The training batches from step ``start_step`` on; ``dataset``: the already loaded training split, if any."""
    if dataset is None:
        dataset = load_train_dataset(cfg)
    if not 0.0 < cfg.crop_min_scale <= 1.0:
        raise ValueError(f"crop_min_scale must lie in (0, 1] (a fraction of the shorter side), got {cfg.crop_min_scale}.")
    transform = ImageTransform(cfg.resolution, cfg.in_channels, cfg.random_crop, crop_scale=(cfg.crop_min_scale, 1.0),
                               flip=cfg.flip)  # fmt: skip
    if cfg.streaming:
        return _streaming_loader(dataset, transform, cfg, accelerator, start_step)
    images = TransformedImages(dataset, transform, cfg.image_column, seed=cfg.seed)
    sampler = StepBatchSampler(
        len(images), cfg.batch_size, accelerator.num_processes, accelerator.process_index, cfg.seed,
        start_step * cfg.gradient_accumulation_steps, cfg.max_steps * cfg.gradient_accumulation_steps,
    )  # fmt: skip
    return torch.utils.data.DataLoader(images, batch_sampler=sampler, collate_fn=collate_images, num_workers=cfg.num_workers)


def _streaming_loader(dataset, transform, cfg, accelerator, start_step):
    """ImageNet-scale data: each process reads its shard of a streamed dataset, epoch after epoch (reshuffled
    with ``set_epoch``); on resume, the examples this process already consumed are skipped (exact when the stream
    order is deterministic)."""
    from datasets.distributed import split_dataset_by_node

    shard = split_dataset_by_node(dataset, rank=accelerator.process_index, world_size=accelerator.num_processes)
    shard = shard.shuffle(seed=cfg.seed, buffer_size=10000)
    to_skip = start_step * cfg.batch_size * cfg.gradient_accumulation_steps

    def batches():
        nonlocal to_skip
        items, position, epoch = [], 0, 0
        while True:
            shard.set_epoch(epoch)
            seen = 0
            for example in shard:
                seen += 1
                if to_skip:
                    to_skip -= 1
                    position += 1
                    continue
                g = torch.Generator().manual_seed(_stream_seed(cfg.seed, accelerator.process_index, position))
                position += 1
                try:
                    items.append({"pixel_values": transform(example[cfg.image_column], g), "labels": -1})
                except (OSError, ValueError, SyntaxError):
                    items.append(None)
                if len(items) == cfg.batch_size:
                    yield collate_images(items)
                    items = []
            if seen == 0:
                raise ValueError(f"The streamed dataset {cfg.dataset!r} has no examples for process {accelerator.process_index}.")
            epoch += 1

    return batches()


def _stream_seed(seed: int, rank: int, position: int) -> int:
    return (seed * 1_000_003 + rank * 7919 + position) & 0x7FFFFFFFFFFFFFFF


# ---------------------------------------------------------------------------------------------------- training
BRIDGE_PREFIX = "quantize.qbridge."


def model_param_groups(model: torch.nn.Module, lr: float, bridge_lr_multiplier: float = 1.0) -> list[dict]:
    """Adam parameter groups of a tokenizer: everything at ``lr``, and with ``bridge_lr_multiplier != 1`` a second
    group holding the VQBridge (``quantize.qbridge.*``) at ``lr * bridge_lr_multiplier``. The model's group comes
    first (the loop logs ``param_groups[0]``'s lr); a ``LambdaLR`` schedule scales both groups alike."""
    if not bridge_lr_multiplier > 0:
        raise ValueError(f"bridge_lr_multiplier must be > 0, got {bridge_lr_multiplier}.")
    named = list(model.named_parameters())
    if bridge_lr_multiplier == 1.0:
        return [{"params": [p for _, p in named], "lr": lr}]
    bridge = [p for n, p in named if n.startswith(BRIDGE_PREFIX)]
    if not bridge:
        raise ValueError(f"bridge_lr_multiplier={bridge_lr_multiplier} needs a VQBridge, and this model has none "
                         "(quantizer_type 'vqbridge' with a --bridge preset); leave bridge_lr_multiplier at 1.")  # fmt: skip
    rest = [p for n, p in named if not n.startswith(BRIDGE_PREFIX)]
    return [{"params": rest, "lr": lr}, {"params": bridge, "lr": lr * bridge_lr_multiplier}]


def code_restart_threshold(
    cfg: TokenizerTrainingConfig, model: FVQModel | VQGANLCModel, num_processes: int = 1
) -> float:
    """``code_restart_threshold`` (unset: 1), or with ``code_restart_share`` the threshold of that share of a code's
    mean picks in the window, from the run's global batch, the model's tokens per image and its codebook size
    (``restarts.share_threshold``). Giving both, or a share that is not positive, is a ValueError."""
    share = cfg.code_restart_share
    if share is None:
        return 1.0 if cfg.code_restart_threshold is None else cfg.code_restart_threshold
    if cfg.code_restart_threshold is not None:
        raise ValueError(
            f"code_restart_threshold={cfg.code_restart_threshold} and code_restart_share={share} both set the code "
            "restarts' threshold; give one of them."
        )
    if not share > 0:
        raise ValueError(f"code_restart_share must be positive, got {share}.")
    global_batch = cfg.batch_size * num_processes * cfg.gradient_accumulation_steps
    tokens_per_image = math.prod(model.latent_shape(cfg.resolution, cfg.resolution))
    return share_threshold(share, cfg.code_restart_window, global_batch, tokens_per_image, model.codebook_size)


class TokenizerTask(Task):
    """What differs for a tokenizer: the model (+ PatchGAN discriminator), the losses of one step, the export of
    the inference (folded) and training models, and the evaluation."""

    project = "fullvq_tokenizer"
    description = "train tokenizer"
    counters = ("images_seen", "skipped_images")
    reference_batch = 128

    def __init__(self, cfg: TokenizerTrainingConfig):
        if cfg.reconstruction_loss not in ("l2", "l1"):
            raise ValueError(f"reconstruction_loss must be 'l2' or 'l1', got {cfg.reconstruction_loss!r}.")
        self.cfg = cfg
        self.rec_fn = F.mse_loss if cfg.reconstruction_loss == "l2" else F.l1_loss
        self.use_gan = cfg.gan_weight > 0
        # FVQ / LlamaGen weigh the discriminator's loss with their disc_weight (= gan_weight); VQGAN-LC does not (1)
        self.d_weight = cfg.gan_weight if cfg.discriminator_loss_weight is None else cfg.discriminator_loss_weight
        self.last = None  # (pixels, reconstruction) of the last micro-batch, for the image grid
        self.restarts = None  # BridgePositionRestarts with --bridge-restart-every
        self.code_restarts = None  # CodeRestarts with --code-restart-every
        self.train_dataset = None

    def build(self, accelerator: Accelerator, lr: float) -> list[Part]:
        cfg = self.cfg
        model = build_model(cfg)
        record_trained_architecture(cfg, model)
        self.restarts = (
            BridgePositionRestarts(model, cfg.bridge_restart_every, accelerator) if cfg.bridge_restart_every else None
        )
        self._restart_checked = -1  # the step whose restart is done (micro-batches of one step share it)
        needs_restarts = {"code_track_rate": "moves codes through the offsets of the code restarts",
                          "code_restart_share": "sets the threshold of the code restarts"}  # fmt: skip
        for name, what in needs_restarts.items():
            if getattr(cfg, name) and not cfg.code_restart_every:
                raise ValueError(
                    f"{name}={getattr(cfg, name)} {what}; set --code-restart-every too (e.g. 1), or leave {name} unset."
                )
        self.code_restarts = None
        if cfg.code_restart_every:
            threshold = code_restart_threshold(cfg, model, accelerator.num_processes)
            if cfg.code_restart_share is not None:
                accelerator.print(f"code restarts below {threshold:g} decayed picks ({cfg.code_restart_share:g}x the "
                                  f"mean share of a code in {cfg.code_restart_window} steps)")  # fmt: skip
            self.code_restarts = CodeRestarts(model, cfg.code_restart_every, cfg.code_restart_window, accelerator,
                                              threshold, cfg.seed, cfg.code_track_rate)  # fmt: skip
        adam = dict(betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay)
        parts = [Part("model", model, torch.optim.Adam(model_param_groups(model, lr, cfg.bridge_lr_multiplier), lr=lr,
                                                       **adam))]
        self.perceptual = build_perceptual_loss(cfg.perceptual_weights) if cfg.perceptual_weight > 0 else None
        if self.perceptual is not None:
            self.perceptual = self.perceptual.to(accelerator.device)
        if self.use_gan:
            disc = PatchGANDiscriminator(in_channels=cfg.in_channels, n_layers=cfg.discriminator_layers,
                                         norm=cfg.discriminator_norm)  # fmt: skip
            if cfg.discriminator_sync_batchnorm and cfg.discriminator_norm == "batch" and accelerator.num_processes > 1:
                if accelerator.device.type != "cuda":
                    raise ValueError(
                        "--discriminator-sync-batchnorm needs GPUs (torch's SyncBatchNorm has no CPU kernel); leave it "
                        "off: each process then normalises with its own batch statistics, as the official trainers."
                    )
                disc = torch.nn.SyncBatchNorm.convert_sync_batchnorm(disc)
            opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.discriminator_lr or lr, **adam)
            parts.append(Part("discriminator", disc, opt_d))
        return parts

    def build_dataloader(self, run: Run, start_step: int):
        self.usage = CodebookUsage(run.bare().codebook_size, device=run.accelerator.device)
        self.t_last, self.images_last = time.time(), run.state.images_seen
        dataset, self.train_dataset = self.train_dataset, None
        return build_dataloader(self.cfg, run.accelerator, start_step, dataset)

    def num_train_examples(self) -> int | None:
        self.train_dataset = load_train_dataset(self.cfg)  # kept for build_dataloader
        return dataset_length(self.train_dataset, self.cfg.train_split)

    def training_step(self, run: Run, batch: dict) -> dict | None:
        cfg, acc, state = self.cfg, run.accelerator, run.state
        state.skipped_images += batch["num_skipped"]
        x = batch["pixel_values"]
        if x is None:
            return None
        x = x.to(acc.device)
        if self.restarts is not None and self._restart_checked != state.step:
            self.restarts.step(state.step)
            self._restart_checked = state.step
        gan_active = self.use_gan and state.step >= cfg.gan_start_step
        with acc.autocast():
            out = run.model(x)
            rec = self.rec_fn(out.sample.float(), x)
            loss = rec + out.loss
            nll = rec  # what the adaptive GAN weight balances: reconstruction + weighted perceptual loss
            logs = {"loss/reconstruction": rec.detach(), "loss/quantizer": out.loss.detach(),
                    "loss/codebook": out.codebook_loss.detach(), "loss/commitment": out.commitment_loss.detach()}  # fmt: skip
            if self.perceptual is not None:
                p_loss = self.perceptual(out.sample.float(), x).mean()
                loss = loss + cfg.perceptual_weight * p_loss
                nll = nll + cfg.perceptual_weight * p_loss
                logs["loss/perceptual"] = p_loss.detach()
            if gan_active:
                # the generator's GAN term goes through the bare discriminator with its parameters frozen: its
                # gradient reaches the reconstruction only, and the discriminator steps on its own loss alone
                disc = run.bare(1)
                with frozen(disc):
                    g_loss = hinge_g_loss(disc(out.sample))
                weight = cfg.gan_weight
                if cfg.adaptive_gan_weight:
                    # on reconstruction + perceptual, as VQGAN-LC (models_vq.py:249) and FVQ's VQLoss (vq_loss.py:133)
                    weight = weight * adaptive_gan_weight(nll, g_loss, run.bare().decoder.last_layer)
                loss = loss + weight * g_loss
                logs["loss/generator"] = g_loss.detach()
        grad_norm = run.optimize(loss, run.parts[0])
        if grad_norm is not None:
            logs["grad_norm"] = grad_norm
        if gan_active:
            part_d = run.parts[1]
            fake = out.sample.detach()
            if cfg.discriminator_fresh_fakes:  # VQGAN-LC: the tokenizer again, after its step, for the fakes
                with torch.no_grad(), acc.autocast():
                    fake = run.model(x).sample.detach()
            with acc.autocast():
                # real and fake in separate passes (BatchNorm statistics per batch), as the official trainers
                logits_real, logits_fake = part_d.model(x, fake)
                d_loss = hinge_d_loss(logits_real.float(), logits_fake.float())
            if self.cfg.discriminator_adam_idle_steps:
                count_idle_adam_steps(part_d.optimizer, state.step)
            run.optimize(self.d_weight * d_loss, part_d)
            logs["loss/discriminator"] = d_loss.detach()
        self.usage.update(out.indices)
        if self.restarts is not None:
            self.restarts.update(out.indices)
        if self.code_restarts is not None:
            self.code_restarts.update(out.indices, out.latents)
            if acc.sync_gradients:  # the optimizer has stepped: step + 1 is complete
                self.code_restarts.step(state.step + 1, out.latents)
        state.images_seen += x.shape[0] * acc.num_processes
        self.last = (x, out.sample)
        return logs

    def log_metrics(self, run: Run) -> dict:
        stats = self.usage.compute()
        self.usage.reset()
        now = time.time()
        images = run.state.images_seen - self.images_last
        metrics = dict(usage=stats["usage"], perplexity=stats["perplexity"], dead_codes=stats["dead_codes"],
                       images_per_second=images / max(now - self.t_last, 1e-9), skipped_images=run.state.skipped_images)  # fmt: skip
        self.t_last, self.images_last = now, run.state.images_seen
        if self.restarts is not None:
            metrics["bridge_restarts"] = self.restarts.restarted
        if self.code_restarts is not None:
            metrics["code_restarts"] = self.code_restarts.restarted
        return metrics

    def state_dict(self) -> dict:
        state = {}
        if self.restarts is not None:
            state["bridge_restarts"] = self.restarts.state_dict()
        if self.code_restarts is not None:
            state["code_restarts"] = self.code_restarts.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if self.restarts is not None and "bridge_restarts" in state:
            self.restarts.load_state_dict(state["bridge_restarts"])
        if self.code_restarts is not None and "code_restarts" in state:
            self.code_restarts.load_state_dict(state["code_restarts"])

    def on_step_end(self, run: Run) -> None:
        step = run.state.step
        if self.cfg.image_every and step % self.cfg.image_every == 0 and run.accelerator.is_main_process and self.last:
            save_image_grid(list(self.last), run.out_dir / "samples" / f"reconstruction-{step:08d}.png")

    def export(self, run: Run, model: torch.nn.Module) -> None:
        """The training model (``model-train``) and the inference model (``model``, FVQ: folded codebook)."""
        with atomic_dir(run.out_dir / "model-train") as folder:
            model.save_pretrained(folder)
        with atomic_dir(run.out_dir / "model") as folder:
            if isinstance(model, FVQModel):
                model.save_pretrained(folder, fold_codebook=True)
            else:
                model.save_pretrained(folder)

    def results(self, run: Run, model: torch.nn.Module) -> dict:
        cfg = self.cfg
        if run.state.skipped_images:
            run.accelerator.print(f"skipped {run.state.skipped_images} unreadable images")
        if not cfg.eval_split:
            return {}
        from ..evaluation.tokenizer_eval import evaluate_tokenizer

        dataset = load_image_dataset(cfg.dataset, cfg.eval_split, cfg.data_dir, False, cfg.image_column)
        transform = ImageTransform(cfg.resolution, cfg.in_channels, random_crop=False, flip=False)
        return evaluate_tokenizer(
            model, dataset, transform, batch_size=cfg.eval_batch_size, max_images=cfg.eval_max_images,
            image_column=cfg.image_column, feature_extractor=cfg.feature_extractor, accelerator=run.accelerator,
        )  # fmt: skip


def count_idle_adam_steps(optimizer: torch.optim.Optimizer, idle_steps: int) -> None:
    """Give an Adam that has not stepped yet the state of one that took ``idle_steps`` steps on zero gradients
    (without weight decay those leave its moments at 0 and only advance its step count, i.e. its bias correction):
    what FVQ's / LlamaGen's discriminator has at ``--disc-start``, having been stepped on a 0 loss until then. An
    optimizer with state already (a later step, a resumed run) is left as it is."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the torch one
    if idle_steps <= 0 or any(inner.state.get(p) for group in inner.param_groups for p in group["params"]):
        return
    for group in inner.param_groups:
        if group.get("weight_decay", 0):
            raise ValueError("discriminator_adam_idle_steps assumes no weight decay (zero-gradient steps would decay).")
        on_device = group.get("capturable") or group.get("fused")  # where torch's Adam keeps its step count
        dtype = torch.float64 if torch.get_default_dtype() == torch.float64 and not group.get("fused") else torch.float32
        for p in group["params"]:
            state = {"step": torch.tensor(float(idle_steps), dtype=dtype, device=p.device if on_device else "cpu")}
            for key in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group.get("amsgrad") else ()):
                state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
            inner.state[p] = state


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """Parameters of ``module`` not requiring gradients inside the block (restored after)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def train(cfg: TokenizerTrainingConfig) -> dict:
    """Run the training described by ``cfg``; returns the final results (also in ``output_dir/results.json``)."""
    return run_training(cfg, TokenizerTask(cfg))


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``fullvq train-tokenizer`` / ``examples/train_tokenizer.py``: parse, train; a user error is one line."""
    return run_cli(argv, prog, TokenizerTrainingConfig, train)
