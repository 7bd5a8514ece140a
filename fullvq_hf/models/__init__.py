"""Ground floor: nn.Modules and their serialisation only (no data, training, evaluation or Hub code).

Importing this package imports the models (torch, diffusers, transformers) and registers ``model_type="llamagen"``
with transformers' ``AutoConfig`` / ``AutoModel``; ``import fullvq_hf`` alone does neither (its names are lazy).
"""

from .autoencoder import Decoder, Encoder
from .configuration_llamagen import LLAMAGEN_PRESETS, LlamaGenConfig
from .loading import load_tokenizer
from .modeling_fvq import FVQModel
from .modeling_llamagen import LlamaGenForConditionalGeneration
from .modeling_tokenizer import BACKBONES, VQTokenizerOutput
from .modeling_vqgan_lc import VQGANLCModel
from .quantizers import (
    FrozenCodebookQuantizer,
    QuantizerOutput,
    SimVQQuantizer,
    VectorQuantizer,
    VQBridgeQuantizer,
    nearest_codes,
)
from .vqbridge import QBRIDGE_MODELS, DiTVQBridge, VQBridge, bridge_grid

__all__ = [
    "BACKBONES",
    "Decoder",
    "DiTVQBridge",
    "Encoder",
    "FVQModel",
    "FrozenCodebookQuantizer",
    "LLAMAGEN_PRESETS",
    "LlamaGenConfig",
    "LlamaGenForConditionalGeneration",
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
]


def _register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModel`` resolve ``model_type="llamagen"`` once the package is imported."""
    from transformers import AutoConfig, AutoModel

    try:
        AutoConfig.register("llamagen", LlamaGenConfig)
        AutoModel.register(LlamaGenConfig, LlamaGenForConditionalGeneration)
    except ValueError:  # already registered (module reloaded)
        pass


_register_auto_classes()
