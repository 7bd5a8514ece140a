from .autoencoder import Decoder, Encoder
from .configuration_llamagen import LLAMAGEN_PRESETS, LlamaGenConfig
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
from .vqbridge import VQBridge, bridge_grid

__all__ = [
    "BACKBONES",
    "Decoder",
    "Encoder",
    "FVQModel",
    "FrozenCodebookQuantizer",
    "LLAMAGEN_PRESETS",
    "LlamaGenConfig",
    "LlamaGenForConditionalGeneration",
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


def _register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModel`` resolve ``model_type="llamagen"`` once the package is imported."""
    from transformers import AutoConfig, AutoModel

    try:
        AutoConfig.register("llamagen", LlamaGenConfig)
        AutoModel.register(LlamaGenConfig, LlamaGenForConditionalGeneration)
    except ValueError:  # already registered (module reloaded)
        pass


_register_auto_classes()
