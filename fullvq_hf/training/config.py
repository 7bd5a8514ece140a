"""Options of the trainers: ``TrainingConfig`` (the options of the shared training loop, declared once), the
tokenizer trainer's dataclass on top of it with named presets for the papers' recipes and small CPU runs, and loading
from the command line and/or a YAML/JSON file (command line wins).

``build_parser`` / ``make_config`` / ``parse_args`` serve any trainer's options dataclass (``config_cls``, with its
presets in a ``PRESETS`` class attribute); the LlamaGen trainer uses them for ``LlamaGenTrainingConfig``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARED_OPTIONS_TITLE = "training options (the same in every trainer)"


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with its ``--help`` text (read by ``HfArgumentParser``)."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


@dataclass
class TrainingConfig:
    """The options of the training loop (``fullvq_hf.training.loop.train``), the same in every trainer: batches,
    run length, lr schedule, optimizer, precision, checkpoints and output. Each field is declared here once, with its
    help text; a trainer's options dataclass inherits them and adds its own.

    A trainer redeclares a shared field only where its default or the meaning of its help differs (``override``:
    the field keeps its place and whatever it does not change). The defaults of ``batch_size``, ``lr_scheduler``,
    ``weight_decay``, ``output_dir``, ``checkpoint_every`` and ``log_every`` differ between the trainers, which set
    them; the values here are only the fallback of a config class that does not. ``init_from`` is not here: the
    loop never reads it and it names a different model in each trainer (a tokenizer, a generator), with its own
    checks."""

    # batches, run length, lr schedule, optimizer
    num_workers: int = option(0, "dataloader worker processes")
    batch_size: int = option(8, "examples per process and micro-batch")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step")
    max_steps: int = option(1000, "optimizer steps")
    learning_rate: float = option(1e-4, "lr for the trainer's reference global batch (scaled linearly when scale_lr)")
    scale_lr: bool = option(True, "scale the lr with the global batch (batch x processes x accumulation) / the "
                            "trainer's reference global batch")  # fmt: skip
    lr_scheduler: str = option("constant", "'annealing' (FVQ), 'annealing-cosine', 'constant', 'cosine' or 'linear'")
    warmup_steps: int = option(0, "linear warm-up steps")
    global_batch_size: int | None = option(
        None, "the global batch a recipe needs (the scripts' --global-batch-size): an error unless batch_size x "
        "processes x accumulation equals it; none = no check"
    )
    num_epochs: float | None = option(
        None, "train this many epochs instead of max_steps: max_steps = num_epochs x (training examples // global "
        "batch); needs a dataset of known length"
    )
    warmup_epochs: float | None = option(
        None, "warm-up in epochs (the scripts' warmup_ep) instead of warmup_steps; needs a known dataset length"
    )
    hold_fraction: float | None = option(
        None, "annealing schedules: lr held at 1 while the progress after warm-up is below this (FVQ's --lrT); "
        "none = 0.3"
    )
    warmup_start_factor: float | None = option(None, "lr factor at the first warm-up step; none = 0.005 (FVQ's wp0)")
    adam_beta1: float = option(0.9, "Adam beta1")
    adam_beta2: float = option(0.95, "Adam beta2")
    weight_decay: float = option(0.0, "Adam weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm; 0 only measures")
    # precision / speed
    mixed_precision: str = option("no", "'no', 'bf16' or 'fp16'")
    ema_decay: float = option(0.0, "EMA decay of the exported weights (diffusers EMAModel); 0 disables EMA")
    compile: bool = option(False, "torch.compile the model")
    seed: int = option(0, "random seed")
    # output
    output_dir: str = option("outputs/run", "run folder: checkpoints, model, logs, samples, results")
    overwrite_output_dir: bool = option(False, "start a new run in a folder holding another run (removes its outputs)")
    checkpoint_every: int = option(500, "steps between checkpoints; 0 disables them")
    checkpoints_total_limit: int | None = option(3, "checkpoints kept; none keeps all")
    resume: str | None = option(None, "'latest' or a checkpoint folder")
    log_every: int = option(10, "steps between logs")
    report_to: str = option("tensorboard", "an accelerate tracker name, or 'none'")
    preset: str | None = option(None, "a named recipe (its values are the defaults of the other options)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def override(name: str, default: Any = _UNSET, help: str | None = None) -> Any:
    """A trainer's redeclaration of the shared field ``name`` of ``TrainingConfig`` with its own ``default`` and/or
    ``help`` text; what is not given is the base's. (A redeclared dataclass field keeps its place in the field
    order, so the command line and ``training_config.json`` list it where the base does.)"""
    base = TrainingConfig.__dataclass_fields__[name]
    metadata = dict(base.metadata) if help is None else {**base.metadata, "help": help}
    return dataclasses.field(default=base.default if default is _UNSET else default, metadata=metadata)


@dataclass
class TokenizerTrainingConfig(TrainingConfig):
    # the shared options (TrainingConfig) whose default or help differs here
    batch_size: int = override("batch_size", 8, "images per process and micro-batch")
    learning_rate: float = override("learning_rate", help="base lr for a global batch of 128 (scaled linearly when "
                                    "scale_lr)")  # fmt: skip
    scale_lr: bool = override("scale_lr", help="scale the lr with the global batch (batch x processes x accumulation) "
                              "/ 128")  # fmt: skip
    lr_scheduler: str = override("lr_scheduler", "annealing")
    weight_decay: float = override("weight_decay", 0.0)
    output_dir: str = override("output_dir", "outputs/tokenizer")
    checkpoint_every: int = override("checkpoint_every", 500)
    log_every: int = override("log_every", 10)
    # model
    model_type: str = option("fvq", "'fvq' (FVQModel) or 'vqgan-lc' (VQGANLCModel)")
    backbone: str = option("VQ-16", "encoder/decoder preset (fullvq_hf.models.BACKBONES)")
    bridge: str | None = option("L/4", "VQBridge preset '<S|B|L|XL>/<patch>' (fvq + vqbridge only)")
    quantizer_type: str = option("vqbridge", "fvq quantizer: 'vqbridge', 'vq' or 'simvq'")
    codebook_size: int = option(16384, "number of codes")
    codebook_dim: int = option(256, "code dimension")
    use_l2_norm: bool = option(False, "l2-normalise codes and features before the search")
    entropy_loss_weight: float = option(0.0, "weight of the codebook entropy loss")
    beta: float | None = option(None, "commitment weight; none = the model's default")
    codebook_loss_weight: float | None = option(None, "codebook loss weight; none = the model's default")
    codebook_feature_dim: int = option(768, "vqgan-lc: dimension of the frozen feature codebook")
    lc_codebook: str | None = option(None, "vqgan-lc: safetensors file of the frozen feature codebook")
    in_channels: int = option(3, "image channels (1 grey, 3 RGB)")
    init_from: str | None = option(
        None,
        "a tokenizer (folder or Hub id) to continue training AS IT IS: its architecture is kept, and a model option "
        "given with a value other than its own (--codebook-size, --bridge, --quantizer-type, ...) is an error; "
        "to add a fresh VQBridge to a plain VQ, use --finetune-from-vq",
    )
    finetune_from_vq: str | None = option(
        None,
        "a trained plain-VQ tokenizer (folder or Hub id, e.g. a converted LlamaGen VQ-16) to start FVQ from, as the "
        "official --finetune-from-llmgen: its encoder, decoder and codebook are kept (the codebook becomes the raw "
        "codebook) and a fresh --bridge is added (e.g. 'QBridge-L/4', the recipes' DiT bridge, or 'L/4')",
    )
    # data
    dataset: str = option("fashion_mnist", "'fashion_mnist', 'photos', 'imagefolder' or a datasets name/path")
    data_dir: str | None = option(None, "folder of an 'imagefolder' dataset")
    train_split: str = option("train", "training split")
    eval_split: str | None = option("test", "evaluation split; none skips the evaluation")
    image_column: str = option("image", "image column of the dataset")
    streaming: bool = option(False, "stream the dataset (ImageNet scale)")
    resolution: int = option(256, "training resolution in pixels")
    random_crop: bool = option(True, "random (not center) crops")
    crop_min_scale: float = option(0.8, "random crops: smallest crop side as a fraction of the shorter image side")
    flip: bool = option(True, "random horizontal flips")
    # optimisation (the rest: TrainingConfig)
    adam_epsilon: float = option(1e-8, "Adam epsilon (both optimizers)")
    # losses
    reconstruction_loss: str = option("l2", "'l2' or 'l1'")
    perceptual_weight: float = option(1.0, "weight of the LPIPS-style perceptual loss; 0 disables it")
    perceptual_weights: str | None = option(None, "VGG16 (+ LPIPS lin) weights: local file or Hub 'repo/file'")
    gan_weight: float = option(0.0, "weight of the PatchGAN generator loss; 0 disables the GAN")
    gan_start_step: int = option(20000, "step at which the GAN losses start")
    adaptive_gan_weight: bool = option(False, "VQGAN's adaptive GAN weight")
    discriminator_loss_weight: float | None = option(
        None, "weight of the discriminator's hinge loss; none = gan_weight (FVQ / LlamaGen: disc_weight weighs both)"
    )
    discriminator_norm: str = option("batch", "discriminator norm: 'batch', 'group' or 'none'")
    discriminator_layers: int = option(3, "stride-2 conv layers of the PatchGAN discriminator (VQGAN-LC: 2)")
    discriminator_adam_idle_steps: bool = option(
        False, "count the steps before gan_start_step in the discriminator's Adam, as FVQ / LlamaGen (they step it on a "
        "zero loss until --disc-start): its first updates get a long run's bias correction, not a fresh Adam's"
    )
    discriminator_fresh_fakes: bool = option(
        False, "the discriminator's fake images from a second tokenizer forward after the generator's step (VQGAN-LC); "
        "false: the generator step's reconstructions (FVQ / LlamaGen)"
    )
    discriminator_sync_batchnorm: bool = option(
        False, "BatchNorm statistics over all processes (SyncBatchNorm, GPUs); the official trainers keep them per process"
    )
    discriminator_lr: float | None = option(None, "discriminator lr; none = the generator's lr")
    bridge_lr_multiplier: float = option(1.0, "lr of the VQBridge (quantize.qbridge.*) as a multiple of the model's lr")
    bridge_restart_every: int = option(
        0, "every N steps, each VQBridge patch position none of whose codes was picked in those N steps gets the "
        "final-layer rows of the most-picked position, plus noise of 0.1 x their std; 0 = off, as the official recipe"
    )
    code_restart_every: int = option(
        0, "every N steps, the codes whose decayed pick count is below --code-restart-threshold move onto distinct "
        "latents of the step's batch (lowest counts first, at most one batch's worth), through per-code offsets added "
        "to the codebook (the model gets code_offsets=True); 0 = off, as the official recipes"
    )
    code_restart_window: int = option(
        100, "time constant in steps of the decayed pick count of --code-restart-every (about a code's picks in that "
        "many recent steps): choose it so that its tokens are several times the codebook size"
    )
    code_restart_threshold: float | None = option(
        None, "--code-restart-every moves the codes whose decayed pick count is below this (1: about no pick in the "
        "window; 2: also the rarely picked ones); none = 1, or what --code-restart-share gives"
    )
    code_restart_share: float | None = option(
        None, "instead of --code-restart-threshold: move the codes picked less than this times a code's mean picks in "
        "the window (window x global batch x tokens per image / codebook size), so that one value means the same at "
        "every codebook size and batch (e.g. 1.28); none = use the threshold"
    )
    code_track_rate: float = option(
        0.0, "with --code-restart-every: every step, each code picked moves this fraction of the way to the mean of "
        "the latents that picked it (an online k-means step on its offset); 0 = off"
    )
    # output
    image_every: int = option(500, "steps between reconstruction grids; 0 disables them")
    eval_max_images: int | None = option(None, "evaluate on at most this many images; none = the whole split")
    eval_batch_size: int = option(64, "evaluation batch size")
    feature_extractor: str | None = option(None, "for the Frechet distance: 'fashion-mnist-classifier' or a weights file")


IMAGENET_TRAIN_IMAGES = 1_281_167
_PAPER = dict(backbone="VQ-16", resolution=256, batch_size=16, learning_rate=1e-4, perceptual_weight=1.0, gan_weight=0.5,
              gan_start_step=20000, mixed_precision="bf16", max_steps=400000, checkpoint_every=5000, image_every=5000,
              dataset="ILSVRC/imagenet-1k", streaming=True, eval_split="validation", warmup_steps=40000)  # fmt: skip
# warm-up 0: the ViT bridge needs ~40 steps before its codes unfold anyway (benchmarks/usage_demo_curves.md); a
# warm-up on top only delays it (200 steps, constant lr: 92.8% test usage without, 87.5% with 15 steps)
_CPU_FMNIST = dict(backbone="cpu-small", in_channels=1, resolution=32, dataset="fashion_mnist", random_crop=False,
                   batch_size=64, learning_rate=1e-3, scale_lr=False, max_steps=300, warmup_steps=0,
                   perceptual_weight=0.0, gan_weight=0.0, codebook_size=16384, codebook_dim=8,
                   checkpoint_every=100, image_every=100, log_every=10)  # fmt: skip

# FVQ's official recipes: scripts/recon/FVQ-16384.sh, FVQ-65536.sh, FVQ-262144.sh (yfChang-cv/FVQ), which run
# tokenizer/tokenizer_image/vq_train_qbridge_lr.py ("train.py" below); what a script does not pass is train.py's
# argparse default. Line numbers are those files' (commit 577b848c).
_FVQ = dict(
    _PAPER,
    backbone="VQ-16",  # --vq-model default VQ-16 (train.py:442)
    resolution=256,  # --image-size 256 (FVQ-*.sh:38)
    global_batch_size=128,  # GLOBAL_BATCH_SIZE=128 (FVQ-*.sh:8); per GPU = 128 / world size (train.py:157):
    batch_size=16,  # 16 on 8 GPUs; elsewhere the check names --batch-size / --gradient-accumulation-steps
    learning_rate=1e-4,  # LEARNING_RATE=1e-4 (FVQ-*.sh:15) ...
    scale_lr=True,  # ... x global batch / 128 for both optimizers (train.py:130-137)
    num_epochs=40,  # EPOCHS=40 (FVQ-*.sh:9); steps = epochs x len(loader), drop_last (train.py:162,168)
    warmup_epochs=4,  # warmup_ep=4 (FVQ-*.sh:17); warm-up = warmup_ep x len(loader) (train.py:167)
    # what the epochs give on ImageNet-1k (1,281,167 // 128 = 10,009 steps an epoch); --max-steps N runs by steps
    max_steps=40 * (IMAGENET_TRAIN_IMAGES // 128), warmup_steps=4 * (IMAGENET_TRAIN_IMAGES // 128),
    lr_scheduler="annealing",  # --sche_type 'lin' (FVQ-*.sh:47): combined_lr_lambda (train.py:166-189)
    hold_fraction=0.3,  # --lrT default 0.3 (train.py:484)
    warmup_start_factor=0.005,  # wp0 = 0.005; decays to wpe = 0.01 (train.py:169-170)
    quantizer_type="vqbridge", use_l2_norm=False,  # no --codebook-l2-norm (default False, train.py:448)
    beta=0.25, codebook_loss_weight=1.0, entropy_loss_weight=0.0,  # train.py:451,450; vq_loss.py:142 adds the
    # codebook loss unweighted (--codebook-weight is never applied)
    reconstruction_loss="l2", perceptual_weight=1.0,  # train.py:453-454
    gan_weight=0.5, discriminator_loss_weight=0.5,  # --disc-weight 0.5 (train.py:455) weighs the generator's hinge
    # term and the discriminator's hinge loss alike (vq_loss.py:137-141,159-160)
    adaptive_gan_weight=False,  # VQLoss(disc_adaptive_weight=False) by default (vq_loss.py:51,132)
    gan_start_step=19999,  # --disc-start 20000: adopt_weight(w, train_steps + 1, 20000) is on from 0-based step
    # 19,999 (train.py:298,456; vq_loss.py:43-46)
    discriminator_fresh_fakes=False,  # the discriminator sees the generator step's recons_imgs (train.py:297,315)
    discriminator_adam_idle_steps=True,  # before that the discriminator steps on a 0 loss every step (train.py:
    # 313-321, vq_loss.py:159-160): Adam's moments stay 0 but its step count (bias correction) runs
    discriminator_layers=3, discriminator_norm="batch",  # PatchGAN n_layers 3, ndf 64, BatchNorm (vq_loss.py:51,60)
    adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8,  # train.py:468-469; torch's eps
    weight_decay=0.0,  # --weight-decay 5e-2 is never given to Adam (train.py:136-137)
    max_grad_norm=1.0,  # train.py:470, both optimizers (train.py:305,320)
    mixed_precision="bf16",  # train.py:477
    ema_decay=0.0,  # the scripts do not pass --ema
    random_crop=True, crop_min_scale=0.8, flip=True,  # random_crop_arr (0.8-1.0) + flip (train.py:142-143)
    checkpoint_every=10000, image_every=10000,  # --ckpt-every 10000 (train.py:475)
)  # fmt: skip

# VQGAN-LC's official recipe: vqgan-gpt-lc/runTrainVQ.sh (zh460045050/VQGAN-LC) running training_vqgan.py ("lc.py"),
# engine_training_vqgan.py ("engine.py"), models/models_vq.py ("vq.py"), models/discriminator.py, util/lr_sched.py.
_VQGAN_LC = dict(
    _PAPER,
    model_type="vqgan-lc", bridge=None, quantizer_type="vq",
    backbone="VQ-16",  # --vq_config_path vqgan_configs/vq-f16.yaml: ch 128, ch_mult (1,1,2,2,4), z 256
    codebook_size=100000, codebook_dim=8,  # --n_vision_words 100000, --embed_dim 8 (runTrainVQ.sh:19,24)
    codebook_feature_dim=768,  # the frozen CLIP ViT-L/14 codebook [100000, 768] (--tuning_codebook 0)
    resolution=256,  # --image_size 256
    global_batch_size=256, batch_size=256,  # --batch_size 256 per GPU on --nproc_per_node 1 (runTrainVQ.sh:6-7)
    learning_rate=1e-4, scale_lr=False,  # --lr 1e-4 is the absolute lr, for any batch: main() never applies the
    # --blr rule (absolute = blr x batch / 256) its help text describes (lc.py:208-215,353,368,375)
    num_epochs=100, warmup_epochs=5,  # --epochs 100 --warmup_epochs 5 (runTrainVQ.sh:9-10)
    max_steps=100 * (IMAGENET_TRAIN_IMAGES // 256), warmup_steps=5 * (IMAGENET_TRAIN_IMAGES // 256),  # on ImageNet-1k
    lr_scheduler="cosine",  # lr_sched.adjust_learning_rate per iteration: linear warm-up FROM 0, then half-cosine
    warmup_start_factor=0.0,  # to min_lr 0 (lr_sched.py:12-17; engine.py:68,88). It reaches 0 one step after the
    # last; ours at the last step (a difference of one step's worth of decay).
    adam_beta1=0.5, adam_beta2=0.9, adam_epsilon=1e-7, weight_decay=0.0,  # both Adams (lc.py:368,375)
    max_grad_norm=0.0,  # NativeScaler without clip_grad: the norm is only measured (engine.py:71-89)
    mixed_precision="no",  # the autocast is commented out (engine.py:60,85)
    reconstruction_loss="l1", perceptual_weight=1.0,  # mean |x - rec|, --rate_p 1 (vq.py:237-239; lc.py:262)
    beta=0.1, codebook_loss_weight=0.033,  # --rate_q 0.1 x (1.0 commit + 0.33 codebook) (vq.py:203; lc.py:261)
    gan_weight=0.1, adaptive_gan_weight=True,  # --rate_d 0.1 x the adaptive weight on rec + rate_p x LPIPS
    # (vq.py:141-149,249; lc.py:263)
    discriminator_loss_weight=1.0,  # the discriminator's hinge loss is not weighted (vq.py:258-261)
    discriminator_fresh_fakes=True,  # its step runs the model again (step=1) after opt_ae stepped (engine.py:71-89;
    # vq.py:223-263): its fakes come from the updated generator
    gan_start_step=50001,  # --disc_start 50000 (runTrainVQ.sh:18): on while cur_iter > 50000 (engine.py:84;
    # vq.py:251); the discriminator's Adam steps only from then on (engine.py:84-89)
    discriminator_adam_idle_steps=False,
    discriminator_layers=2, discriminator_norm="batch",  # NLayerDiscriminator(n_layers=2, ndf 64, BatchNorm)
    # (vq.py:44-48; models/discriminator.py:105-146)
    random_crop=True, crop_min_scale=1.0, flip=False,  # SmallestMaxSize + RandomCrop, no flip (lc.py:90-92)
    ema_decay=0.0,
)  # fmt: skip

PRESETS: dict[str, dict[str, Any]] = {
    # FVQ-16384.sh: QB_type='QBridge-L/4' (the unconditional DiT bridge: --is_uncondition), 16384 x 256
    "fvq-16k": {**_FVQ, "bridge": "QBridge-L/4", "codebook_size": 16384, "codebook_dim": 256},
    # FVQ-65536.sh: QB_type='QBridge-L/8', 65536 x 256 (CODEBOOK_EMBED_DIM=256, not the paper table's 512)
    "fvq-65k": {**_FVQ, "bridge": "QBridge-L/8", "codebook_size": 65536, "codebook_dim": 256},
    # FVQ-262144.sh: QB_type='QBridge-L/8', 262144 x 256
    "fvq-262k": {**_FVQ, "bridge": "QBridge-L/8", "codebook_size": 262144, "codebook_dim": 256},
    # runTrainVQ.sh: VQGAN-LC with the 100k frozen CLIP codebook (--lc-codebook FILE) projected to 8-d
    "vqgan-lc-100k": _VQGAN_LC,
    # LlamaGen's own VQ-16 tokenizer: 16384 x 8 l2-normalised codes, constant lr
    "llamagen-vq16": {**_PAPER, "bridge": None, "quantizer_type": "vq", "codebook_size": 16384, "codebook_dim": 8,
                      "use_l2_norm": True, "lr_scheduler": "constant"},
    # CPU: Fashion-MNIST 28x28 padded to 32x32, downsample 4 -> 8x8 tokens
    "cpu-fmnist-fvq": {**_CPU_FMNIST, "bridge": "S/4"},
    "cpu-fmnist-vq": {**_CPU_FMNIST, "bridge": None, "quantizer_type": "vq"},
    # CPU: the photos bundled with scikit-image, 64x64 RGB
    "cpu-photos": dict(backbone="cpu-small", resolution=64, dataset="photos", eval_split=None, batch_size=8,
                       learning_rate=1e-3, scale_lr=False, max_steps=200, warmup_steps=10, perceptual_weight=0.0,
                       gan_weight=0.1, gan_start_step=100, discriminator_norm="group", bridge="S/2",
                       discriminator_loss_weight=1.0,
                       codebook_size=4096, codebook_dim=8, checkpoint_every=100, image_every=100),
    # smallest possible end-to-end run (tests)
    "cpu-tiny": dict(backbone="tiny", in_channels=1, resolution=32, dataset="fashion_mnist", random_crop=False,
                     batch_size=4, learning_rate=1e-3, scale_lr=False, max_steps=20, warmup_steps=2,
                     perceptual_weight=0.0, gan_weight=0.1, gan_start_step=5, discriminator_norm="group",
                     discriminator_loss_weight=1.0,
                     bridge="S/2", codebook_size=256, codebook_dim=8, checkpoint_every=10, image_every=10,
                     log_every=5, eval_max_images=64, report_to="none"),
}  # fmt: skip
TokenizerTrainingConfig.PRESETS = PRESETS
TokenizerTrainingConfig.DESCRIPTION = "Train an FVQ / VQGAN-LC / VQ tokenizer with accelerate."


def _none_or(kind):
    def parse(value: str):
        return None if value.lower() in ("none", "null", "") else kind(value)

    parse.__name__ = getattr(kind, "__name__", "value")  # argparse names the type in its error messages
    return parse


def build_parser(prog: str | None = None, config_cls: type | None = None) -> argparse.ArgumentParser:
    """``HfArgumentParser`` over ``config_cls`` (default ``TokenizerTrainingConfig``): every field as
    ``--field-name`` with its help text and default, ``--preset`` choosing among ``config_cls.PRESETS`` (listed in
    the help), ``--config FILE`` and ``--debug`` (tracebacks instead of one ``error:`` line). The help lists
    ``--preset`` and the trainer's own options, then the other ``TrainingConfig`` ones under
    ``SHARED_OPTIONS_TITLE``.

    Optional fields also accept ``none``.
    """
    from transformers import HfArgumentParser

    config_cls = config_cls or TokenizerTrainingConfig
    presets = sorted(getattr(config_cls, "PRESETS", {}))
    # from the annotations (HfArgumentParser rewrites the fields' .type in place, dropping the None)
    hints = typing.get_type_hints(config_cls)
    optional = {name for name, hint in hints.items() if type(None) in typing.get_args(hint)}
    parser = HfArgumentParser(config_cls, prog=prog, description=getattr(config_cls, "DESCRIPTION", None))
    for action in parser._actions:
        if action.dest == "preset":
            action.choices = presets
            action.help = f"{action.help}: {', '.join(presets)}"
        elif action.dest in optional and action.type is not None and action.nargs is None:
            action.type = _none_or(action.type)
    parser.add_argument("--config", help="YAML or JSON file of options (command-line options override it)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    if issubclass(config_cls, TrainingConfig) and config_cls is not TrainingConfig:
        # --preset (its choices are the trainer's) and the trainer's own options first, as declared; then the
        # training loop's under their own heading (dataclass inheritance puts the base's fields first)
        shared = {f.name for f in dataclasses.fields(TrainingConfig)} - {"preset"}
        moved = [a for a in parser._actions if a.dest in shared]
        parser._actions[:] = [a for a in parser._actions if a.dest not in shared] + moved  # the usage line
        optionals = parser._optionals._group_actions
        optionals[:] = [a for a in optionals if a.dest not in shared]
        parser.add_argument_group(SHARED_OPTIONS_TITLE)._group_actions.extend(moved)

    def one_line_error(message: str):  # not the 60-line usage: the error and where the options are listed
        import sys

        print(f"{parser.prog}: error: {message} (--help lists the options)", file=sys.stderr)
        sys.exit(2)

    parser.error = one_line_error
    return parser


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Config file {path} does not exist.")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of option names to values.")
    return {k.replace("-", "_"): v for k, v in data.items()}


def make_config(args: dict[str, Any] | None = None, config_cls: type | None = None):
    """Merge, later winning: class defaults < preset < config file < explicit options, into a ``config_cls``
    (default ``TokenizerTrainingConfig``; its ``PRESETS`` attribute names the presets)."""
    config_cls = config_cls or TokenizerTrainingConfig
    presets = getattr(config_cls, "PRESETS", {})
    args = dict(args or {})
    file_values = load_config_file(args.pop("config")) if args.get("config") else {}
    args.pop("config", None)
    preset = args.get("preset") or file_values.get("preset")
    values: dict[str, Any] = {}
    if preset:
        if preset not in presets:
            raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(presets)}.")
        values.update(presets[preset])
    values.update(file_values)
    values.update(args)
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown}; valid options are the fields of {config_cls.__name__}."
        )
    cfg = config_cls(**values)
    # what the user set (file or options; a preset's values are defaults): checks such as init_from's compare these
    cfg._explicit_options = frozenset(set(file_values) | set(args)) - {"preset"}
    return cfg


def explicit_options(cfg: Any) -> set[str]:
    """The option names the user set explicitly: recorded by ``make_config`` (command line, config file, the
    dict given to it; not a preset's values); for a config built directly, the fields that differ from the
    class defaults."""
    recorded = getattr(cfg, "_explicit_options", None)
    if recorded is not None:
        return set(recorded)
    return {f.name for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING
            and getattr(cfg, f.name) != f.default}  # fmt: skip


def parse_args(argv: list[str] | None = None, prog: str | None = None, config_cls: type | None = None):
    """``make_config`` from command-line arguments (``--config FILE``, ``--preset NAME``, ``--field-name VALUE``).
    Only the options given on the command line override the preset and the file."""
    parser = build_parser(prog, config_cls)
    namespace = argparse.Namespace(**{a.dest: _UNSET for a in parser._actions if a.dest != "help"})
    args = vars(parser.parse_args(argv, namespace=namespace))
    args = {k: v for k, v in args.items() if v is not _UNSET and k != "debug"}
    return make_config(args, config_cls)


USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def run_cli(argv: list[str] | None, prog: str | None, config_cls: type, train_fn) -> int:
    """Parse ``argv`` into ``config_cls`` and run ``train_fn``. A user error (bad option, missing file, occupied
    output folder, no usable checkpoint) is one ``<prog>: error: ...`` line and exit status 2; ``--debug`` shows
    the traceback instead."""
    import sys

    from .loop import RunError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        cfg = parse_args(argv, prog, config_cls)
        train_fn(cfg)
    except (*USER_ERRORS, RunError) as e:
        if debug:
            raise
        message = " ".join(str(e).split())
        print(f"{prog or 'train'}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2
    return 0


__all__ = [
    "PRESETS",
    "TokenizerTrainingConfig",
    "TrainingConfig",
    "build_parser",
    "explicit_options",
    "make_config",
    "option",
    "override",
    "parse_args",
    "run_cli",
]
