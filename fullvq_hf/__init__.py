"""fullvq_hf: scalable vector-quantized image tokenizers (FVQ / VQBridge, VQGAN-LC, SimVQ, plain VQ) as
diffusers models, and the LlamaGen class-to-image generator as a transformers model.

The public names below are imported lazily, as diffusers and transformers do: ``import fullvq_hf`` loads no torch,
diffusers, transformers, accelerate or datasets; ``fullvq_hf.FVQModel`` (or ``from fullvq_hf import FVQModel``)
imports ``fullvq_hf.models`` on first use, which also registers ``model_type="llamagen"`` with transformers'
``AutoConfig`` / ``AutoModel``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .runtime import configure_cpu_runtime

configure_cpu_runtime()  # before torch loads: passive OpenMP waits, malloc keeps large blocks (see runtime.py)

# public name -> submodule that defines it (imported on first access)
_LAZY_NAMES = {
    "BACKBONES": "models",
    "DiTVQBridge": "models",
    "QBRIDGE_MODELS": "models",
    "FVQModel": "models",
    "FrozenCodebookQuantizer": "models",
    "LlamaGenConfig": "models",
    "LlamaGenForConditionalGeneration": "models",
    "QuantizerOutput": "models",
    "SimVQQuantizer": "models",
    "VQBridge": "models",
    "VQBridgeQuantizer": "models",
    "VQGANLCModel": "models",
    "VQTokenizerOutput": "models",
    "VectorQuantizer": "models",
    "bridge_grid": "models",
    "load_tokenizer": "models",
    "nearest_codes": "models",
    "CodebookUsage": "metrics",
    "LlamaGenPipeline": "pipelines",
}

__all__ = [
    "BACKBONES",
    "CodebookUsage",
    "DiTVQBridge",
    "FVQModel",
    "FrozenCodebookQuantizer",
    "LlamaGenConfig",
    "LlamaGenForConditionalGeneration",
    "LlamaGenPipeline",
    "QBRIDGE_MODELS",
    "QuantizerOutput",
    "SimVQQuantizer",
    "VQBridge",
    "VQBridgeQuantizer",
    "VQGANLCModel",
    "VQTokenizerOutput",
    "VectorQuantizer",
    "bridge_grid",
    "load_tokenizer",
    "nearest_codes",
]  # = the keys of _LAZY_NAMES (tested)

if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from .metrics import CodebookUsage
    from .models import (
        BACKBONES,
        QBRIDGE_MODELS,
        DiTVQBridge,
        FrozenCodebookQuantizer,
        FVQModel,
        LlamaGenConfig,
        LlamaGenForConditionalGeneration,
        QuantizerOutput,
        SimVQQuantizer,
        VectorQuantizer,
        VQBridge,
        VQBridgeQuantizer,
        VQGANLCModel,
        VQTokenizerOutput,
        bridge_grid,
        load_tokenizer,
        nearest_codes,
    )
    from .pipelines import LlamaGenPipeline


def __getattr__(name: str) -> Any:
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
