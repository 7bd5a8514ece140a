"""Converters between this package's state dicts and other layouts (diffusers' VQModel; official checkpoints).

``CONVERTERS`` maps the names used by ``fullvq convert NAME SOURCE OUTPUT [--option value ...]`` to functions
``convert(source_path, output_path=None, **options)``; each returns the converted object and, given an output
path, writes it there. A new converter joins by adding an entry.
"""

from .fvq import convert_fvq
from .llamagen_gpt import convert_llamagen_gpt
from .llamagen_vq import convert_llamagen_vq
from .vqgan_lc import convert_vqgan_lc, convert_vqgan_lc_codebook

CONVERTERS = {
    "llamagen-vq": convert_llamagen_vq,
    "llamagen-gpt": convert_llamagen_gpt,
    "fvq": convert_fvq,
    "vqgan-lc": convert_vqgan_lc,
    "vqgan-lc-codebook": convert_vqgan_lc_codebook,
}

__all__ = [
    "CONVERTERS",
    "convert_fvq",
    "convert_llamagen_gpt",
    "convert_llamagen_vq",
    "convert_vqgan_lc",
    "convert_vqgan_lc_codebook",
]
