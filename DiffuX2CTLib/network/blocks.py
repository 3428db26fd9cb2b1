"""Convolutional building blocks shared by the 2D radiograph encoder and the 3D U-Net.

Tensors are channels-first: ``(B, C, H, W)`` in 2D, ``(B, C, D, H, W)`` in 3D.

MONAI's ``DiffusionUNetResnetBlock`` only *adds* the projected timestep embedding to the
features; DiffuX2CT's denoiser modulates the normalised features with a per-channel scale and
shift (FiLM, as in ADM's ``use_scale_shift_norm``), so :class:`ResBlock` is written here.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from monai.networks.nets.diffusion_model_unet import zero_module
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["group_norm", "conv", "ResBlock", "Downsample", "Upsample", "maybe_checkpoint", "zero_module"]


def group_norm(channels: int, max_groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count ``<= max_groups`` that divides ``channels``."""
    groups = max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, eps=1e-6)


def conv(spatial_dims: int, cin: int, cout: int, kernel_size: int = 3, stride: int = 1) -> nn.Module:
    """``Conv{2,3}d`` with 'same' padding for odd kernels."""
    return Conv[Conv.CONV, spatial_dims](cin, cout, kernel_size, stride=stride, padding=kernel_size // 2)


def maybe_checkpoint(enabled: bool, fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
    """``fn(*args)``, recomputed in backward (non-reentrant checkpoint) when enabled and grad is on."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


class ResBlock(nn.Module):
    """Pre-activation residual block, optionally FiLM-conditioned on an embedding.

    ``h = conv1(SiLU(GN(x)))``; ``h = GN(h) * (1 + scale) + shift`` with ``(scale, shift)`` a
    linear map of ``SiLU(emb)`` (or plain ``GN(h)`` without an embedding);
    ``out = skip(x) + conv2(dropout(SiLU(h)))``. ``conv2`` starts at zero (ADM), so a new block
    is the identity on its skip path.

    Args:
        spatial_dims: 2 or 3.
        cin, cout: input / output channels.
        emb_channels: width of the conditioning embedding, or ``None`` for an unconditioned block.
        norm_groups: maximum GroupNorm groups.
        dropout: dropout probability before ``conv2``.
    """

    def __init__(
        self,
        spatial_dims: int,
        cin: int,
        cout: int,
        emb_channels: int | None = None,
        norm_groups: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.norm1 = group_norm(cin, norm_groups)
        self.conv1 = conv(spatial_dims, cin, cout)
        self.emb_proj = nn.Linear(emb_channels, 2 * cout) if emb_channels else None
        self.norm2 = group_norm(cout, norm_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(conv(spatial_dims, cout, cout))
        self.skip = nn.Identity() if cin == cout else conv(spatial_dims, cin, cout, kernel_size=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: (B, cin, *spatial); ``emb``: (B, emb_channels) -> (B, cout, *spatial)."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.emb_proj is not None:
            if emb is None:
                raise ValueError("this ResBlock is conditioned and needs an embedding")
            scale, shift = self.emb_proj(F.silu(emb)).view(emb.shape[0], -1, *([1] * self.spatial_dims)).chunk(2, 1)
            h = h * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Strided 3x3 convolution: side ``n -> ceil(n / 2)`` (odd sides allowed)."""

    def __init__(self, spatial_dims: int, cin: int, cout: int) -> None:
        super().__init__()
        self.op = conv(spatial_dims, cin, cout, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour resize to a given spatial size, then a 3x3 convolution."""

    def __init__(self, spatial_dims: int, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = conv(spatial_dims, cin, cout)

    def forward(self, x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        """``x``: (B, cin, *s) -> (B, cout, *size)."""
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))
