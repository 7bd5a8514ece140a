"""Options of the tokenizer trainer: one dataclass, named presets for the papers' recipes and small CPU runs,
and loading from the command line and/or a YAML/JSON file (command line wins).

``build_parser`` / ``make_config`` / ``parse_args`` serve any trainer's options dataclass (``config_cls``, with its
presets in a ``PRESETS`` class attribute); the LlamaGen trainer uses them for ``LlamaGenTrainingConfig``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class TokenizerTrainingConfig:
    # model
    model_type: str = "fvq"  # "fvq" (FVQModel) | "vqgan-lc" (VQGANLCModel)
    backbone: str = "VQ-16"  # see fullvq_hf.models.BACKBONES
    bridge: str | None = "L/4"  # VQBridge preset "<S|B|L|XL>/<patch>" (fvq + vqbridge only)
    quantizer_type: str = "vqbridge"  # fvq: "vqbridge" | "vq" | "simvq"
    codebook_size: int = 16384
    codebook_dim: int = 256
    use_l2_norm: bool = False
    entropy_loss_weight: float = 0.0
    beta: float | None = None  # commitment weight; None = the model's default
    codebook_loss_weight: float | None = None
    codebook_feature_dim: int = 768  # vqgan-lc
    lc_codebook: str | None = None  # vqgan-lc: safetensors file of the frozen feature codebook
    in_channels: int = 3
    init_from: str | None = None  # any from_pretrained source (Hub id or folder) to fine-tune
    # data
    dataset: str = "fashion_mnist"  # "fashion_mnist" | "photos" | "imagefolder" | a datasets name/path
    data_dir: str | None = None
    train_split: str = "train"
    eval_split: str | None = "test"
    image_column: str = "image"
    streaming: bool = False
    resolution: int = 256
    random_crop: bool = True
    flip: bool = True
    num_workers: int = 0
    # optimisation
    batch_size: int = 8  # per process
    gradient_accumulation_steps: int = 1
    max_steps: int = 1000
    learning_rate: float = 1e-4  # base lr for a global batch of 128 (scaled when scale_lr)
    scale_lr: bool = True
    lr_scheduler: str = "annealing"  # "annealing" | "annealing-cosine" | "constant" | "cosine"
    warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # losses
    reconstruction_loss: str = "l2"  # "l2" | "l1"
    perceptual_weight: float = 1.0
    perceptual_weights: str | None = None  # VGG16 (+ LPIPS lin) weights: local file or Hub "repo/file"
    gan_weight: float = 0.0
    gan_start_step: int = 20000
    adaptive_gan_weight: bool = False
    discriminator_norm: str = "batch"
    discriminator_lr: float | None = None  # default: learning_rate
    # precision / speed
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    ema_decay: float = 0.0  # 0 disables EMA weights
    compile: bool = False
    seed: int = 0
    # output
    output_dir: str = "outputs/tokenizer"
    checkpoint_every: int = 500
    checkpoints_total_limit: int | None = 3
    resume: str | None = None  # "latest" or a checkpoint folder
    log_every: int = 10
    image_every: int = 500
    report_to: str = "tensorboard"  # an accelerate tracker name, or "none"
    eval_max_images: int | None = None
    eval_batch_size: int = 64
    feature_extractor: str | None = None  # for Frechet distance: "fashion-mnist-classifier" or a weights file
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_PAPER = dict(backbone="VQ-16", resolution=256, batch_size=16, learning_rate=1e-4, perceptual_weight=1.0, gan_weight=0.5,
              gan_start_step=20000, mixed_precision="bf16", max_steps=400000, checkpoint_every=5000, image_every=5000,
              dataset="ILSVRC/imagenet-1k", streaming=True, eval_split="validation", warmup_steps=40000)  # fmt: skip
_CPU_FMNIST = dict(backbone="cpu-small", in_channels=1, resolution=32, dataset="fashion_mnist", random_crop=False,
                   batch_size=64, learning_rate=1e-3, scale_lr=False, max_steps=300, warmup_steps=15,
                   perceptual_weight=0.0, gan_weight=0.0, codebook_size=16384, codebook_dim=8,
                   checkpoint_every=100, image_every=100, log_every=10)  # fmt: skip

PRESETS: dict[str, dict[str, Any]] = {
    # FVQ paper (ImageNet 256, VQ-16 backbone, D = 256, learning annealing, L2 + LPIPS + PatchGAN 0.5 from 20k)
    "fvq-16k": {**_PAPER, "bridge": "L/4", "codebook_size": 16384, "codebook_dim": 256},
    "fvq-65k": {**_PAPER, "bridge": "L/8", "codebook_size": 65536, "codebook_dim": 512},
    "fvq-262k": {**_PAPER, "bridge": "L/8", "codebook_size": 262144, "codebook_dim": 256},
    # VQGAN-LC (100k frozen CLIP codes projected to 8-d; L1 + LPIPS + adaptive GAN x 0.1 from 50k; cosine lr)
    "vqgan-lc-100k": {**_PAPER, "model_type": "vqgan-lc", "bridge": None, "quantizer_type": "vq",
                      "codebook_size": 100000, "codebook_dim": 8, "codebook_feature_dim": 768,
                      "reconstruction_loss": "l1", "gan_weight": 0.1, "gan_start_step": 50000, "adaptive_gan_weight": True,
                      "learning_rate": 5e-4 * 128 / 256, "adam_beta1": 0.5, "adam_beta2": 0.9, "lr_scheduler": "cosine"},
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
                       codebook_size=4096, codebook_dim=8, checkpoint_every=100, image_every=100),
    # smallest possible end-to-end run (tests)
    "cpu-tiny": dict(backbone="tiny", in_channels=1, resolution=32, dataset="fashion_mnist", random_crop=False,
                     batch_size=4, learning_rate=1e-3, scale_lr=False, max_steps=20, warmup_steps=2,
                     perceptual_weight=0.0, gan_weight=0.1, gan_start_step=5, discriminator_norm="group",
                     bridge="S/2", codebook_size=256, codebook_dim=8, checkpoint_every=10, image_every=10,
                     log_every=5, eval_max_images=64, report_to="none"),
}  # fmt: skip
TokenizerTrainingConfig.PRESETS = PRESETS
TokenizerTrainingConfig.DESCRIPTION = "Train an FVQ / VQGAN-LC / VQ tokenizer with accelerate."


def _parse_bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def _none_or(kind):
    def parse(value: str):
        return None if value.lower() in ("none", "null", "") else kind(value)

    return parse


def build_parser(prog: str | None = None, config_cls: type | None = None) -> argparse.ArgumentParser:
    """Every field of ``config_cls`` (a dataclass; default ``TokenizerTrainingConfig``) as ``--field-name``, plus
    ``--config FILE``. No defaults here: unset options fall back to preset, file, class.

    The class's ``DESCRIPTION`` attribute, when set, is the help text. Fields must be annotated as strings
    (``from __future__ import annotations``) with types ``int``, ``float``, ``bool``, ``str``, optionally ``| None``.
    """
    config_cls = config_cls or TokenizerTrainingConfig
    parser = argparse.ArgumentParser(prog=prog, description=getattr(config_cls, "DESCRIPTION", None))
    parser.add_argument("--config", help="YAML or JSON file of options (command-line options override it)")
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        type_str = str(f.type)  # e.g. "int", "float | None" (annotations are strings here)
        base = {"int": int, "float": float, "bool": _parse_bool}.get(type_str.split("|")[0].strip(), str)
        kind = _none_or(base) if "None" in type_str else base
        metavar = type_str.split("|")[0].strip().upper()
        parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=metavar)
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
    return config_cls(**values)


def parse_args(argv: list[str] | None = None, prog: str | None = None, config_cls: type | None = None):
    """``make_config`` from command-line arguments (``--config FILE``, ``--preset NAME``, ``--field-name VALUE``)."""
    return make_config(vars(build_parser(prog, config_cls).parse_args(argv)), config_cls)


__all__ = ["PRESETS", "TokenizerTrainingConfig", "build_parser", "make_config", "parse_args"]
