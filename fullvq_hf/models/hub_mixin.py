"""``push_to_hub`` with the package's model card and remote code, for every model and the pipeline.

    tokenizer.push_to_hub("org/fvq-16k")              # FVQModel / VQGANLCModel (diffusers' method, same arguments)
    generator.push_to_hub("org/llamagen-b")            # LlamaGenForConditionalGeneration (transformers' method)
    pipe.push_to_hub("org/llamagen-b-fvq")             # LlamaGenPipeline

diffusers' and transformers' ``push_to_hub`` upload ``save_pretrained`` plus a blank template card. This mixin,
first in each class's bases, routes the call to ``fullvq_hf.hub.push_to_hub`` instead: the same one-commit upload
as ``fullvq push``, with the package's card (metadata, results with ``model-index``, citations) and the one-file
remote code (``fullvq_hf.remote_code``) that lets the repo load with ``trust_remote_code=True`` without the package.

Layering: ``models/`` is the ground floor and ``hub.py`` sits above it (it renders cards for every kind and imports
the models), so the import is lazy, inside the method; neither library offers a hook for the card of a push. When
the class runs as remote code without the package, the import fails and the library's own ``push_to_hub`` runs.
"""

from __future__ import annotations

import inspect
import shutil
import tempfile
from pathlib import Path
from typing import Any


class HubPushMixin:
    """Put first in the bases of a diffusers ``ModelMixin``, transformers ``PreTrainedModel`` or diffusers
    ``DiffusionPipeline`` subclass."""

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        subfolder: str | None = None,
        results: dict[str, Any] | None = None,
        base_model: str | None = None,
        tags: list[str] | None = None,
        **save_kwargs: Any,
    ):
        """Upload ``save_pretrained(tmp, **save_kwargs)`` (e.g. ``variant``, ``max_shard_size``,
        ``safe_serialization``) to ``repo_id`` in one commit with the package's model card; returns the
        ``CommitInfo``.

        ``results`` (a ``results.json``-like mapping: ``usage``, ``psnr``, ``fid``, ...) go into the card's table
        and its ``model-index`` metadata; ``base_model`` and ``tags`` into its metadata. ``revision`` is a branch
        (created from main if needed); ``subfolder`` pushes into a folder of the repo and leaves the card alone,
        as diffusers does.
        """
        try:
            from ..hub import push_to_hub  # lazy: hub.py is a floor above models/ (see the module docstring)
        except ImportError:  # loaded as remote code without fullvq_hf: the library's own push
            given = dict(commit_message=commit_message, commit_description=commit_description, private=private,
                         token=token, revision=revision, create_pr=create_pr, subfolder=subfolder, tags=tags,
                         **save_kwargs)  # fmt: skip
            accepted = inspect.signature(super().push_to_hub).parameters  # type: ignore[misc]
            return super().push_to_hub(repo_id, **{k: v for k, v in given.items() if k in accepted and v})  # type: ignore[misc]
        return push_to_hub(
            self, repo_id, commit_message=commit_message, commit_description=commit_description, private=private,
            token=token, revision=revision, create_pr=create_pr, subfolder=subfolder, results=results,
            base_model=base_model, tags=tags, save_kwargs=save_kwargs,
        )  # fmt: skip

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args: Any, **kwargs: Any):
        """The library's ``from_pretrained``; a pipeline folder that also holds the remote code of a push (a Hub
        snapshot after a ``trust_remote_code=True`` load in the same cache) loads with the package's classes from a
        view of the folder without the ``.py`` files (diffusers would otherwise run, or ask to trust, that code)."""
        folder = Path(str(pretrained_model_name_or_path))
        if not (folder / "model_index.json").is_file() or not any(folder.glob("*.py")):
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)  # type: ignore[misc]
        with tempfile.TemporaryDirectory(prefix="fullvq_hf-no-code-") as view:
            for path in folder.rglob("*"):
                if path.is_file() and path.suffix != ".py":
                    link = Path(view) / path.relative_to(folder)
                    link.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        link.symlink_to(path.resolve())
                    except OSError:  # no symlinks (Windows without the privilege)
                        shutil.copy2(path, link)
            loaded = super().from_pretrained(view, *args, **kwargs)  # type: ignore[misc]
        loaded.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        return loaded

    @classmethod
    def extract_init_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        """diffusers configs: ignore the ``auto_map`` a push adds for remote code (diffusers would warn that it is
        not an ``__init__`` argument on every load)."""
        config_dict = {k: v for k, v in config_dict.items() if k != "auto_map"}
        return super().extract_init_dict(config_dict, **kwargs)  # type: ignore[misc]
