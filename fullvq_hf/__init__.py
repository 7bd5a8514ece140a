"""fullvq_hf: scalable vector-quantized image tokenizers (FVQ / VQBridge, VQGAN-LC, SimVQ, plain VQ) as
diffusers models."""

__version__ = "0.1.0"

from .metrics import CodebookUsage
from .models import (
    BACKBONES,
    FrozenCodebookQuantizer,
    FVQModel,
    QuantizerOutput,
    SimVQQuantizer,
    VectorQuantizer,
    VQBridge,
    VQBridgeQuantizer,
    VQGANLCModel,
    VQTokenizerOutput,
    bridge_grid,
    nearest_codes,
)

__all__ = [
    "BACKBONES",
    "CodebookUsage",
    "FVQModel",
    "FrozenCodebookQuantizer",
    "QuantizerOutput",
    "SimVQQuantizer",
    "VQBridge",
    "VQBridgeQuantizer",
    "VQGANLCModel",
    "VQTokenizerOutput",
    "VectorQuantizer",
    "bridge_grid",
    "nearest_codes",
]
