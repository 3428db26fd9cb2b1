"""3D shifted-window self-attention on channels-first feature volumes, built from MONAI's Swin.

MONAI's ``SwinTransformerBlock`` (LayerNorm, window partition with internal padding, cyclic
shift, relative position bias, MLP) is reused unchanged; only its ``WindowAttention`` is
replaced by :class:`SDPAWindowAttention`, which computes the same function through
``torch.nn.functional.scaled_dot_product_attention`` (fused kernels on GPU, with gradients;
MONAI's own ``use_flash_attention`` path is taken only without autograd). The stage wrapper
replaces MONAI's ``BasicLayer`` (which needs ``einops`` and adds patch merging).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import SwinTransformerBlock, WindowAttention, compute_mask, get_window_size
from torch import nn

__all__ = ["SDPAWindowAttention", "SwinStage3D"]


class SDPAWindowAttention(WindowAttention):
    """MONAI ``WindowAttention`` evaluated with ``scaled_dot_product_attention``.

    ``forward(x, mask)``: ``x`` is ``(B * nW, n, C)`` windows of ``n`` tokens; ``mask`` is
    ``None`` or the shift mask ``(nW, n, n)`` (0 or -100) from ``compute_mask``. The relative
    position bias and the shift mask become one additive ``attn_mask``. The windows of one
    image are folded into the head axis, ``(B, nW * heads, n, d)``, so the mask
    ``(1, nW * heads, n, n)`` broadcasts over the batch without being copied per sample.
    Same parameters and same output as ``WindowAttention.forward``.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (b, heads, n, d)
        index = self.relative_position_index[:n, :n].reshape(-1)  # type: ignore[index]
        bias = self.relative_position_bias_table[index].reshape(n, n, heads).permute(2, 0, 1)  # (heads, n, n)
        if mask is None:
            attn_mask = bias.unsqueeze(0)
        else:
            nw = mask.shape[0]
            attn_mask = (mask.unsqueeze(1).to(bias.dtype) + bias.unsqueeze(0)).reshape(1, nw * heads, n, n)
            q, k, v = (t.reshape(b // nw, nw * heads, n, -1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=attn_mask.to(q.dtype),
            dropout_p=self.attn_drop.p if self.training else 0.0,
            scale=self.scale,
        )
        out = out.reshape(b, heads, n, -1).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class SwinStage3D(nn.Module):
    """``depth`` Swin blocks on a ``(B, C, D, H, W)`` volume; block ``i`` shifts its windows by
    half a window when ``i`` is odd (W-MSA, SW-MSA, W-MSA, ...), as in Swin.

    Windows are ``window_size^3``; a side smaller than or equal to the window collapses the
    window to that side with no shift there (MONAI's ``get_window_size``); sides that the window
    does not divide are zero-padded inside the block and cropped again. Output shape = input
    shape. The blocks are pre-norm residual (LayerNorm over channels), so the stage is a
    residual update of its input.

    Args:
        dim: channels C (divisible by ``num_heads``).
        num_heads: attention heads.
        window_size: cubic window side.
        depth: number of blocks.
        mlp_ratio: MLP hidden width / C.
        dropout: dropout after attention projection and in the MLP.
    """

    def __init__(
        self, dim: int, num_heads: int, window_size: int, depth: int = 2, mlp_ratio: float = 2.0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.window_size = (window_size,) * 3
        self.shift_size = (window_size // 2,) * 3
        blocks = []
        for i in range(depth):
            block = SwinTransformerBlock(
                dim=dim,
                num_heads=num_heads,
                window_size=self.window_size,
                shift_size=self.shift_size if i % 2 else (0, 0, 0),
                mlp_ratio=mlp_ratio,
                qkv_bias=True,
                drop=dropout,
            )
            block.attn = SDPAWindowAttention(
                dim, num_heads=num_heads, window_size=self.window_size, qkv_bias=True, proj_drop=dropout
            )
            blocks.append(block)
        self.blocks = nn.ModuleList(blocks)

    def shift_mask(self, spatial: tuple[int, int, int], device: torch.device) -> torch.Tensor | None:
        """The shift mask ``(nW, n, n)`` of the padded volume, or ``None`` when no side is shifted."""
        window, shift = get_window_size(spatial, self.window_size, self.shift_size)
        if not any(s > 0 for s in shift):
            return None
        padded = [int(math.ceil(s / w)) * w for s, w in zip(spatial, window)]
        return compute_mask(padded, window, shift, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, D, H, W) -> (B, C, D, H, W)."""
        mask = self.shift_mask(tuple(x.shape[2:]), x.device)
        h = x.permute(0, 2, 3, 4, 1).contiguous()
        for block in self.blocks:
            h = block(h, mask)
        return h.permute(0, 4, 1, 2, 3).contiguous()
