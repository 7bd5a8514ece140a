"""Loading a tokenizer folder (or Hub repo) into the right class, and refusing the wrong one.

``load_tokenizer(name_or_path)`` reads ``config.json`` (locally or from the Hub, through diffusers'
``ConfigMixin.load_config``), takes the class from its ``_class_name`` (written by ``save_pretrained``) and calls
that class's ``from_pretrained``. Every tokenizer class's ``from_pretrained`` goes through ``checked_from_pretrained``:
diffusers itself only warns when a folder of another class is loaded (then fails later, or builds the wrong model)
and initialises missing weights at random; here both are errors that say what the folder holds.
"""

from __future__ import annotations

import os
from typing import Any

# Tokenizer classes of this package by ``_class_name``: name -> module (imported when needed).
TOKENIZER_CLASSES = {"FVQModel": "modeling_fvq", "VQGANLCModel": "modeling_vqgan_lc"}
# from_pretrained keywords that say where a config lives (passed on to ``load_config``).
_LOCATION_KWARGS = (
    "subfolder",
    "revision",
    "cache_dir",
    "force_download",
    "proxies",
    "local_files_only",
    "token",
)


def _where(name_or_path: str | os.PathLike, subfolder: str | None) -> str:
    where = os.fspath(name_or_path)
    return f"{where} (subfolder {subfolder!r})" if subfolder else where


def _describe(config: dict) -> str:
    """What a config says the folder holds, in words."""
    name = config.get("_class_name")
    if name in TOKENIZER_CLASSES:
        kind = config.get("quantizer_type")
        return f"a {name}" + (f" (quantizer_type={kind!r})" if kind else "")
    if name:
        return f"a {name} (a diffusers {name}, not a tokenizer of this package)"
    if config.get("model_type"):
        arch = ", ".join(config.get("architectures") or []) or "a transformers model"
        return f"a transformers model_type={config['model_type']!r} config ({arch}), not a tokenizer"
    return "a config.json without `_class_name` (not written by a diffusers save_pretrained)"


def read_config(name_or_path: str | os.PathLike, **kwargs: Any) -> dict:
    """The ``config.json`` of a local folder or Hub repo as a dict (``_class_name`` included).

    ``kwargs``: ``subfolder``, ``revision`` and the other Hub options of ``from_pretrained``.
    """
    from diffusers.configuration_utils import ConfigMixin

    class _Reader(ConfigMixin):
        config_name = "config.json"

    location = {k: kwargs[k] for k in _LOCATION_KWARGS if kwargs.get(k) is not None}
    try:
        return dict(_Reader.load_config(os.fspath(name_or_path), **location))
    except OSError as err:
        folder = os.path.join(os.fspath(name_or_path), location.get("subfolder") or "")
        inner = [d for d in ("model", "vqvae") if os.path.isfile(os.path.join(folder, d, "config.json"))]
        if not inner:
            raise
        raise OSError(
            f"{err} {folder} holds a model in {inner[0]}/: pass subfolder={inner[0]!r} (--subfolder {inner[0]}) "
            f"or the path {os.path.join(folder, inner[0])}."
        ) from err


def check_tokenizer_class(
    cls: type, name_or_path: str | os.PathLike, config: dict, subfolder: str | None = None
) -> None:
    """Raise a ``ValueError`` when ``config`` (read from ``name_or_path``) is not a folder of ``cls``.

    A config of ``cls`` or of one of its base classes is accepted (a subclass may load its parent's folders);
    a config without ``_class_name`` is accepted only when it has no ``model_type`` either (nothing to go by).
    """
    name = config.get("_class_name")
    if name is None and not config.get("model_type"):
        return
    if name in {klass.__name__ for klass in cls.__mro__}:
        return
    hint = (
        f"Load it with {name}.from_pretrained, or with fullvq_hf.load_tokenizer(path), which picks the class "
        "from config.json."
        if name in TOKENIZER_CLASSES
        else "Point to a folder saved by FVQModel / VQGANLCModel.save_pretrained (or convert the checkpoint with "
        "`fullvq convert`)."
    )
    raise ValueError(
        f"{_where(name_or_path, subfolder)} holds {_describe(config)}, not a {cls.__name__}. {hint}"
    )


def check_loading_info(
    cls: type, name_or_path: str | os.PathLike, info: dict, subfolder: str | None = None
) -> None:
    """Raise a ``ValueError`` when ``from_pretrained`` found weights missing (diffusers would initialise them at
    random) or of the wrong shape; ``info`` is diffusers' ``output_loading_info`` dict."""
    missing = sorted(info.get("missing_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if not missing and not mismatched:
        return
    parts = []
    if missing:
        shown = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
        parts.append(f"its weights file lacks {len(missing)} tensor(s) of {cls.__name__}: {shown}")
    if mismatched:
        shown = ", ".join(str(m[0]) if isinstance(m, (tuple, list)) else str(m) for m in mismatched[:8])
        parts.append(f"{len(mismatched)} tensor(s) have another shape than the config says: {shown}")
    raise ValueError(
        f"{_where(name_or_path, subfolder)} is an incomplete {cls.__name__} folder: {'; '.join(parts)}. "
        "Loading it would leave those weights random. Re-export the folder with save_pretrained (or re-run the "
        "converter), or check that config.json and the weights file belong together."
    )


def checked_from_pretrained(cls: type, base_from_pretrained, name_or_path: str | os.PathLike, **kwargs: Any):
    """``base_from_pretrained(name_or_path, **kwargs)`` (diffusers' ``ModelMixin.from_pretrained`` bound to ``cls``)
    with the two checks above: the config names ``cls`` (or a base class), and no weight is missing."""
    subfolder = kwargs.get("subfolder")
    check_tokenizer_class(cls, name_or_path, read_config(name_or_path, **kwargs), subfolder)
    want_info = kwargs.pop("output_loading_info", False)
    model, info = base_from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    check_loading_info(cls, name_or_path, info, subfolder)
    return (model, info) if want_info else model


def load_tokenizer(
    name_or_path: str | os.PathLike,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    **kwargs: Any,
):
    """Load a tokenizer of this package from a local folder or a Hub repo, in the class its config names.

    Args:
        name_or_path: A folder written by ``save_pretrained`` (``config.json`` + weights) or a Hub repo id.
        subfolder: A folder inside it (e.g. ``"model"`` of a training run, ``"vqvae"`` of a pipeline repo).
        revision: Hub branch, tag or commit.
        kwargs: Passed on to ``from_pretrained`` (``torch_dtype``, ``cache_dir``, ``token``, ...).

    Returns:
        An ``FVQModel`` or ``VQGANLCModel`` (in eval mode, as diffusers loads it).

    Raises:
        ValueError: the config is not a tokenizer of this package (it says what it is), or weights are missing.
    """
    import importlib

    config = read_config(name_or_path, subfolder=subfolder, revision=revision, **kwargs)
    name = config.get("_class_name")
    if name not in TOKENIZER_CLASSES:
        raise ValueError(
            f"{_where(name_or_path, subfolder)} holds {_describe(config)}; load_tokenizer loads "
            f"{' or '.join(TOKENIZER_CLASSES)} folders (written by save_pretrained or `fullvq convert`)."
        )
    cls = getattr(importlib.import_module(f".{TOKENIZER_CLASSES[name]}", __package__), name)
    return cls.from_pretrained(name_or_path, subfolder=subfolder, revision=revision, **kwargs)
