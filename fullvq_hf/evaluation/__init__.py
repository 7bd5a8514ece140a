"""Evaluation: named feature extractors (``extractors``: the Fashion-MNIST classifier shipped with the package,
``fmnist_classifier``), the tokenizer evaluation (``tokenizer_eval``) and the generator score (``generator_eval``).
The metrics themselves (which take modules) live in ``fullvq_hf.metrics``.

Names are imported lazily, so ``python -m fullvq_hf.evaluation.fmnist_classifier`` runs the module only once.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "DEFAULT_WEIGHTS": "fmnist_classifier",
    "FashionMNISTClassifier": "fmnist_classifier",
    "evaluate_classifier": "fmnist_classifier",
    "load_classifier": "fmnist_classifier",
    "save_classifier": "fmnist_classifier",
    "train_classifier": "fmnist_classifier",
    "FASHION_MNIST_EXTRACTOR": "extractors",
    "load_feature_extractor": "extractors",
    "evaluate_tokenizer": "tokenizer_eval",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
