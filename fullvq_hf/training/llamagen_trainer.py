"""Train LlamaGen's class-to-image GPT (``LlamaGenForConditionalGeneration``) on a codes dataset made by
``fullvq extract-codes`` (``fullvq_hf.training.codes``), with accelerate: one CPU process up to many GPUs and nodes.

LlamaGen's recipe (``autoregressive/train/train_c2i.py``): AdamW (0.9, 0.95), weight decay 0.05 on the >= 2-D
parameters only (matrices and embedding tables; norm weights excluded), lr 1e-4 for a global batch of 256 (scaled
linearly with the global batch here), constant lr, gradient clipping at 1.0, bf16, label dropout 0.1 for
classifier-free guidance, token/residual/FFN dropout 0.1, 300 ImageNet epochs.

One optimizer step (global batch = batch_size x processes x accumulation):
    codes (B, H*W), labels (B,) -> model(input_ids=codes, class_labels=labels, labels=codes) -> cross-entropy -> step

Batches are a pure function of (seed, step) (``StepBatchSampler``) and the dropout RNGs are part of every
checkpoint (``loop``: JSON/safetensors), so ``--resume latest`` continues bit-identically. Checkpoints are atomic
(``loop``). The run ends with ``output_dir/model`` (``save_pretrained``; the EMA weights when
``--ema-decay`` > 0), ``results.json``, tensorboard logs and sample grids (one row per class) in ``samples/``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from ..data import StepBatchSampler
from ..models import LlamaGenConfig, LlamaGenForConditionalGeneration
from ..models.modeling_llamagen import check_cfg_interval, check_guidance_scale
from .codes import load_codes
from .config import TrainingConfig, explicit_options, make_config, option, override, run_cli
from .config import parse_args as _parse_args
from .loop import Part, Run, Task, atomic_dir, save_image_grid
from .loop import train as run_training

logger = logging.getLogger(__name__)

LLAMAGEN_REFERENCE_BATCH = 256  # LlamaGen's lr 1e-4 is for a global batch of 256
IMAGENET_TRAIN_IMAGES = 1_281_167


@dataclass
class LlamaGenTrainingConfig(TrainingConfig):
    # the shared options (TrainingConfig) whose default or help differs here
    batch_size: int = override("batch_size", 32, "sequences per process and micro-batch")
    learning_rate: float = override("learning_rate", help="lr for a global batch of 256 (scaled linearly when scale_lr)")
    scale_lr: bool = override("scale_lr", help="scale the lr with the global batch (batch x processes x accumulation) "
                              "/ 256")  # fmt: skip
    lr_scheduler: str = override("lr_scheduler", "constant")
    num_epochs: float | None = override(
        "num_epochs",
        help="train this many epochs of the codes instead of max_steps; an epoch is one pass over the codes dataset's "
        "ROWS (one per image view: a ten-crop codes dataset holds 10 rows per image)",
    )
    weight_decay: float = override("weight_decay", 0.05, "AdamW weight decay, on >= 2-D parameters only")
    output_dir: str = override("output_dir", "outputs/llamagen")
    checkpoint_every: int = override("checkpoint_every", 5000)
    log_every: int = override("log_every", 50)
    # data
    codes: str | None = option(None, "codes dataset: a save_to_disk folder of extract-codes, or a Hub dataset id")
    codes_split: str = option("train", "split of the codes dataset")
    # model
    model: str = option("GPT-B", "GPT-B, GPT-L, GPT-XL, GPT-XXL or GPT-3B (fullvq_hf.models.LLAMAGEN_PRESETS)")
    init_from: str | None = option(None, "a from_pretrained generator (folder or Hub id) to fine-tune")
    vocab_size: int | None = option(None, "vocabulary; none = the codes' codebook_size")
    grid_size: int | None = option(None, "side of the square token grid; none = the codes' grid")
    num_classes: int | None = option(None, "classes; none = the codes' num_classes")
    hidden_size: int | None = option(None, "override of the preset (small CPU models)")
    num_hidden_layers: int | None = option(None, "override of the preset")
    num_attention_heads: int | None = option(None, "override of the preset")
    intermediate_size: int | None = option(None, "override of the preset")
    class_dropout_prob: float = option(0.1, "label dropout (classifier-free guidance)")
    token_dropout_prob: float = option(0.1, "token embedding dropout")
    resid_dropout_prob: float = option(0.1, "residual dropout")
    ffn_dropout_prob: float = option(0.1, "feed-forward dropout")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass (less memory)")
    # sample grids: sampled tokens every sample_every steps (.npy), decoded to a PNG when a tokenizer is given
    sample_every: int = option(5000, "steps between sample grids (tokens .npy, PNG with --tokenizer); 0 disables")
    tokenizer: str | None = option(None, "from_pretrained source of the tokenizer that made the codes (PNG grids)")
    sample_classes: int = option(10, "grid rows: this many classes spread over [0, num_classes)")
    samples_per_class: int = option(8, "grid columns")
    sample_guidance_scale: float = option(
        2.0, "classifier-free guidance scale of the samples; recorded as the exported model's default"
    )
    sample_cfg_interval: int = option(
        -1, "LlamaGen's cfg_interval: -1 guides every token, k >= 0 tokens 0..k+1; the export's default too"
    )
    sample_temperature: float = option(1.0, "sampling temperature")
    sample_top_k: int | None = option(None, "top-k sampling; none disables it")
    sample_top_p: float = option(1.0, "top-p sampling")


# ImageNet 256 x 256 with a downsample-16 tokenizer: 16 x 16 tokens, 1000 classes; 300 epochs of 1,281,167 images
# at LlamaGen's global batch 256 (drop_last: 5004 steps an epoch) = 1,501,200 steps. batch_size 32 is per process
# (8 GPUs -> 256); the lr scales with the actual global batch.
_C2I = dict(vocab_size=16384, grid_size=16, num_classes=1000, batch_size=32, learning_rate=1e-4, scale_lr=True,
            lr_scheduler="constant", warmup_steps=0, weight_decay=0.05, mixed_precision="bf16",
            max_steps=300 * (IMAGENET_TRAIN_IMAGES // LLAMAGEN_REFERENCE_BATCH), checkpoint_every=5000,
            sample_every=5000, log_every=100, sample_guidance_scale=4.0, sample_top_k=2000)  # fmt: skip

# FVQ's generator recipe: yfChang-cv/FVQ scripts/generation/train_c2i_L_lr.sh and train_c2i_XL_lr.sh, both running
# autoregressive/train/train_c2i_lr.py (LlamaGen's train_c2i.py with FVQ's schedule), on the codes of a 16k FVQ
# tokenizer (ImageNet 256, ten-crop + flip). From train_c2i_lr.py: lr 1e-4 x (global batch // 256) (:136, :334; the
# scale_lr here gives the same for multiples of 256); AdamW betas (0.9, 0.95) (:336-337), weight decay 0.05 on the
# >= 2-D parameters (:35-41, :335); no warm-up ("warmup_steps = 0 * len(loader)", :159); learning annealing: factor 1
# while step / (total - 1) < 0.05, then linear to 0.01 at the last step (:158-172: hold 5%, end 0.01); grad clip 1.0
# (:338); bf16 (:345); residual/FFN dropout 0.1 (:324), token dropout 0.1 (:325); label dropout 0.1 (gpt.py:43); no
# EMA (the scripts pass no --ema). An epoch is 1,281,167 code rows (dataset/imagenet.py:26: one row per image, a
# random view drawn per read) with drop_last (:155): 1,281,167 // global batch steps. The steps are fixed here, not
# given as epochs: our ten-crop codes hold every view as a row of its own (10 per image), so an epoch over them would
# be 10 official epochs. Sampling (autoregressive/sample/sample_c2i_ddp_qbridge.py:185-193): cfg_interval -1, top-k 0
# (off), top-p 1, temperature 1; the CFG scales are FVQ's README (README.md:77-80) and paper: 1.75 for GPT-L, 1.65 for
# GPT-XL. They are recorded in the exported generator's generation_config (its sample/generate/pipeline default).
_FVQ_C2I = {**_C2I, "lr_scheduler": "annealing", "warmup_steps": 0, "hold_fraction": 0.05, "adam_beta1": 0.9,
            "adam_beta2": 0.95, "weight_decay": 0.05, "max_grad_norm": 1.0, "class_dropout_prob": 0.1,
            "token_dropout_prob": 0.1, "resid_dropout_prob": 0.1, "ffn_dropout_prob": 0.1, "ema_decay": 0.0,
            "sample_top_k": None, "sample_top_p": 1.0, "sample_temperature": 1.0, "sample_cfg_interval": -1}  # fmt: skip

PRESETS: dict[str, dict[str, Any]] = {
    "c2i-gpt-b": {**_C2I, "model": "GPT-B"},
    "c2i-gpt-l": {**_C2I, "model": "GPT-L"},
    # train_c2i_L_lr.sh: GPT-L, --global-batch-size 2048 on 2 nodes x 8 GPUs (128 per process), --epochs 300:
    # 300 x (1,281,167 // 2048 = 625) = 187,500 steps at lr 8e-4; CFG 1.75
    "fvq-c2i-gpt-l": {**_FVQ_C2I, "model": "GPT-L", "batch_size": 128, "global_batch_size": 2048,
                      "max_steps": 300 * (IMAGENET_TRAIN_IMAGES // 2048), "sample_guidance_scale": 1.75},
    # train_c2i_XL_lr.sh: GPT-XL, --global-batch-size 1024 on 2 nodes x 8 GPUs (64 per process), --epochs 350:
    # 350 x (1,281,167 // 1024 = 1251) = 437,850 steps at lr 4e-4; CFG 1.65
    "fvq-c2i-gpt-xl": {**_FVQ_C2I, "model": "GPT-XL", "batch_size": 64, "global_batch_size": 1024,
                       "max_steps": 350 * (IMAGENET_TRAIN_IMAGES // 1024), "sample_guidance_scale": 1.65},
    # Fashion-MNIST demo: 8 x 8 tokens of a 16,384-code tokenizer (cpu-fmnist-fvq), 10 classes. 5.2M parameters
    # (half of them the 16,384-way output head, which dominates the cost): ~1.6 steps/s on 2 quiet CPU cores.
    # A short run underfits, so no dropout but the label dropout CFG needs, and a high constant lr: on the demo's
    # codes this reached loss 6.53 and 35% classifier accuracy at CFG 3, against 8.44 and chance (10%) with
    # LlamaGen's dropouts, lr 1e-3 cosine and batch 32 for 200 steps. 600 steps (about two passes over the demo's
    # 20,000 images): 66-76% classifier accuracy at CFG 3 on two machines' demo codes, against 52-60% after 300,
    # where it sits on the edge of learning the classes (benchmarks/usage_demo_curves.md, thirteenth wave).
    "cpu-fmnist-gpt": dict(model="GPT-B", hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                           token_dropout_prob=0.0, resid_dropout_prob=0.0, ffn_dropout_prob=0.0,
                           batch_size=64, learning_rate=3e-3, scale_lr=False, lr_scheduler="constant",
                           warmup_steps=20, max_steps=600, checkpoint_every=200, sample_every=200,
                           log_every=10, samples_per_class=8, sample_guidance_scale=3.0),
    # smallest possible end-to-end run (tests)
    "cpu-tiny-gpt": dict(model="GPT-B", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, batch_size=8,
                         learning_rate=1e-3, scale_lr=False, lr_scheduler="cosine", warmup_steps=2, max_steps=20,
                         checkpoint_every=10, sample_every=10, log_every=5, samples_per_class=2, sample_classes=3,
                         report_to="none"),
}  # fmt: skip
LlamaGenTrainingConfig.PRESETS = PRESETS
LlamaGenTrainingConfig.DESCRIPTION = "Train a LlamaGen class-to-image GPT on a codes dataset with accelerate."


def make_llamagen_config(args: dict[str, Any] | None = None) -> LlamaGenTrainingConfig:
    """Class defaults < preset < ``config`` file < explicit options (see ``fullvq_hf.training.config``)."""
    return make_config(args, LlamaGenTrainingConfig)


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> LlamaGenTrainingConfig:
    return _parse_args(argv, prog, LlamaGenTrainingConfig)


# ---------------------------------------------------------------------------------------------------- model
def _codes_facts(codes, metadata: dict) -> dict:
    """Grid, vocabulary and classes of a codes dataset: from its metadata, else from the data."""
    import pyarrow.compute as pc

    table = codes.data.table if hasattr(codes.data, "table") else codes.data
    num_tokens = len(codes[0]["codes"])
    if metadata.get("grid_height") and metadata.get("grid_width"):
        grid = (int(metadata["grid_height"]), int(metadata["grid_width"]))
    else:
        side = math.isqrt(num_tokens)
        grid = (side, side) if side * side == num_tokens else None
    if metadata.get("codebook_size"):
        codebook_size = int(metadata["codebook_size"])
    else:
        codebook_size = int(pc.max(pc.list_flatten(table.column("codes"))).as_py()) + 1
    labels = table.column("label")
    label_range = (int(pc.min(labels).as_py()), int(pc.max(labels).as_py()))
    num_classes = int(metadata.get("num_classes") or label_range[1] + 1)
    return dict(num_tokens=num_tokens, grid=grid, codebook_size=codebook_size, label_range=label_range,
                num_classes=num_classes, class_names=metadata.get("class_names"))  # fmt: skip


def build_model(cfg: LlamaGenTrainingConfig, facts: dict) -> LlamaGenForConditionalGeneration:
    """A fresh generator from the preset + overrides, sized by the codes (vocabulary, grid, classes), or
    ``init_from``; then checked against the codes: a clear ``ValueError`` for any mismatch."""
    dropout = dict(class_dropout_prob=cfg.class_dropout_prob, token_dropout_prob=cfg.token_dropout_prob,
                   resid_dropout_prob=cfg.resid_dropout_prob, ffn_dropout_prob=cfg.ffn_dropout_prob)  # fmt: skip
    if cfg.init_from:
        model = LlamaGenForConditionalGeneration.from_pretrained(cfg.init_from, **dropout)
        check_init_options(cfg, model.config, cfg.init_from)
    else:
        grid = [cfg.grid_size] * 2 if cfg.grid_size else facts["grid"]
        if grid is None:
            raise ValueError(
                f"The codes have {facts['num_tokens']} tokens per row, not a square grid, and no grid metadata; "
                "pass --grid-size."
            )
        overrides = {
            name: getattr(cfg, name)
            for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
            if getattr(cfg, name) is not None
        }
        config = LlamaGenConfig.from_preset(
            cfg.model,
            vocab_size=cfg.vocab_size or facts["codebook_size"],
            grid_size=list(grid),
            num_classes=cfg.num_classes or facts["num_classes"],
            **dropout,
            **overrides,
        )
        names = facts.get("class_names")
        if names and len(names) == config.num_classes:
            config.id2label = dict(enumerate(names))
            config.label2id = {name: i for i, name in enumerate(names)}
        model = LlamaGenForConditionalGeneration(config)
    check_codes_fit(model.config, facts, cfg.codes)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


# the options that set the generator's architecture (the dropouts are honoured with --init-from: they are passed on)
MODEL_OPTIONS = ("model", "vocab_size", "grid_size", "num_classes", "hidden_size", "num_hidden_layers",
                 "num_attention_heads", "intermediate_size")  # fmt: skip
_PRESET_FIELDS = ("num_hidden_layers", "num_attention_heads", "hidden_size")  # LLAMAGEN_PRESETS' tuple order


def model_options(config: LlamaGenConfig) -> dict[str, Any]:
    """The trainer's ``MODEL_OPTIONS`` that describe a generator config: what a run with it actually trains.
    ``model`` is the ``LLAMAGEN_PRESETS`` name of its shape (None where no preset has it); ``grid_size`` the side
    of a square grid (None for another grid)."""
    from ..models.configuration_llamagen import LLAMAGEN_PRESETS

    shape = tuple(getattr(config, name) for name in _PRESET_FIELDS)
    height, width = config.grid_size
    return {
        "model": next((name for name, preset in LLAMAGEN_PRESETS.items() if tuple(preset) == shape), None),
        "vocab_size": config.vocab_size,
        "grid_size": height if height == width else None,
        "num_classes": config.num_classes,
        **{name: getattr(config, name) for name in (*_PRESET_FIELDS, "intermediate_size")},
    }


def check_init_options(cfg: LlamaGenTrainingConfig, config: LlamaGenConfig, source: str) -> None:
    """ValueError naming every model option the user set (``explicit_options``: command line, config file; not a
    preset's values) to a value the ``--init-from`` generator (``config``, from ``source``) does not have: the run
    would silently train that generator's architecture while recording the option."""
    from ..models.configuration_llamagen import LLAMAGEN_PRESETS

    given, have = explicit_options(cfg), model_options(config)
    conflicts = []
    for name in MODEL_OPTIONS:
        value = getattr(cfg, name)
        if name not in given or value is None:  # None: "the codes' / the model's own"
            continue
        if name == "model":
            key = value if value in LLAMAGEN_PRESETS else f"GPT-{value}"
            preset = dict(zip(_PRESET_FIELDS, LLAMAGEN_PRESETS.get(key, (None,) * 3)))
            # fields given explicitly next to --model replace the preset's (and are checked on their own)
            ok = all(preset[k] == getattr(config, k) for k in _PRESET_FIELDS if k not in given)
            shown = have["model"] or ", ".join(f"{k}={getattr(config, k)}" for k in _PRESET_FIELDS)
        elif name == "grid_size":
            ok = list(config.grid_size) == [value, value]
            shown = "x".join(str(g) for g in config.grid_size)
        else:
            ok = getattr(config, name) == value
            shown = getattr(config, name)
        if not ok:
            conflicts.append(f"--{name.replace('_', '-')} {value} ({source} has {shown})")
    if conflicts:
        raise ValueError(
            f"--init-from {source} keeps that generator's architecture, so these options cannot be honoured: "
            f"{'; '.join(conflicts)}. Leave them out (or give the values it has); to train another architecture, "
            "start from scratch (without --init-from)."
        )


def record_trained_architecture(cfg: LlamaGenTrainingConfig, config: LlamaGenConfig) -> None:
    """Set ``cfg``'s model options to what the ``--init-from`` generator is, so ``training_config.json`` (and
    the card) record the architecture actually trained, never a preset value that was not used."""
    for name, value in model_options(config).items():
        if name == "model":
            if value is not None:
                cfg.model = value
        else:
            setattr(cfg, name, value)


def check_codes_fit(config: LlamaGenConfig, facts: dict, source: str | None = None) -> None:
    """The generator must cover the codes' vocabulary, grid and classes."""
    where = f"The codes dataset {source}" if source else "The codes dataset"
    if facts["codebook_size"] > config.vocab_size:
        raise ValueError(
            f"{where} uses a tokenizer of {facts['codebook_size']} codes but the generator's vocab_size is "
            f"{config.vocab_size}: token ids would fall outside the embedding. Leave --vocab-size unset (it follows "
            "the codes) or set it >= the codebook size."
        )
    if facts["num_tokens"] != config.num_image_tokens:
        raise ValueError(
            f"{where} has {facts['num_tokens']} tokens per image (grid {facts['grid']}) but the generator's grid "
            f"{tuple(config.grid_size)} holds {config.num_image_tokens}; leave --grid-size unset or match it."
        )
    low, high = facts["label_range"]
    if low < 0 or high >= config.num_classes:
        raise ValueError(
            f"{where} has labels in [{low}, {high}] but the generator has num_classes={config.num_classes}; "
            "leave --num-classes unset (it follows the codes) or make it larger than the largest label."
        )


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """LlamaGen's AdamW groups: weight decay on every >= 2-D parameter (linear weights, embedding tables), none
    on 1-D ones (RMSNorm weights, any bias). Each group also names its parameters (``names``)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append((name, p))
    return [
        {"params": [p for _, p in decay], "weight_decay": weight_decay, "names": [n for n, _ in decay]},
        {"params": [p for _, p in no_decay], "weight_decay": 0.0, "names": [n for n, _ in no_decay]},
    ]


# ---------------------------------------------------------------------------------------------------- data
class CodesBatches(torch.utils.data.Dataset):
    """A codes dataset read by ``(step, index)`` keys of ``StepBatchSampler``, a whole batch per Arrow read."""

    def __init__(self, codes):
        self.codes = codes.select_columns(["codes", "label"]).with_format("torch")

    def __len__(self) -> int:
        return len(self.codes)

    def __getitems__(self, keys: list) -> dict:
        rows = self.codes[[int(k[1]) if isinstance(k, tuple) else int(k) for k in keys]]
        return {"input_ids": rows["codes"].long(), "class_labels": rows["label"].long()}

    def __getitem__(self, key) -> dict:
        batch = self.__getitems__([key])
        return {k: v[0] for k, v in batch.items()}


def _as_batch(batch: dict) -> dict:
    return batch


def build_dataloader(cfg: LlamaGenTrainingConfig, codes, accelerator: Accelerator, start_step: int):
    sampler = StepBatchSampler(
        len(codes), cfg.batch_size, accelerator.num_processes, accelerator.process_index, cfg.seed,
        start_step * cfg.gradient_accumulation_steps, cfg.max_steps * cfg.gradient_accumulation_steps,
    )  # fmt: skip
    # a private generator: creating the iterator must not draw from the global RNG that dropout uses
    return torch.utils.data.DataLoader(
        CodesBatches(codes), batch_sampler=sampler, collate_fn=_as_batch, num_workers=cfg.num_workers,
        generator=torch.Generator().manual_seed(cfg.seed),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------- samples
def sample_classes(num_classes: int, count: int) -> list[int]:
    """``count`` classes spread evenly over ``[0, num_classes)`` (all of them when there are fewer)."""
    if count >= num_classes:
        return list(range(num_classes))
    return sorted({round(i * (num_classes - 1) / max(count - 1, 1)) for i in range(count)})


@torch.no_grad()
def save_samples(model, cfg: LlamaGenTrainingConfig, out_dir: Path, step: int, tokenizer=None) -> Path:
    """Sample ``samples_per_class`` token grids for each of ``sample_classes`` classes (same seed every time);
    save the tokens (``tokens-<step>.npy``, (rows, cols, H, W)) and, with a tokenizer, a PNG with a row per class."""
    classes = sample_classes(model.config.num_classes, cfg.sample_classes)
    labels = torch.tensor(classes, device=model.device).repeat_interleave(cfg.samples_per_class)
    generator = torch.Generator(device=model.device).manual_seed(cfg.seed)
    tokens = model.sample(labels, guidance_scale=cfg.sample_guidance_scale, cfg_interval=cfg.sample_cfg_interval,
                          temperature=cfg.sample_temperature, top_k=cfg.sample_top_k or None, top_p=cfg.sample_top_p,
                          generator=generator)  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = tokens.view(len(classes), cfg.samples_per_class, *tokens.shape[1:]).cpu().numpy()
    np.save(out_dir / f"tokens-{step:08d}.npy", grid)
    if tokenizer is None:
        return out_dir / f"tokens-{step:08d}.npy"
    images = tokenizer.detokenize(tokens.to(tokenizer.device)).float().clamp(-1, 1)
    rows = list(images.view(len(classes), cfg.samples_per_class, *images.shape[1:]))
    path = out_dir / f"samples-{step:08d}.png"
    save_image_grid(rows, path, max_images=cfg.samples_per_class)
    return path


def _load_sample_tokenizer(cfg: LlamaGenTrainingConfig, facts: dict, model_config: LlamaGenConfig, device):
    from ..models.loading import load_tokenizer

    tokenizer = load_tokenizer(cfg.tokenizer).to(device).eval()
    if tokenizer.codebook_size < model_config.vocab_size:
        raise ValueError(
            f"--tokenizer {cfg.tokenizer} has {tokenizer.codebook_size} codes but the generator samples ids below "
            f"{model_config.vocab_size}; pass the tokenizer that made the codes."
        )
    if tokenizer.codebook_size != facts["codebook_size"]:
        raise ValueError(
            f"--tokenizer {cfg.tokenizer} has {tokenizer.codebook_size} codes but the codes were made by a tokenizer "
            f"of {facts['codebook_size']}; pass the tokenizer that made the codes."
        )
    return tokenizer


# ---------------------------------------------------------------------------------------------------- training
class LlamaGenTask(Task):
    """What differs for the generator: the model sized by the codes, AdamW groups, cross-entropy steps, sample
    grids, the export."""

    project = "fullvq_llamagen"
    description = "train llamagen"
    counters = ("samples_seen",)
    reference_batch = LLAMAGEN_REFERENCE_BATCH
    device_specific_seed = True  # dropout and label dropout: a different stream in each process

    def __init__(self, cfg: LlamaGenTrainingConfig):
        if not cfg.codes:
            raise ValueError(
                "--codes is required: a codes dataset made by `fullvq extract-codes` (folder or Hub id)."
            )
        check_cfg_interval(cfg.sample_cfg_interval)
        check_guidance_scale(cfg.sample_guidance_scale)
        self.cfg = cfg

    def build(self, accelerator: Accelerator, lr: float) -> list[Part]:
        cfg = self.cfg
        self.codes, metadata = load_codes(cfg.codes, cfg.codes_split)
        self.facts = _codes_facts(self.codes, metadata)
        model = build_model(cfg, self.facts)
        if cfg.init_from:
            record_trained_architecture(cfg, model.config)
        self.tokenizer = None
        if cfg.tokenizer and cfg.sample_every and accelerator.is_main_process:
            self.tokenizer = _load_sample_tokenizer(cfg, self.facts, model.config, accelerator.device)
        groups = [{k: v for k, v in g.items() if k != "names"} for g in param_groups(model, cfg.weight_decay)]
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
        self.num_tokens = model.config.num_image_tokens
        self.num_parameters = sum(p.numel() for p in model.parameters())
        accelerator.print(
            f"LlamaGen {cfg.model}: {self.num_parameters / 1e6:.2f}M parameters, vocab {model.config.vocab_size}, "
            f"grid {tuple(model.config.grid_size)}, {model.config.num_classes} classes; {len(self.codes)} rows; lr "
            f"{lr:.3g}"
        )
        return [Part("model", model, optimizer)]

    def num_train_examples(self) -> int:
        return len(self.codes)  # rows (views), see num_epochs

    def build_dataloader(self, run: Run, start_step: int):
        self.t_last, self.samples_last = time.time(), run.state.samples_seen
        return build_dataloader(self.cfg, self.codes, run.accelerator, start_step)

    def training_step(self, run: Run, batch: dict) -> dict:
        device = run.accelerator.device
        input_ids = batch["input_ids"].to(device, non_blocking=True)
        class_labels = batch["class_labels"].to(device, non_blocking=True)
        with run.accelerator.autocast():
            loss = run.model(input_ids=input_ids, class_labels=class_labels, labels=input_ids).loss
        grad_norm = run.optimize(loss, run.parts[0])
        run.state.samples_seen += input_ids.shape[0] * run.accelerator.num_processes
        logs = {"loss": loss.detach()}
        if grad_norm is not None:
            logs["grad_norm"] = grad_norm
        return logs

    def log_metrics(self, run: Run) -> dict:
        now = time.time()
        samples, seconds = run.state.samples_seen - self.samples_last, max(now - self.t_last, 1e-9)
        self.t_last, self.samples_last = now, run.state.samples_seen
        return {"tokens_per_second": samples * self.num_tokens / seconds, "samples_per_second": samples / seconds}

    def on_step_end(self, run: Run) -> None:
        cfg, step = self.cfg, run.state.step
        if cfg.sample_every and (step % cfg.sample_every == 0 or step == cfg.max_steps):
            if run.accelerator.is_main_process:  # the bare module: no collective op, the other ranks go on
                save_samples(run.bare(), cfg, run.out_dir / "samples", step, self.tokenizer)

    def export(self, run: Run, model: torch.nn.Module) -> None:
        # the guidance the run sampled with (a recipe's: FVQ's 1.75 / 1.65) is the exported model's default
        model.set_sampling_defaults(self.cfg.sample_guidance_scale, self.cfg.sample_cfg_interval)
        with atomic_dir(run.out_dir / "model") as folder:
            model.save_pretrained(folder)

    def results(self, run: Run, model: torch.nn.Module) -> dict:
        steps, seconds = run.state.step - run.start_step, run.train_time
        return {
            "final_loss": run.last_logs.get("loss"),
            "first_logged_loss": (run.first_logs or {}).get("loss"),
            "tokens_per_second": steps * run.global_batch * self.num_tokens / seconds if seconds > 0 else None,
            "num_parameters": self.num_parameters,
            "codes": self.cfg.codes,
        }


def train(cfg: LlamaGenTrainingConfig) -> dict:
    """Run the training described by ``cfg``; returns the results (also in ``output_dir/results.json``)."""
    return run_training(cfg, LlamaGenTask(cfg))


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``fullvq train-llamagen`` / ``examples/train_llamagen.py``: parse, train; a user error is one line."""
    return run_cli(argv, prog, LlamaGenTrainingConfig, train)


__all__ = [
    "PRESETS",
    "CodesBatches",
    "LlamaGenTrainingConfig",
    "build_model",
    "check_codes_fit",
    "check_init_options",
    "main",
    "make_llamagen_config",
    "param_groups",
    "parse_args",
    "sample_classes",
    "save_samples",
    "train",
]
