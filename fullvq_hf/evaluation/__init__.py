"""Evaluation helpers: an offline feature extractor (a small Fashion-MNIST classifier whose weights ship with the
package) for Frechet distances and accuracy checks. The metrics themselves live in ``fullvq_hf.metrics``.

Names are imported lazily, so ``python -m fullvq_hf.evaluation.fmnist_classifier`` runs the module only once.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULT_WEIGHTS",
    "FashionMNISTClassifier",
    "evaluate_classifier",
    "load_classifier",
    "save_classifier",
    "train_classifier",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import fmnist_classifier

        return getattr(fmnist_classifier, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
