"""What every tokenizer of this package shares: pixels -> Encoder -> quant_conv -> quantizer -> post_quant_conv
-> Decoder -> pixels, the diffusers ``VQModel`` interface on top of it, and input checks.

Subclasses (``FVQModel``, ``VQGANLCModel``) are diffusers ``ModelMixin`` + ``ConfigMixin`` models whose
``@register_to_config`` ``__init__`` is the config; they call ``_build`` with a quantizer.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.autoencoders.vq_model import VQEncoderOutput
from diffusers.utils import BaseOutput
from torch import nn

from .autoencoder import Decoder, Encoder
from .hub_mixin import HubPushMixin
from .loading import checked_from_pretrained
from .quantizers import VectorQuantizer

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
PIXEL_RANGE_WARN = 2.0  # |pixel| above this warns: model inputs live in [-1, 1] (reconstructions overshoot a little)

# Backbones (LlamaGen VQ-16 / VQ-8, and small ones for CPU work). Channels per level as diffusers counts them.
BACKBONES = {
    "VQ-16": dict(block_out_channels=(128, 128, 256, 256, 512), layers_per_block=2, latent_channels=256, norm_num_groups=32),
    "VQ-8": dict(block_out_channels=(128, 256, 256, 512), layers_per_block=2, latent_channels=256, norm_num_groups=32),
    "cpu-small": dict(block_out_channels=(32, 64, 64), layers_per_block=1, latent_channels=64, norm_num_groups=16),
    "tiny": dict(block_out_channels=(16, 32), layers_per_block=1, latent_channels=16, norm_num_groups=8),
}


@dataclass
class VQTokenizerOutput(BaseOutput):
    """
    Args:
        sample (`torch.Tensor` of shape `(batch_size, out_channels, height, width)`): Reconstruction in [-1, 1].
        indices (`torch.LongTensor` of shape `(batch_size, height // f, width // f)`): Token ids.
        loss (`torch.Tensor`): The quantizer's weighted loss (codebook + beta * commitment + entropy).
        codebook_loss, commitment_loss, entropy_loss (`torch.Tensor`): Its unweighted terms.
        perplexity, batch_usage (`torch.Tensor`): Code statistics of this batch (no gradient).
        latents (`torch.Tensor` of shape `(batch_size, codebook_dim, height // f, width // f)`): The encoder's
            latents, the quantizer's input (what dead-code restarts move codes onto).
    """

    # defaults let accelerate rebuild the output from a mapping (mixed-precision output casting)
    sample: torch.Tensor
    indices: torch.LongTensor | None = None
    loss: torch.Tensor | None = None
    codebook_loss: torch.Tensor | None = None
    commitment_loss: torch.Tensor | None = None
    entropy_loss: torch.Tensor | None = None
    perplexity: torch.Tensor | None = None
    batch_usage: torch.Tensor | None = None
    latents: torch.Tensor | None = None


class VQTokenizerMixin(HubPushMixin):
    """Encoder / quantizer / decoder wiring and the public API. Mixed into ``ModelMixin`` subclasses."""

    encoder: Encoder
    decoder: Decoder
    quantize: VectorQuantizer

    def _build(
        self,
        quantizer: VectorQuantizer,
        in_channels: int,
        out_channels: int,
        block_out_channels: tuple[int, ...],
        layers_per_block: int,
        latent_channels: int,
        norm_num_groups: int,
        dropout: float,
    ) -> None:
        bad = [c for c in (*block_out_channels, latent_channels) if c % norm_num_groups]
        if bad:
            raise ValueError(
                f"Every entry of block_out_channels={tuple(block_out_channels)} must be divisible by "
                f"norm_num_groups={norm_num_groups} (GroupNorm); {bad} are not. Change the channels or norm_num_groups."
            )
        self.encoder = Encoder(in_channels, tuple(block_out_channels), layers_per_block, latent_channels, dropout, norm_num_groups)
        self.quant_conv = nn.Conv2d(latent_channels, quantizer.codebook_dim, 1)
        self.quantize = quantizer
        self.post_quant_conv = nn.Conv2d(quantizer.codebook_dim, latent_channels, 1)
        self.decoder = Decoder(out_channels, tuple(block_out_channels), layers_per_block, latent_channels, dropout, norm_num_groups)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``, but a folder of another class, or one missing a weight, is a ``ValueError``
        saying what the folder holds (diffusers only warns). ``fullvq_hf.load_tokenizer`` picks the class itself."""
        return checked_from_pretrained(cls, super().from_pretrained, pretrained_model_name_or_path, **kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def downsample_factor(self) -> int:
        """Pixels per token along each side: 2 ** (number of levels - 1)."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def codebook_size(self) -> int:
        return self.quantize.codebook_size

    def latent_shape(self, height: int, width: int) -> tuple[int, int]:
        self._check_spatial(height, width)
        return height // self.downsample_factor, width // self.downsample_factor

    # ------------------------------------------------------------------ input checks
    # Shape and dtype checks (no host sync) run on every call; value checks (finite pixels, id ranges) read the data
    # back to the host, so they run only at the user entry points (tokenize, detokenize, decode of ids), never
    # inside the training forward.
    def _check_spatial(self, height: int, width: int) -> None:
        f = self.downsample_factor
        if height % f or width % f:
            fix_h, fix_w = -(-height // f) * f, -(-width // f) * f
            raise ValueError(
                f"Image size {height}x{width} is not divisible by the downsampling factor {f} of this tokenizer. "
                f"Resize, crop or pad to a multiple of {f} (e.g. pad to {fix_h}x{fix_w})."
            )

    def _check_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Shape / dtype checks; returns ``x`` in the model's float dtype (float16 / bfloat16 / float64 pixels into
        a float32 model are cast, as a no-op when they already match; autocast regions are left to autocast)."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"Expected a torch.Tensor of pixels (B, C, H, W) in [-1, 1], got {type(x).__name__}.")
        if x.ndim != 4:
            hint = " For a single image use x[None]." if x.ndim == 3 else ""
            raise ValueError(f"Expected pixels of shape (B, C, H, W), got {tuple(x.shape)}.{hint}")
        if not x.is_floating_point():
            raise ValueError(
                f"Expected floating-point pixels in [-1, 1], got dtype {x.dtype}. "
                "Convert uint8 images with x.float() / 127.5 - 1."
            )
        c = self.config.in_channels
        if x.shape[1] != c:
            hint = ""
            if x.shape[-1] == c:
                hint = " The input looks channels-last (B, H, W, C): use x.permute(0, 3, 1, 2)."
            elif x.shape[1] == 1 and c == 3:
                hint = " For grayscale images repeat the channel: x.expand(-1, 3, -1, -1)."
            elif x.shape[1] == 3 and c == 1:
                hint = " Convert RGB to grayscale first, e.g. x.mean(1, keepdim=True)."
            raise ValueError(f"Expected {c} input channels (in_channels={c}), got {x.shape[1]} in shape {tuple(x.shape)}.{hint}")
        self._check_spatial(x.shape[2], x.shape[3])
        if x.shape[0] == 0:
            raise ValueError(f"Got an empty batch of pixels {tuple(x.shape)}; pass at least one image.")
        dtype = self.encoder.conv_in.weight.dtype
        if x.dtype != dtype and dtype in _FLOAT_DTYPES and not torch.is_autocast_enabled(x.device.type):
            x = x.to(dtype)
        return x

    def _check_pixel_values(self, x: torch.Tensor) -> None:
        """Value checks of user pixels (one host sync): NaN / inf is an error, values far outside [-1, 1] warn."""
        peak = float(x.detach().abs().amax())  # NaN propagates, inf stays inf
        if not math.isfinite(peak):
            raise ValueError("The pixels contain NaN or inf values; clean the input (e.g. torch.nan_to_num) first.")
        if peak > PIXEL_RANGE_WARN:
            warnings.warn(
                f"Pixels reach {peak:.4g}, far outside the expected [-1, 1]; images in [0, 255] passed as float must "
                "be scaled first: x / 127.5 - 1.",
                UserWarning,
                stacklevel=3,
            )

    def _check_indices(self, indices: torch.Tensor) -> torch.LongTensor:
        """Shape, dtype and range checks of user token ids (one host sync); returns them as ``torch.long`` (any
        integer dtype is accepted: uint8 / int8 / int16 / int32 ids of small codebooks)."""
        if (
            not isinstance(indices, torch.Tensor)
            or indices.is_floating_point()
            or indices.is_complex()
            or indices.dtype == torch.bool
        ):
            raise ValueError("Token ids must be an integer tensor (torch.long) of shape (B, h, w).")
        if indices.ndim != 3:
            raise ValueError(
                f"Token ids must have shape (B, h, w), got {tuple(indices.shape)}. "
                "Reshape flat sequences with ids.view(B, h, w)."
            )
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"Token ids must lie in [0, {self.codebook_size - 1}] (codebook_size={self.codebook_size}); "
                f"got values in [{int(indices.min())}, {int(indices.max())}]. Were they made by another tokenizer?"
            )
        return indices.long()

    # ------------------------------------------------------------------ diffusers VQModel interface
    def encode(self, x: torch.Tensor, return_dict: bool = True) -> VQEncoderOutput | tuple:
        """Pixels (B, C, H, W) in [-1, 1] -> pre-quantisation latents (B, codebook_dim, H/f, W/f)."""
        x = self._check_pixels(x)
        h = self.quant_conv(self.encoder(x))
        return VQEncoderOutput(latents=h) if return_dict else (h,)

    def decode(
        self,
        h: torch.Tensor,
        force_not_quantize: bool = False,
        return_dict: bool = True,
        shape: tuple[int, ...] | None = None,
    ) -> DecoderOutput | tuple:
        """Latents -> pixels, as diffusers' ``VQModel.decode``.

        ``h`` is either float latents (B, codebook_dim, h, w), quantised here unless ``force_not_quantize``, or
        integer token ids (B, h, w) (or flat (B, h*w) with ``shape=(B, h, w, C)`` as diffusers passes), looked up.
        """
        if not h.is_floating_point():
            ids = h if shape is None else h.reshape(shape[0], shape[1], shape[2])
            ids = self._check_indices(ids)
            quant, loss = self.quantize.lookup(ids), h.new_zeros(ids.shape[0], dtype=torch.float32)
        else:
            if h.ndim != 4 or h.shape[1] != self.quantize.codebook_dim:
                raise ValueError(
                    f"Expected latents of shape (B, {self.quantize.codebook_dim}, h, w) (codebook_dim channels), "
                    f"got {tuple(h.shape)}. Pass token ids as an integer tensor (B, h, w) instead."
                )
            if force_not_quantize:
                quant, loss = h, h.new_zeros(h.shape[0])
            else:
                out = self.quantize(h)
                quant, loss = out.quantized, out.loss
        dec = self.decoder(self.post_quant_conv(quant))
        return DecoderOutput(sample=dec, commit_loss=loss) if return_dict else (dec, loss)

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> VQTokenizerOutput | tuple:
        """Pixels -> reconstruction, token ids and quantizer losses (training entry point)."""
        h = self.encode(sample).latents
        q = self.quantize(h)
        dec = self.decoder(self.post_quant_conv(q.quantized))
        out = VQTokenizerOutput(
            sample=dec,
            indices=q.indices,
            loss=q.loss,
            codebook_loss=q.codebook_loss,
            commitment_loss=q.commitment_loss,
            entropy_loss=q.entropy_loss,
            perplexity=q.perplexity,
            batch_usage=q.batch_usage,
            latents=h,
        )
        return out if return_dict else out.to_tuple()

    # ------------------------------------------------------------------ tokens
    @torch.no_grad()
    def tokenize(self, pixels: torch.Tensor) -> torch.LongTensor:
        """Pixels (B, C, H, W) in [-1, 1] -> token ids (B, H/f, W/f). NaN / inf pixels are an error; pixels far
        outside [-1, 1] (e.g. [0, 255] passed as float) warn."""
        pixels = self._check_pixels(pixels)
        self._check_pixel_values(pixels)
        return self.quantize.search(self.encode(pixels).latents)

    @torch.no_grad()
    def detokenize(self, indices: torch.Tensor) -> torch.Tensor:
        """Token ids (B, h, w), any integer dtype -> pixels (B, out_channels, h*f, w*f) in roughly [-1, 1]."""
        indices = self._check_indices(indices)
        return self.decoder(self.post_quant_conv(self.quantize.lookup(indices)))

    @torch.no_grad()
    def get_codebook(self) -> torch.Tensor:
        """The codebook the search runs against (K, codebook_dim), after any projection."""
        return self.quantize.get_codebook().detach().clone()
