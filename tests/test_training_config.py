"""The trainers' options: the training loop's options are declared once (``TrainingConfig``) and inherited by both
trainers' dataclasses, each changing only its own defaults and help texts; the command lines stay as they were."""

import dataclasses
import inspect

import pytest

from fullvq_hf.training import loop
from fullvq_hf.training.config import TokenizerTrainingConfig, build_parser, parse_args
from fullvq_hf.training.llamagen_trainer import LlamaGenTrainingConfig

# the defaults of the loop's options in each trainer, as they were before the options had one home (2b8a219)
COMMON = dict(num_workers=0, gradient_accumulation_steps=1, max_steps=1000, learning_rate=1e-4, scale_lr=True,
              warmup_steps=0, global_batch_size=None, num_epochs=None, warmup_epochs=None, hold_fraction=None,
              warmup_start_factor=None, adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0, mixed_precision="no",
              ema_decay=0.0, compile=False, seed=0, overwrite_output_dir=False, checkpoints_total_limit=3,
              resume=None, report_to="tensorboard", preset=None)  # fmt: skip
TOKENIZER = dict(COMMON, batch_size=8, lr_scheduler="annealing", weight_decay=0.0, output_dir="outputs/tokenizer",
                 checkpoint_every=500, log_every=10)  # fmt: skip
LLAMAGEN = dict(COMMON, batch_size=32, lr_scheduler="constant", weight_decay=0.05, output_dir="outputs/llamagen",
                checkpoint_every=5000, log_every=50)  # fmt: skip
# the shared options a trainer redeclares (with ``override``), because its default or the meaning of its help differs
OVERRIDES = {
    TokenizerTrainingConfig: {"batch_size", "learning_rate", "scale_lr", "lr_scheduler", "weight_decay", "output_dir",
                              "checkpoint_every", "log_every"},
    LlamaGenTrainingConfig: {"batch_size", "learning_rate", "scale_lr", "lr_scheduler", "num_epochs", "weight_decay",
                             "output_dir", "checkpoint_every", "log_every"},
}  # fmt: skip


def test_the_loop_options_are_declared_once_on_the_base_and_inherited_with_each_trainers_defaults():
    from fullvq_hf.training.config import TrainingConfig

    shared = {f.name: f for f in dataclasses.fields(TrainingConfig)}
    assert set(shared) == set(TOKENIZER) == set(LLAMAGEN)
    for cls, expected in ((TokenizerTrainingConfig, TOKENIZER), (LlamaGenTrainingConfig, LLAMAGEN)):
        assert issubclass(cls, TrainingConfig)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert {name: fields[name].default for name in shared} == expected, cls.__name__
        assert {name: getattr(cls(), name) for name in shared} == expected
        # a shared option appears in a trainer's own body only as a deliberate override: re-adding one (a copy of
        # the base's declaration, or a new default without a reason) fails here
        own = set(cls.__dict__.get("__annotations__", {})) & set(shared)
        assert own == OVERRIDES[cls], cls.__name__
        for name in own:
            # ... of the same type, keeping the base's metadata but for the help text
            assert cls.__annotations__[name] == TrainingConfig.__annotations__[name], name
            extra = {k: v for k, v in fields[name].metadata.items() if k != "help"}
            assert extra == {k: v for k, v in shared[name].metadata.items() if k != "help"}, name
            assert fields[name].metadata["help"], name
        # not overridden: the base's very field (one help text, one default)
        for name in set(shared) - own:
            assert fields[name] is shared[name], name
    # init_from stays per trainer: a tokenizer to continue vs a generator to fine-tune (the loop never reads it)
    assert "init_from" not in shared
    tokenizer_help = {f.name: f for f in dataclasses.fields(TokenizerTrainingConfig)}["init_from"].metadata["help"]
    llamagen_help = {f.name: f for f in dataclasses.fields(LlamaGenTrainingConfig)}["init_from"].metadata["help"]
    assert "tokenizer" in tokenizer_help and "generator" in llamagen_help
    # the loop reads the shared options as attributes, without fallbacks for a config that lacks them
    source = inspect.getsource(loop)
    assert 'getattr(cfg, "' not in source and "getattr(cfg, derived, None)" not in source


def _help_text(cls) -> str:
    return " ".join(build_parser("prog", cls).format_help().split())


@pytest.mark.parametrize(
    ("cls", "expected", "helps"),
    [
        (TokenizerTrainingConfig, TOKENIZER, {
            "--batch-size": "images per process and micro-batch (default: 8)",
            "--learning-rate": "base lr for a global batch of 128 (scaled linearly when scale_lr) (default: 0.0001)",
            "--lr-scheduler": "'annealing' (FVQ), 'annealing-cosine', 'constant', 'cosine' or 'linear' "
                              "(default: annealing)",
            "--weight-decay": "Adam weight decay (default: 0.0)",
            "--checkpoint-every": "steps between checkpoints; 0 disables them (default: 500)",
            "--output-dir": "run folder: checkpoints, model, logs, samples, results (default: outputs/tokenizer)",
            "--hold-fraction": "annealing schedules: lr held at 1 while the progress after warm-up is below this "
                               "(FVQ's --lrT); none = 0.3 (default: None)",
            "--init-from": "a tokenizer (folder or Hub id) to continue training AS IT IS",
        }),
        (LlamaGenTrainingConfig, LLAMAGEN, {
            "--batch-size": "sequences per process and micro-batch (default: 32)",
            "--learning-rate": "lr for a global batch of 256 (scaled linearly when scale_lr) (default: 0.0001)",
            "--scale-lr": "scale the lr with the global batch (batch x processes x accumulation) / 256 "
                          "(default: True)",
            "--weight-decay": "AdamW weight decay, on >= 2-D parameters only (default: 0.05)",
            "--checkpoint-every": "steps between checkpoints; 0 disables them (default: 5000)",
            "--log-every": "steps between logs (default: 50)",
            "--num-epochs": "an epoch is one pass over the codes dataset's ROWS",
            "--init-from": "a from_pretrained generator (folder or Hub id) to fine-tune (default: None)",
        }),
    ],
    ids=["tokenizer", "llamagen"],
)  # fmt: skip
def test_each_trainers_command_line_keeps_its_flags_defaults_and_help(cls, expected, helps):
    """Passes on 2b8a219 too: the same flags, parsed defaults and help texts as before the options had one home."""
    cfg = parse_args([], "prog", cls)
    assert {name: getattr(cfg, name) for name in expected} == expected
    assert set(cfg.to_dict()) == {f.name for f in dataclasses.fields(cls)}  # training_config.json's keys
    text = _help_text(cls)
    squeezed = "".join(text.split())  # argparse wraps lines at spaces and hyphens
    for flag, help in helps.items():
        assert flag in text
        assert "".join(help.split()) in squeezed, flag
    for name in expected:  # every loop option keeps both spellings
        assert f"--{name} " in text and f"--{name.replace('_', '-')} " in text, name
    # the loop's options parse as before: optional ones accept none, the bool flags and their --no- forms
    cfg = parse_args(["--hold-fraction", "none", "--global-batch-size", "64", "--no-scale-lr", "--compile",
                      "--checkpoints-total-limit", "none", "--lr-scheduler", "annealing", "--num-epochs", "1.5"],
                     "prog", cls)  # fmt: skip
    assert (cfg.hold_fraction, cfg.global_batch_size, cfg.scale_lr, cfg.compile) == (None, 64, False, True)
    assert (cfg.checkpoints_total_limit, cfg.lr_scheduler, cfg.num_epochs) == (None, "annealing", 1.5)


@pytest.mark.parametrize("cls", [TokenizerTrainingConfig, LlamaGenTrainingConfig], ids=["tokenizer", "llamagen"])
def test_help_lists_the_trainers_own_options_then_the_shared_ones_under_their_heading(cls):
    from fullvq_hf.training.config import SHARED_OPTIONS_TITLE, TrainingConfig

    text = _help_text(cls)
    own_start, shared_start = text.index("options: "), text.index(SHARED_OPTIONS_TITLE + ":")
    assert own_start < shared_start
    own, shared = text[own_start:shared_start], text[shared_start:]
    first_own = next(f.name for f in dataclasses.fields(cls) if f.name not in TrainingConfig.__dataclass_fields__)
    assert "--preset " in own and f"--{first_own} " in own and "--config " in own and "--debug " in own
    for f in dataclasses.fields(TrainingConfig):
        if f.name != "preset":
            assert f"--{f.name} " in shared and f"--{f.name} " not in own, f.name
    for f in dataclasses.fields(cls):
        if f.name not in TrainingConfig.__dataclass_fields__:
            assert f"--{f.name} " in own and f"--{f.name} " not in shared, f.name


def test_extract_codes_parses_its_boolean_flags_like_the_trainers():
    from fullvq_hf.training.codes import build_parser

    parser = build_parser()
    required = ["--tokenizer", "t", "--output-dir", "o"]
    args = parser.parse_args(required + ["--convert-channels", "true", "--overwrite", "no", "--private", "1"])
    assert (args.convert_channels, args.overwrite, args.private) == (True, False, True)
    defaults = parser.parse_args(required)
    assert (defaults.convert_channels, defaults.overwrite, defaults.private) == (False, False, None)
    with pytest.raises(SystemExit):
        parser.parse_args(required + ["--overwrite", "maybe"])
