"""Convolutional encoder and decoder of LlamaGen's VQ-16 / VQ-8 tokenizers (and of the taming VQGAN that
VQGAN-LC and FVQ build on).

Module names follow LlamaGen's ``tokenizer/tokenizer_image/vq_model.py`` (``conv_in``, ``conv_blocks.{i}.res.{j}``,
``conv_blocks.{i}.attn.{j}``, ``conv_blocks.{i}.downsample.conv``, ``mid.{0,1,2}``, ``norm_out``, ``conv_out``), so
official LlamaGen / FVQ state dicts load one-to-one. The taming VQGAN (VQGAN-LC) is the same network with other
names (``down.{i}.block.{j}``, ``mid.block_1``, ``up.{n-1-i}``...); ``fullvq_hf.convert`` renames its keys.

Channels are given per level as diffusers does (``block_out_channels``; LlamaGen's ``ch * ch_mult``). Layout for
VQ-16 (``block_out_channels = (128, 128, 256, 256, 512)``, 256 px input):
    encoder: conv_in -> 5 levels of ``layers_per_block`` ResnetBlocks (single-head attention after each block of
    the last, lowest-resolution level), pad (0, 1, 0, 1) + stride-2 conv between levels -> Res-Attn-Res ->
    GroupNorm -> swish -> conv_out (z_channels).
    decoder: conv_in -> Res-Attn-Res -> 5 levels (lowest resolution first) of ``layers_per_block + 1``
    ResnetBlocks (attention at the lowest level), nearest x2 + conv between levels -> GroupNorm -> swish -> conv_out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def Normalize(channels: int, num_groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=num_groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int | None = None, dropout: float = 0.0, num_groups: int = 32):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = Normalize(in_channels, num_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = Normalize(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections (scale C^-1/2)."""

    def __init__(self, channels: int, num_groups: int = 32):
        super().__init__()
        self.norm = Normalize(channels, num_groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        b, c, h, w = x.shape
        hn = self.norm(x)
        q, k, v = (proj(hn).reshape(b, 1, c, h * w).transpose(-1, -2) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # (B, 1, HW, C)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H/2, W/2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, 2H, 2W)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid_block(channels: int, dropout: float, num_groups: int) -> nn.ModuleList:
    return nn.ModuleList(
        [
            ResnetBlock(channels, channels, dropout, num_groups),
            AttnBlock(channels, num_groups),
            ResnetBlock(channels, channels, dropout, num_groups),
        ]
    )


class Encoder(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,
        block_out_channels: tuple[int, ...] = (128, 128, 256, 256, 512),
        layers_per_block: int = 2,
        z_channels: int = 256,
        dropout: float = 0.0,
        num_groups: int = 32,
    ):
        super().__init__()
        self.num_resolutions = len(block_out_channels)
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        self.conv_blocks = nn.ModuleList()
        block_in = block_out_channels[0]
        for i_level, block_out in enumerate(block_out_channels):
            level = nn.Module()
            level.res, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(layers_per_block):
                level.res.append(ResnetBlock(block_in, block_out, dropout, num_groups))
                block_in = block_out
                if i_level == self.num_resolutions - 1:
                    level.attn.append(AttnBlock(block_in, num_groups))
            if i_level != self.num_resolutions - 1:
                level.downsample = Downsample(block_in)
            self.conv_blocks.append(level)
        self.mid = _mid_block(block_in, dropout, num_groups)
        self.norm_out = Normalize(block_in, num_groups)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_channels, H, W) -> (B, z_channels, H/f, W/f)
        h = self.conv_in(x)
        for level in self.conv_blocks:
            for i, res in enumerate(level.res):
                h = res(h)
                if len(level.attn) > 0:
                    h = level.attn[i](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(
        self,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (128, 128, 256, 256, 512),
        layers_per_block: int = 2,
        z_channels: int = 256,
        dropout: float = 0.0,
        num_groups: int = 32,
    ):
        super().__init__()
        self.num_resolutions = len(block_out_channels)
        block_in = block_out_channels[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = _mid_block(block_in, dropout, num_groups)
        self.conv_blocks = nn.ModuleList()  # lowest resolution first
        for i_level in reversed(range(self.num_resolutions)):
            level = nn.Module()
            level.res, level.attn = nn.ModuleList(), nn.ModuleList()
            block_out = block_out_channels[i_level]
            for _ in range(layers_per_block + 1):
                level.res.append(ResnetBlock(block_in, block_out, dropout, num_groups))
                block_in = block_out
                if i_level == self.num_resolutions - 1:
                    level.attn.append(AttnBlock(block_in, num_groups))
            if i_level != 0:
                level.upsample = Upsample(block_in)
            self.conv_blocks.append(level)
        self.norm_out = Normalize(block_in, num_groups)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)

    @property
    def last_layer(self) -> torch.Tensor:
        """Weight of the output conv (for adaptive GAN weighting)."""
        return self.conv_out.weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, z_channels, h, w) -> (B, out_channels, h*f, w*f)
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for level in self.conv_blocks:
            for i, res in enumerate(level.res):
                h = res(h)
                if len(level.attn) > 0:
                    h = level.attn[i](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
