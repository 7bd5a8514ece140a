"""fullvq_hf: scalable vector-quantized image tokenizers (FVQ / VQBridge, VQGAN-LC, SimVQ, plain VQ) as
diffusers models, and the LlamaGen class-to-image generator as a transformers model."""

__version__ = "0.1.0"

from .metrics import CodebookUsage
from .models import (
    BACKBONES,
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
    nearest_codes,
)
from .pipelines import LlamaGenPipeline

__all__ = [
    "BACKBONES",
    "CodebookUsage",
    "FVQModel",
    "FrozenCodebookQuantizer",
    "LlamaGenConfig",
    "LlamaGenForConditionalGeneration",
    "LlamaGenPipeline",
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
