"""Finding and reading the weights of the evaluation networks (FID Inception, LPIPS): a local file, a folder, or a
file in a Hub repo; read without running pickled code. Nothing is downloaded unless a Hub repo is named.

Errors name the option the user has to set (``option``), so a CLI can pass them through as one line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def resolve_weights_file(
    source: str | os.PathLike,
    default_names: Sequence[str],
    what: str,
    option: str,
    filename: str | None = None,
    revision: str | None = None,
) -> Path:
    """A local path for ``source``: an existing file; a folder holding ``filename`` or one of ``default_names``;
    or a Hub repo ``"owner/name"`` (then ``filename`` or the first of ``default_names``) or
    ``"owner/name/path/in/repo"``, fetched with ``huggingface_hub.hf_hub_download`` (cached; offline mode reads
    the cache only).

    Raises ``ValueError`` naming ``option`` and the expected file when nothing is found.
    """
    text = os.fspath(source)
    path = Path(text).expanduser()
    expected = " or ".join(repr(n) for n in default_names)
    if path.is_file():
        return path
    if path.is_dir():
        for name in [filename] if filename else default_names:
            if (path / name).is_file():
                return path / name
        raise ValueError(
            f"{option} {text!r}: the folder holds no {what} weights file ({filename or expected}); pass the file itself."
        )
    parts = text.split("/")
    looks_local = isinstance(source, Path) or os.path.isabs(text) or text.startswith((".", "~"))
    if looks_local or len(parts) < 2 or "\\" in text or text.endswith(WEIGHT_SUFFIXES) and len(parts) == 2:
        raise ValueError(
            f"{option} {text!r}: no such file. {what} weights are never downloaded implicitly; pass a local "
            f"{expected} file, a folder holding it, or a Hub repo id 'owner/name[/file]'."
        )
    repo_id = "/".join(parts[:2])
    in_repo = "/".join(parts[2:]) if len(parts) > 2 else (filename or default_names[0])
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, in_repo, revision=revision))
    except Exception as err:  # offline cache miss, unknown repo or file, no network, invalid id
        raise ValueError(
            f"{option} {text!r}: not a local file, and fetching {in_repo!r} from the Hub repo {repo_id!r} failed "
            f"({type(err).__name__}). Pass a local {expected} file, or a Hub repo that holds it (with network "
            "access or a warm cache)."
        ) from err


def read_state_dict(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: ``.safetensors`` via safetensors, anything else via
    ``torch.load(weights_only=True)``; a ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper is opened and a
    leading ``module.`` stripped. Non-tensor entries are dropped."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, a pickle holding Python objects, a text file, ...
        if "Unsupported global" in str(err):  # weights_only met a class: a pickled Python object
            raise ValueError(
                f"Refusing to load {what} weights from {path}: it holds Python objects besides tensors, and unpickling "
                "them could run arbitrary code. Re-save just the state dict (or a safetensors copy) in a trusted session."
            ) from None
        raise ValueError(
            f"Could not read {what} weights from {path}: not a safetensors file nor a PyTorch state-dict file "
            f"({type(err).__name__}: {str(err)[:120]})."
        ) from err
    if isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        for nested in ("state_dict", "model"):
            if isinstance(state.get(nested), Mapping):
                state = state[nested]
                break
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} does not hold a state dict of {what} weights (got {type(state).__name__}).")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
