from .autoencoder import Decoder, Encoder
from .modeling_fvq import FVQModel
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
