"""Conditional 3D U-Net denoiser with FiLM timestep conditioning and shifted-window attention.

Layout (ADM-like): input conv on ``concat(x_t, condition)``; per level ``num_res_blocks``
residual blocks (each optionally followed by a :class:`SwinStage3D`), a strided-conv downsample
between levels; a middle block ResBlock - [Swin] - ResBlock; a mirrored decoder with
``num_res_blocks + 1`` blocks per level fed by skip concatenation and nearest upsampling to the
skip's size; GroupNorm-SiLU-conv output (zero-initialised).

The 3D condition enters twice: concatenated to ``x_t`` at the input, and at the start of every
other scale (encoder levels >= 1 and every decoder level) average-pooled to that level's size,
projected by a 1x1x1 convolution and *added* to the features. Volume sides need not be powers
of two: level ``l`` has side ``ceil(n / 2**l)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from torch import nn

from ..errors import InputError
from .blocks import Downsample, ResBlock, Upsample, conv, group_norm, maybe_checkpoint, zero_module
from .config import NetworkConfig
from .swin import SwinStage3D

__all__ = ["UNet3D", "ResAttnBlock"]


class ResAttnBlock(nn.Module):
    """A FiLM :class:`ResBlock` optionally followed by a :class:`SwinStage3D`; each part is
    activation-checkpointed separately when ``use_checkpointing`` is set and grad is enabled."""

    def __init__(self, cin: int, cout: int, emb_channels: int, config: NetworkConfig, attention: bool) -> None:
        super().__init__()
        self.use_checkpointing = config.use_checkpointing
        self.res = ResBlock(3, cin, cout, emb_channels, config.norm_num_groups, config.dropout)
        self.attn = (
            SwinStage3D(cout, config.num_heads, config.window_size, config.swin_depth, config.swin_mlp_ratio,
                        config.dropout)
            if attention else None
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``x`` (B, cin, D, H, W), ``emb`` (B, E) -> (B, cout, D, H, W)."""
        x = maybe_checkpoint(self.use_checkpointing, self.res, x, emb)
        if self.attn is not None:
            x = maybe_checkpoint(self.use_checkpointing, self.attn, x)
        return x


class UNet3D(nn.Module):
    """``forward(x_t (B, in, D, H, W), t (B,), condition (B, F, D, H, W)) -> (B, out, D, H, W)``.

    ``t`` are diffusion timesteps (integer indices or floats, any scale the diffusion uses),
    embedded sinusoidally (width ``base_channels``) then by a 2-layer MLP to ``4 * base_channels``.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        chans = config.level_channels
        levels = len(chans)
        cond_ch = config.condition_channels
        self.in_channels, self.condition_channels = config.in_channels, cond_ch
        base = config.base_channels
        emb = 4 * base
        self.time_embed = nn.Sequential(nn.Linear(base, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.conv_in = conv(3, config.in_channels + cond_ch, chans[0])

        ch = chans[0]
        skip_channels = [ch]
        self.enc_cond = nn.ModuleList()
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for level in range(levels):
            # level 0 sees the condition through the input concatenation
            self.enc_cond.append(nn.Conv3d(cond_ch, ch, 1) if level > 0 else nn.Identity())
            blocks = nn.ModuleList()
            for _ in range(config.num_res_blocks):
                blocks.append(ResAttnBlock(ch, chans[level], emb, config, config.attention_levels[level]))
                ch = chans[level]
                skip_channels.append(ch)
            self.down.append(blocks)
            if level < levels - 1:
                self.downsample.append(Downsample(3, ch, ch))
                skip_channels.append(ch)

        self.mid = nn.ModuleList([
            ResAttnBlock(ch, ch, emb, config, config.attention_levels[-1]),
            ResAttnBlock(ch, ch, emb, config, False),
        ])

        self.dec_cond = nn.ModuleList()
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(levels)):
            self.dec_cond.append(nn.Conv3d(cond_ch, ch, 1))
            blocks = nn.ModuleList()
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResAttnBlock(ch + skip_channels.pop(), chans[level], emb, config,
                                           config.attention_levels[level]))
                ch = chans[level]
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(Upsample(3, ch, ch))

        self.norm_out = group_norm(ch, config.norm_num_groups)
        self.conv_out = zero_module(conv(3, ch, config.out_channels))

    def set_checkpointing(self, enabled: bool) -> None:
        """Switch activation checkpointing of every block on or off."""
        for module in self.modules():
            if isinstance(module, ResAttnBlock):
                module.use_checkpointing = bool(enabled)

    def timestep_embedding(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        """(B,) or scalar timesteps -> (B, 4 * base_channels)."""
        t = torch.as_tensor(t, device=self.conv_in.weight.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise InputError(None, f"timesteps must have shape ({batch},), got {tuple(t.shape)}")
        sinusoid = get_timestep_embedding(t, self.config.base_channels)
        return self.time_embed(sinusoid.to(self.conv_in.weight.dtype))

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise InputError(None, f"x_t must be (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        if condition.shape != (x.shape[0], self.condition_channels, *x.shape[2:]):
            raise InputError(None, f"condition must be (B, {self.condition_channels}, D, H, W) matching x_t "
                                   f"{tuple(x.shape)}, got {tuple(condition.shape)}")
        emb = self.timestep_embedding(t, x.shape[0])
        condition = condition.to(x.dtype)
        h = self.conv_in(torch.cat([x, condition], dim=1))
        skips = [h]
        pyramid = [condition]
        for level, blocks in enumerate(self.down):
            if level > 0:
                pyramid.append(F.adaptive_avg_pool3d(condition, h.shape[2:]))
                h = h + self.enc_cond[level](pyramid[level])
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                skips.append(h)
        for block in self.mid:
            h = block(h, emb)
        for i, blocks in enumerate(self.up):
            level = len(self.up) - 1 - i
            h = h + self.dec_cond[i](pyramid[level])
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if level > 0:
                h = self.upsample[i](h, skips[-1].shape[2:])
        return self.conv_out(F.silu(self.norm_out(h)))
