"""Train a tokenizer (FVQ / VQGAN-LC / plain VQ / SimVQ) with accelerate: one process on a CPU up to many GPUs
and nodes (``accelerate launch``), exact resume, atomic checkpoints, trackers, and a final export.

Order of one step (global batch = batch_size x processes x accumulation):
    pixels -> model -> reconstruction loss + perceptual + quantizer loss (+ GAN generator term) -> generator step
    [after gan_start_step] real / fake -> discriminator -> hinge loss -> discriminator step
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..data import ImageTransform, StepBatchSampler, TransformedImages, collate_images, load_image_dataset
from ..metrics import CodebookUsage
from ..models import BACKBONES, FVQModel, VQGANLCModel
from ..models.vqbridge import parse_bridge_preset
from .common import (  # noqa: F401  (re-exported: the names lived here before the LlamaGen trainer shared them)
    CHECKPOINT_PREFIX,
    EMA,
    TrainState,
    list_checkpoints,
    make_accelerator,
    prepare_run_state,
    replica_checksums,
    resume_from,
    save_checkpoint,
    save_image_grid,
    unwrap_model,
)
from .config import TokenizerTrainingConfig
from .losses import (
    PatchGANDiscriminator,
    adaptive_gan_weight,
    build_perceptual_loss,
    hinge_d_loss,
    hinge_g_loss,
)
from .schedules import get_scheduler, scale_lr

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- model
def build_model(cfg: TokenizerTrainingConfig) -> FVQModel | VQGANLCModel:
    """A fresh tokenizer from the config, or ``init_from`` (any ``from_pretrained`` source) to fine-tune."""
    cls = {"fvq": FVQModel, "vqgan-lc": VQGANLCModel}.get(cfg.model_type)
    if cls is None:
        raise ValueError(f"model_type={cfg.model_type!r} is not one of 'fvq', 'vqgan-lc'.")
    if cfg.init_from:
        return cls.from_pretrained(cfg.init_from)
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"Unknown backbone {cfg.backbone!r}; choose one of {sorted(BACKBONES)}.")
    kwargs = dict(BACKBONES[cfg.backbone], in_channels=cfg.in_channels, out_channels=cfg.in_channels,
                  codebook_size=cfg.codebook_size, codebook_dim=cfg.codebook_dim, sample_size=cfg.resolution,
                  entropy_loss_weight=cfg.entropy_loss_weight)  # fmt: skip
    for name in ("beta", "codebook_loss_weight"):
        if getattr(cfg, name) is not None:
            kwargs[name] = getattr(cfg, name)
    if cls is FVQModel:
        kwargs.update(quantizer_type=cfg.quantizer_type, use_l2_norm=cfg.use_l2_norm)
        if cfg.quantizer_type == "vqbridge":
            kwargs.update(parse_bridge_preset(cfg.bridge or "L/4"))
        return FVQModel(**kwargs)
    model = VQGANLCModel(codebook_feature_dim=cfg.codebook_feature_dim, **kwargs)
    if cfg.lc_codebook:
        model.load_codebook(cfg.lc_codebook)
    else:
        logger.warning("vqgan-lc without --lc-codebook: the frozen codebook is random Gaussian features.")
    return model


# ---------------------------------------------------------------------------------------------------- data
def build_dataloader(cfg: TokenizerTrainingConfig, accelerator: Accelerator, start_step: int):
    dataset = load_image_dataset(cfg.dataset, cfg.train_split, cfg.data_dir, cfg.streaming, cfg.image_column)
    transform = ImageTransform(cfg.resolution, cfg.in_channels, cfg.random_crop, flip=cfg.flip)
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
def train(cfg: TokenizerTrainingConfig) -> dict:
    """Run the training described by ``cfg``; returns the final evaluation results (also in results.json)."""
    out_dir = Path(cfg.output_dir)
    report_to = None if cfg.report_to in (None, "none", "") else cfg.report_to
    accelerator = make_accelerator(out_dir, cfg.mixed_precision, cfg.gradient_accumulation_steps, report_to)
    set_seed(cfg.seed)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "training_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    model = build_model(cfg)
    global_batch = cfg.batch_size * accelerator.num_processes * cfg.gradient_accumulation_steps
    lr = scale_lr(cfg.learning_rate, global_batch) if cfg.scale_lr else cfg.learning_rate
    betas = (cfg.adam_beta1, cfg.adam_beta2)
    opt_g = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, weight_decay=cfg.weight_decay)
    # a warm-up longer than a (short) run is clipped, so a 3-step smoke run of any preset works
    warmup_steps = min(cfg.warmup_steps, max(0, cfg.max_steps - 1))
    sched_g = get_scheduler(cfg.lr_scheduler, opt_g, cfg.max_steps, warmup_steps)
    use_gan = cfg.gan_weight > 0
    perceptual = build_perceptual_loss(cfg.perceptual_weights) if cfg.perceptual_weight > 0 else None
    # Schedulers stay unprepared (accelerate would step them once per process) and are checkpointed explicitly;
    # they count optimizer steps, i.e. global steps.
    objects = [model, opt_g]
    if use_gan:
        disc = PatchGANDiscriminator(in_channels=cfg.in_channels, norm=cfg.discriminator_norm)
        if accelerator.num_processes > 1 and cfg.discriminator_norm == "batch":
            disc = torch.nn.SyncBatchNorm.convert_sync_batchnorm(disc)
        d_lr = cfg.discriminator_lr or lr
        opt_d = torch.optim.Adam(disc.parameters(), lr=d_lr, betas=betas, weight_decay=cfg.weight_decay)
        sched_d = get_scheduler(cfg.lr_scheduler, opt_d, cfg.max_steps, warmup_steps)
        objects += [disc, opt_d]
    prepared = accelerator.prepare(*objects)
    model, opt_g = prepared[:2]
    accelerator.register_for_checkpointing(sched_g)
    if use_gan:
        disc, opt_d = prepared[2:]
        accelerator.register_for_checkpointing(sched_d)
    if perceptual is not None:
        perceptual = perceptual.to(accelerator.device)
    if cfg.compile:
        model = torch.compile(model)

    state = TrainState(counters=("images_seen", "skipped_images"))
    checkpoint_dir = out_dir / "checkpoints"
    ema = prepare_run_state(
        accelerator, state, accelerator.unwrap_model(model), cfg, checkpoint_dir, "fullvq_tokenizer", report_to
    )

    loader = build_dataloader(cfg, accelerator, state.step)
    unwrapped = accelerator.unwrap_model(model)
    usage = CodebookUsage(unwrapped.codebook_size, device=accelerator.device)
    rec_fn = F.mse_loss if cfg.reconstruction_loss == "l2" else F.l1_loss
    if cfg.reconstruction_loss not in ("l2", "l1"):
        raise ValueError(f"reconstruction_loss must be 'l2' or 'l1', got {cfg.reconstruction_loss!r}.")
    bar = tqdm(total=cfg.max_steps, initial=state.step, desc="train tokenizer", disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    model.train()
    t_last, images_last, logs = time.time(), state.images_seen, {}
    micro = 0
    for batch in loader:
        state.skipped_images += batch["num_skipped"]
        x = batch["pixel_values"]
        if x is None:
            continue
        x = x.to(accelerator.device)
        gan_active = use_gan and state.step >= cfg.gan_start_step
        with accelerator.accumulate(model):
            with accelerator.autocast():
                out = model(x)
                rec = rec_fn(out.sample.float(), x)
                loss = rec + out.loss
                logs_step = {"loss/reconstruction": rec.detach(), "loss/quantizer": out.loss.detach(),
                             "loss/codebook": out.codebook_loss.detach(), "loss/commitment": out.commitment_loss.detach()}  # fmt: skip
                if perceptual is not None:
                    p_loss = perceptual(out.sample.float(), x).mean()
                    loss = loss + cfg.perceptual_weight * p_loss
                    logs_step["loss/perceptual"] = p_loss.detach()
                if gan_active:
                    g_loss = hinge_g_loss(disc(out.sample))
                    weight = cfg.gan_weight
                    if cfg.adaptive_gan_weight:
                        weight = weight * adaptive_gan_weight(rec, g_loss, unwrapped.decoder.last_layer)
                    loss = loss + weight * g_loss
                    logs_step["loss/generator"] = g_loss.detach()
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                logs_step["grad_norm"] = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)
            if gan_active:
                with accelerator.autocast():
                    logits = disc(torch.cat([x, out.sample.detach()]))
                    d_loss = hinge_d_loss(*logits.float().chunk(2))
                accelerator.backward(d_loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(disc.parameters(), cfg.max_grad_norm)
                opt_d.step()
                opt_d.zero_grad(set_to_none=True)
                logs_step["loss/discriminator"] = d_loss.detach()
        usage.update(out.indices)
        state.images_seen += x.shape[0] * accelerator.num_processes
        micro += 1
        if not accelerator.sync_gradients:
            continue
        sched_g.step()
        if use_gan:
            with warnings.catch_warnings():  # before gan_start_step opt_d has not stepped; the schedule still counts
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
                sched_d.step()
        if ema is not None:
            ema.update(unwrapped)
        state.step += 1
        bar.update(1)
        logs = {k: float(v) for k, v in logs_step.items()}
        if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
            stats = usage.compute()
            now = time.time()
            logs.update(
                lr=sched_g.get_last_lr()[0],
                usage=stats["usage"],
                perplexity=stats["perplexity"],
                dead_codes=stats["dead_codes"],
                images_per_second=(state.images_seen - images_last) / max(now - t_last, 1e-9),
                skipped_images=state.skipped_images,
            )
            t_last, images_last = now, state.images_seen
            usage.reset()
            accelerator.log(logs, step=state.step)
            bar.set_postfix(loss=f"{logs['loss/reconstruction']:.4f}", usage=f"{stats['usage']:.3f}")
        if cfg.image_every and (state.step % cfg.image_every == 0) and accelerator.is_main_process:
            save_image_grid([x, out.sample], out_dir / "samples" / f"reconstruction-{state.step:08d}.png")
        if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
            save_checkpoint(accelerator, checkpoint_dir, state.step, cfg.checkpoints_total_limit)
        if state.step >= cfg.max_steps:
            break
    bar.close()
    if state.skipped_images:
        accelerator.print(f"skipped {state.skipped_images} unreadable images")

    results = export_and_evaluate(cfg, accelerator, model, ema, state)
    # Free the DDP wrappers (their reducers hold the gloo/nccl process group) while every rank is still alive,
    # then destroy the group: otherwise a rank can hang at exit in ProcessGroupGloo's destructor, waiting for a
    # peer that has already gone.
    del model, opt_g, unwrapped
    if use_gan:
        del disc, opt_d
    accelerator.free_memory()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


def export_and_evaluate(cfg, accelerator, model, ema, state) -> dict:
    """Save the inference (folded) and training models, then evaluate on the eval split."""
    from ..evaluation.tokenizer_eval import evaluate_tokenizer

    out_dir = Path(cfg.output_dir)
    accelerator.wait_for_everyone()
    unwrapped = unwrap_model(accelerator, model)  # under DDP and torch.compile wrappers
    if ema is not None:
        ema.copy_to(unwrapped)
    if accelerator.is_main_process:
        unwrapped.save_pretrained(out_dir / "model-train")
        if isinstance(unwrapped, FVQModel):
            unwrapped.save_pretrained(out_dir / "model", fold_codebook=True)
        else:
            unwrapped.save_pretrained(out_dir / "model")
    accelerator.wait_for_everyone()
    results = {"step": state.step, "images_seen": state.images_seen, "skipped_images": state.skipped_images,
               "num_processes": accelerator.num_processes}  # fmt: skip
    if accelerator.num_processes > 1:
        # every replica must hold the same weights (codebook and bridge included): compare checksums
        results.update(replica_checksums(accelerator, unwrapped))
    if cfg.eval_split:
        dataset = load_image_dataset(cfg.dataset, cfg.eval_split, cfg.data_dir, False, cfg.image_column)
        transform = ImageTransform(cfg.resolution, cfg.in_channels, random_crop=False, flip=False)
        results.update(
            evaluate_tokenizer(
                unwrapped, dataset, transform, batch_size=cfg.eval_batch_size, max_images=cfg.eval_max_images,
                image_column=cfg.image_column, feature_extractor=cfg.feature_extractor, accelerator=accelerator,
            )
        )  # fmt: skip
    if accelerator.is_main_process:
        (out_dir / "results.json").write_text(json.dumps(results, indent=2))
        accelerator.print(json.dumps(results, indent=2))
    return results

