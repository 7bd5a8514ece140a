"""Options of the tokenizer trainer: one dataclass, named presets for the papers' recipes and small CPU runs,
and loading from the command line and/or a YAML/JSON file (command line wins).

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


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with its ``--help`` text (read by ``HfArgumentParser``)."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


@dataclass
class TokenizerTrainingConfig:
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
    flip: bool = option(True, "random horizontal flips")
    num_workers: int = option(0, "dataloader worker processes")
    # optimisation
    batch_size: int = option(8, "images per process and micro-batch")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step")
    max_steps: int = option(1000, "optimizer steps")
    learning_rate: float = option(1e-4, "base lr for a global batch of 128 (scaled linearly when scale_lr)")
    scale_lr: bool = option(True, "scale the lr with the global batch (batch x processes x accumulation) / 128")
    lr_scheduler: str = option("annealing", "'annealing' (FVQ), 'annealing-cosine', 'constant', 'cosine' or 'linear'")
    warmup_steps: int = option(0, "linear warm-up steps")
    adam_beta1: float = option(0.9, "Adam beta1")
    adam_beta2: float = option(0.95, "Adam beta2")
    weight_decay: float = option(0.0, "Adam weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm; 0 only measures")
    # losses
    reconstruction_loss: str = option("l2", "'l2' or 'l1'")
    perceptual_weight: float = option(1.0, "weight of the LPIPS-style perceptual loss; 0 disables it")
    perceptual_weights: str | None = option(None, "VGG16 (+ LPIPS lin) weights: local file or Hub 'repo/file'")
    gan_weight: float = option(0.0, "weight of the PatchGAN generator loss; 0 disables the GAN")
    gan_start_step: int = option(20000, "step at which the GAN losses start")
    adaptive_gan_weight: bool = option(False, "VQGAN's adaptive GAN weight")
    discriminator_norm: str = option("batch", "discriminator norm: 'batch', 'group' or 'none'")
    discriminator_lr: float | None = option(None, "discriminator lr; none = the generator's lr")
    bridge_lr_multiplier: float = option(1.0, "lr of the VQBridge (quantize.qbridge.*) as a multiple of the model's lr")
    # precision / speed
    mixed_precision: str = option("no", "'no', 'bf16' or 'fp16'")
    ema_decay: float = option(0.0, "EMA decay of the exported weights (diffusers EMAModel); 0 disables EMA")
    compile: bool = option(False, "torch.compile the model")
    seed: int = option(0, "random seed")
    # output
    output_dir: str = option("outputs/tokenizer", "run folder: checkpoints, model, logs, samples, results")
    overwrite_output_dir: bool = option(False, "start a new run in a folder holding another run (removes its outputs)")
    checkpoint_every: int = option(500, "steps between checkpoints; 0 disables them")
    checkpoints_total_limit: int | None = option(3, "checkpoints kept; none keeps all")
    resume: str | None = option(None, "'latest' or a checkpoint folder")
    log_every: int = option(10, "steps between logs")
    image_every: int = option(500, "steps between reconstruction grids; 0 disables them")
    report_to: str = option("tensorboard", "an accelerate tracker name, or 'none'")
    eval_max_images: int | None = option(None, "evaluate on at most this many images; none = the whole split")
    eval_batch_size: int = option(64, "evaluation batch size")
    feature_extractor: str | None = option(None, "for the Frechet distance: 'fashion-mnist-classifier' or a weights file")
    preset: str | None = option(None, "a named recipe (its values are the defaults of the other options)")

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


def _none_or(kind):
    def parse(value: str):
        return None if value.lower() in ("none", "null", "") else kind(value)

    parse.__name__ = getattr(kind, "__name__", "value")  # argparse names the type in its error messages
    return parse


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


def build_parser(prog: str | None = None, config_cls: type | None = None) -> argparse.ArgumentParser:
    """``HfArgumentParser`` over ``config_cls`` (default ``TokenizerTrainingConfig``): every field as
    ``--field-name`` with its help text and default, ``--preset`` choosing among ``config_cls.PRESETS`` (listed in
    the help), ``--config FILE`` and ``--debug`` (tracebacks instead of one ``error:`` line).

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
    "build_parser",
    "explicit_options",
    "make_config",
    "option",
    "parse_args",
    "run_cli",
]
