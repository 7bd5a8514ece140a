"""What every checkpoint converter shares: safe loading, picking the weights out of a training checkpoint,
stripping wrapper prefixes, inferring shapes, strict key matching and writing the converted model.

Loading never runs arbitrary pickled code: ``.pt``/``.pth``/``.bin`` files go through
``torch.load(..., weights_only=True)`` (tensors, containers and numbers only, plus ``argparse.Namespace``, which
LlamaGen, FVQ and VQGAN-LC store under ``"args"``); ``.safetensors`` files through safetensors. A checkpoint that
holds any other Python object is refused with a ``ValueError``.

Matching is strict: every tensor of the source must land in exactly one parameter or buffer of the target (apart
from keys a converter explicitly drops, such as discriminator weights), every target tensor must be filled, and
shapes must agree. Anything else raises one ``ValueError`` listing every problem.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import pickle
import re
from collections.abc import Callable, Iterable, Mapping

import torch

logger = logging.getLogger(__name__)

# Module wrappers that prefix parameter names: DDP / DataParallel ("module."), torch.compile ("_orig_mod."),
# FSDP and activation checkpointing (anywhere in the name).
LEADING_PREFIXES = ("module.", "_orig_mod.")
ANYWHERE_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")

# Keys under which training scripts store the model weights, tried in this order.
STATE_DICT_KEYS = ("model", "state_dict", "module", "model_state_dict")

# Classes that may appear in an official checkpoint besides tensors and containers (the training arguments).
SAFE_GLOBALS = (argparse.Namespace,)


# ---------------------------------------------------------------------------------------------------- loading
def load_checkpoint(path: str | os.PathLike) -> object:
    """Load a checkpoint file without executing pickled code.

    ``.safetensors`` -> a flat dict of tensors; anything else -> ``torch.load(path, map_location="cpu",
    weights_only=True)`` with ``argparse.Namespace`` allowed. Raises ``FileNotFoundError`` for a missing file
    and ``ValueError`` for a file that is not a readable checkpoint or holds other Python objects.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path!r}.")
    kind = sniff_checkpoint_format(path)
    if path.endswith(".safetensors") and kind != "safetensors":
        what = "a PyTorch checkpoint" if kind == "torch" else "not a safetensors file"
        raise ValueError(
            f"{path!r} is named .safetensors but is {what}"
            + (": rename it to .pt and convert that." if kind == "torch" else f" ({kind}).")
        )
    if kind == "safetensors" and not path.endswith(".safetensors"):
        raise ValueError(
            f"{path!r} is a safetensors file, not a PyTorch (pickle) checkpoint: rename it to "
            f"{os.path.splitext(os.path.basename(path))[0]}.safetensors and convert that."
        )
    if kind not in ("safetensors", "torch"):
        raise ValueError(
            f"{path!r} is not a PyTorch checkpoint ({kind}). Give the .pt/.pth file torch.save wrote, or a "
            ".safetensors file."
        )
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as err:  # safetensors raises its own error type for corrupt files
            raise ValueError(
                f"Could not read {path!r} as a safetensors file ({type(err).__name__}: {err})."
            ) from err
    allow = getattr(torch.serialization, "safe_globals", None)
    try:
        if allow is not None:
            with allow(list(SAFE_GLOBALS)):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = _unpickling_detail(str(err))
        raise ValueError(
            f"Refusing to load {path!r}: it contains Python objects other than tensors, numbers and containers "
            f"({detail}). Unpickling it could run arbitrary code, so only weights_only loading is used. If you "
            "trust the file, re-save just its state dict, e.g. torch.save({'model': ckpt['model']}, 'clean.pt') "
            "in a separate, trusted session, or export it to safetensors, and convert that."
        ) from None
    except Exception as err:  # a damaged archive or pickle surfaces as KeyError, EOFError, RuntimeError, ...
        raise ValueError(
            f"Could not read {path!r} as a PyTorch checkpoint ({type(err).__name__}: {err})."
        ) from err


def sniff_checkpoint_format(path: str) -> str:
    """What the first bytes of ``path`` say it is: ``"torch"`` (torch.save's zip archive, or a legacy pickle),
    ``"safetensors"`` (an 8-byte little-endian header length, then a JSON header), or a description of
    something else (``"an empty file"``, ``"a text file starting with 'hello'"``, ``"unrecognised bytes ..."``)."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(64)
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # zip (torch >= 1.6) or pickle protocol >= 2
        return "torch"
    if len(head) >= 9:
        header_len = int.from_bytes(head[:8], "little")
        if head[8:9] == b"{" and 8 + header_len <= size:
            return "safetensors"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"unrecognised bytes {head[:8].hex(' ')}"
    return f"a text file starting with {text.strip()[:24]!r}"


def check_output_dir(path: str | os.PathLike) -> None:
    """A converter's OUTPUT must be a directory or not exist yet; ValueError when it is an existing file."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"The output {path!r} is an existing file; the converted model is a folder (config.json + "
            "safetensors). Give a new or existing folder path."
        )


def _unpickling_detail(message: str) -> str:
    """The informative part of torch's weights_only error, e.g. 'Unsupported global: GLOBAL x.Y was not an
    allowed global by default.'"""
    message = re.sub(r"\x1b\[[0-9;]*m", "", message)
    match = re.search(r"WeightsUnpickler error: (.*?)(?= Please use|\n|$)", message)
    return match.group(1).strip() if match else "see torch's weights_only error"


def checkpoint_args(checkpoint: object) -> dict:
    """The training arguments stored under ``"args"`` (an ``argparse.Namespace`` or dict), or ``{}``."""
    if not isinstance(checkpoint, Mapping):
        return {}
    args = checkpoint.get("args")
    if isinstance(args, argparse.Namespace):
        return vars(args)
    return dict(args) if isinstance(args, Mapping) else {}


def select_state_dict(checkpoint: object, state_dict_key: str | None = None, ema: bool = False) -> dict:
    """The weights inside a loaded checkpoint.

    A flat dict of tensors is returned as is. Otherwise ``state_dict_key`` (or ``"ema"`` when ``ema``) names the
    entry; by default the first of ``"model"``, ``"state_dict"``, ``"module"``, ``"model_state_dict"`` present.
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"Expected a checkpoint dict, got {type(checkpoint).__name__}.")
    if ema:
        if state_dict_key not in (None, "ema"):
            raise ValueError(
                f"ema=True picks the 'ema' weights; it contradicts state_dict_key={state_dict_key!r}."
            )
        state_dict_key = "ema"
    if _is_flat_state_dict(checkpoint) and state_dict_key is None:
        logger.info("Converting the checkpoint's weights (a flat state dict: no 'model' / 'ema' entries).")
        return dict(checkpoint)
    nested = [k for k, v in checkpoint.items() if isinstance(v, Mapping)]
    if state_dict_key is None:
        state_dict_key = next((k for k in STATE_DICT_KEYS if k in checkpoint), None)
        if state_dict_key is None:
            raise ValueError(
                f"Could not find the weights in this checkpoint: none of {list(STATE_DICT_KEYS)} is present "
                f"(top-level keys: {_short_list(checkpoint.keys())}). Name the entry with state_dict_key "
                "(--state-dict-key)."
            )
        if "ema" in checkpoint and isinstance(checkpoint["ema"], Mapping):
            logger.info(
                "The checkpoint also holds EMA weights ('ema'); converting %r. Pass ema=True (--ema) for the EMA "
                "weights, which the official evaluation scripts prefer.",
                state_dict_key,
            )
    if state_dict_key not in checkpoint:
        raise ValueError(
            f"The checkpoint has no {state_dict_key!r} entry; entries holding weights: {nested or 'none'} "
            f"(top-level keys: {_short_list(checkpoint.keys())})."
        )
    state_dict = checkpoint[state_dict_key]
    if not _is_flat_state_dict(state_dict):
        raise ValueError(f"checkpoint[{state_dict_key!r}] is not a dict of tensors.")
    logger.info(
        "Converting the %s weights (checkpoint[%r]).",
        "EMA" if state_dict_key == "ema" else "model",
        state_dict_key,
    )
    return dict(state_dict)


def _is_flat_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DDP/DataParallel (``module.``), torch.compile (``_orig_mod.``), FSDP (``_fsdp_wrapped_module.``)
    and activation-checkpointing (``_checkpoint_wrapped_module.``) prefixes from every key."""
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state_dict.items():
        new = key
        changed = True
        while changed:
            changed = False
            for prefix in LEADING_PREFIXES:
                if new.startswith(prefix):
                    new, changed = new[len(prefix) :], True
        for prefix in ANYWHERE_PREFIXES:
            new = new.replace(prefix, "")
        if new in out:
            raise ValueError(
                f"Keys {origin[new]!r} and {key!r} both become {new!r} once wrapper prefixes are removed."
            )
        out[new], origin[new] = value, key
    return out


def load_source_state_dict(
    checkpoint_path: str | os.PathLike, state_dict_key: str | None = None, ema: bool = False
) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state dict with wrapper prefixes stripped, training args or {})`` of a checkpoint file."""
    checkpoint = load_checkpoint(checkpoint_path)
    state_dict = strip_wrapper_prefixes(select_state_dict(checkpoint, state_dict_key, ema))
    return state_dict, checkpoint_args(checkpoint)


def _short_list(items: Iterable, limit: int = 20) -> str:
    items = [str(i) for i in items]
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return "[" + ", ".join(items[:limit]) + more + "]"


# ---------------------------------------------------------------------------------------------------- inference
def require(state_dict: Mapping[str, torch.Tensor], key: str, what: str, layout: str) -> torch.Tensor:
    """``state_dict[key]``, or a ValueError saying which tensor (needed to infer ``what``) is missing."""
    if key not in state_dict:
        raise ValueError(
            f"Cannot infer {what}: the checkpoint has no {key!r} tensor. Is this a {layout} checkpoint? "
            f"(first keys: {_short_list(sorted(state_dict), 8)})"
        )
    return state_dict[key]


def count_indexed(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of consecutive integer children ``prefix.{0,1,...}`` present in the key names."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    found = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    n = 0
    while n in found:
        n += 1
    return n


def indexed_children(state_dict: Mapping[str, torch.Tensor], prefix: str) -> set[int]:
    """All integer children ``prefix.{i}`` present in the key names."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    return {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}


def apply_overrides(config: dict, overrides: Mapping, model_class: type) -> dict:
    """``config`` updated with ``overrides``, whose names must be parameters of ``model_class.__init__``."""
    valid = [p for p in inspect.signature(model_class.__init__).parameters if p != "self"]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for {model_class.__name__}; config options are {valid}."
        )
    return {**config, **overrides}


# ---------------------------------------------------------------------------------------------------- matching
def load_mapped_state_dict(
    model: torch.nn.Module,
    source: Mapping[str, torch.Tensor],
    source_key_of: Callable[[str], str],
    dropped: Callable[[str], bool] = lambda key: False,
    describe: str = "the model",
    hint: str = "",
) -> list[str]:
    """Fill every parameter and buffer of ``model`` from ``source``, strictly.

    ``source_key_of(target_key)`` gives the source name of each target tensor (the key map, written from the
    target side so that missing tensors can be reported under their source names). Source keys for which
    ``dropped(key)`` is true are training-only tensors that are deliberately left out. Raises one ValueError that
    lists every source key with no place in the model, every model tensor the source lacks and every shape
    mismatch (with both shapes). Returns the dropped source keys.
    """
    target = model.state_dict()
    key_map = {source_key_of(t): t for t in target}
    if len(key_map) != len(target):
        raise RuntimeError("The key map sends two model tensors to the same source key.")  # a converter bug
    dropped_keys = sorted(k for k in source if k not in key_map and dropped(k))
    unmatched = sorted(k for k in source if k not in key_map and not dropped(k))
    missing = [(s, t) for s, t in key_map.items() if s not in source]
    mismatched = [
        (s, t, tuple(source[s].shape), tuple(target[t].shape))
        for s, t in key_map.items()
        if s in source and tuple(source[s].shape) != tuple(target[t].shape)
    ]
    if unmatched or missing or mismatched:
        lines = [f"The checkpoint does not match {describe}:"]
        if unmatched:
            lines.append(f"  {len(unmatched)} checkpoint tensor(s) with no place in the model:")
            lines += [f"    {k} {tuple(source[k].shape)}" for k in unmatched]
        if missing:
            lines.append(f"  {len(missing)} model tensor(s) missing from the checkpoint:")
            lines += [f"    {s}" + (f" (-> {t})" if s != t else "") for s, t in missing]
        if mismatched:
            lines.append(f"  {len(mismatched)} shape mismatch(es):")
            lines += [
                f"    {s}" + (f" (-> {t})" if s != t else "") + f": checkpoint {a} vs model {b}"
                for s, t, a, b in mismatched
            ]
        if hint:
            lines.append(hint)
        raise ValueError("\n".join(lines))
    with torch.no_grad():
        model.load_state_dict({t: source[s] for s, t in key_map.items()}, strict=True)
    if dropped_keys:
        logger.info("Dropped %d training-only tensor(s): %s", len(dropped_keys), _short_list(dropped_keys, 6))
    return dropped_keys


# ---------------------------------------------------------------------------------------------------- writing
def save_converted(
    model, output_dir: str | os.PathLike, card_info: Mapping | None = None, **save_kwargs
) -> None:
    """``model.save_pretrained(output_dir)`` (config.json + safetensors), plus a README.md model card from
    ``fullvq_hf.hub.render_model_card`` when that is available.

    ``card_info`` may name ``base_model`` (the Hub id the weights come from; default ``source_repo``), plus
    ``source`` and ``checkpoint`` for the log.
    """
    output_dir = os.fspath(output_dir)
    check_output_dir(output_dir)
    model.save_pretrained(output_dir, **save_kwargs)
    write_model_card(model, output_dir, card_info or {})


def write_model_card(model, output_dir: str, card_info: Mapping) -> str | None:
    """Write ``README.md`` with ``fullvq_hf.hub.render_model_card``; returns its path, or None when the card
    machinery (the module, jinja2, the templates) is not available."""
    try:
        from ..hub import render_model_card
    except ImportError as err:
        logger.info(
            "No model card (README.md) written: fullvq_hf.hub.render_model_card is not available (%s).", err
        )
        return None
    base_model = card_info.get("base_model", card_info.get("source_repo"))
    try:
        # converted weights keep their source's licence (None: the source states none, so the card claims none)
        card = render_model_card(None, model, base_model=base_model, license=card_info.get("license"))
    except (ImportError, FileNotFoundError) as err:  # jinja2 or the model_cards/ templates missing
        logger.warning("No model card (README.md) written: %s", err)
        return None
    path = os.path.join(output_dir, "README.md")
    if hasattr(card, "save"):  # a huggingface_hub ModelCard
        card.save(path)
    else:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(str(card))
    logger.info(
        "Wrote the model card %s (converted from %s)", path, card_info.get("checkpoint", "a checkpoint")
    )
    return path
