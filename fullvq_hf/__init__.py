"""fullvq_hf: scalable vector-quantized image tokenizers (FVQ / VQBridge, VQGAN-LC, SimVQ, plain VQ) as
diffusers models, and the LlamaGen class-to-image generator as a transformers model."""

__version__ = "0.1.0"

from .runtime import configure_cpu_runtime

configure_cpu_runtime()  # before torch loads: passive OpenMP waits, malloc keeps large blocks (see runtime.py)

from .metrics import CodebookUsage  # noqa: E402
from .models import (  # noqa: E402
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
from .pipelines import LlamaGenPipeline  # noqa: E402

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
