"""Implicit neural decoder: tri-plane features at arbitrary 3D points -> condition features.

Point coordinates are normalised volume coordinates ``p = (x, y, z)`` in ``[-1, 1]^3`` (the
``grid_sample`` order: x along W / patient left, y along H / posterior, z along D / superior),
with -1 and +1 at the *outer faces* of the volume box (``align_corners=False``). The centre of
voxel ``i`` of an ``N``-voxel axis is therefore at ``(2 i + 1) / N - 1`` whatever ``N`` is, so the
same planes decode consistently at any output resolution, and at the planes' own resolution the
voxel centres hit plane texel centres exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import maybe_checkpoint
from .triplane import Triplanes

__all__ = ["FourierEncoding", "ImplicitDecoder", "grid_points"]


def grid_points(size: tuple[int, int, int], device: torch.device | None = None) -> torch.Tensor:
    """Voxel centres of a ``(D, H, W)`` grid as (D*H*W, 3) normalised (x, y, z), raster order k, j, i."""
    axes = [(2.0 * torch.arange(n, dtype=torch.float32, device=device) + 1.0) / n - 1.0 for n in size]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x, y, z], dim=-1).reshape(-1, 3)


class FourierEncoding(nn.Module):
    """``p -> [p, sin(2^l pi p), cos(2^l pi p)]`` for ``l < L``: (..., 3) -> (..., 3 + 6 L)."""

    def __init__(self, num_frequencies: int) -> None:
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(num_frequencies, dtype=torch.float32),
                             persistent=False)
        self.out_features = 3 + 6 * num_frequencies

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        if self.freqs.numel() == 0:
            return p
        angles = (p.unsqueeze(-1) * self.freqs.to(p.dtype)).flatten(-2)
        return torch.cat([p, torch.sin(angles), torch.cos(angles)], dim=-1)


class ImplicitDecoder(nn.Module):
    """MLP on concatenated tri-plane samples plus a Fourier encoding of the point.

    At point ``(x, y, z)`` the coronal plane is sampled at ``(z, x)``, the sagittal at ``(z, y)``
    and the axial at ``(y, x)`` (bilinear, border padding); the three C-vectors are
    *concatenated* (unlike EG3D's sum, the MLP can tell the planes apart, at the cost of a wider
    first layer), the encoding appended, and an MLP of ``depth`` SiLU hidden layers of ``width``
    maps them to ``out_channels`` features.

    Args:
        plane_channels: C of each plane.
        out_channels: F, condition channels.
        num_frequencies: L Fourier octaves.
        width, depth: MLP hidden width and number of hidden layers.
        chunk_size: points per chunk in :meth:`decode_grid`.
        use_checkpointing: recompute each chunk in backward instead of storing its activations.
    """

    def __init__(
        self,
        plane_channels: int,
        out_channels: int,
        num_frequencies: int = 6,
        width: int = 128,
        depth: int = 3,
        chunk_size: int = 262144,
        use_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.chunk_size = chunk_size
        self.use_checkpointing = use_checkpointing
        self.encoding = FourierEncoding(num_frequencies)
        layers: list[nn.Module] = []
        cin = 3 * plane_channels + self.encoding.out_features
        for _ in range(depth):
            layers += [nn.Linear(cin, width), nn.SiLU()]
            cin = width
        layers.append(nn.Linear(cin, out_channels))
        self.mlp = nn.Sequential(*layers)

    @staticmethod
    def sample_planes(planes: Triplanes, points: torch.Tensor) -> torch.Tensor:
        """Plane features at ``points`` (B, N, 3) -> (B, N, 3 C), order coronal, sagittal, axial."""
        x, y, z = points.unbind(-1)

        def sample(plane: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            # plane (B, C, rows, cols): u indexes cols, v indexes rows
            grid = torch.stack([u, v], dim=-1).unsqueeze(1).to(plane.dtype)  # (B, 1, N, 2)
            out = F.grid_sample(plane, grid, mode="bilinear", padding_mode="border", align_corners=False)
            return out[:, :, 0].transpose(1, 2)  # (B, N, C)

        return torch.cat(
            [sample(planes.coronal, x, z), sample(planes.sagittal, y, z), sample(planes.axial, x, y)], dim=-1
        )

    def forward(self, planes: Triplanes, points: torch.Tensor) -> torch.Tensor:
        """``points`` (B, N, 3) or (N, 3) normalised (x, y, z) -> features (B, N, F)."""
        b = planes.coronal.shape[0]
        if points.ndim == 2:
            points = points.unsqueeze(0).expand(b, -1, -1)
        feats = self.sample_planes(planes, points)
        return self.mlp(torch.cat([feats, self.encoding(points.to(feats.dtype))], dim=-1))

    def decode_grid(
        self, planes: Triplanes, size: int | tuple[int, int, int], chunk_size: int | None = None
    ) -> torch.Tensor:
        """Decode at the voxel centres of a ``size`` grid (int N for N^3), ``chunk_size`` points at a
        time -> (B, F, D, H, W). Works at any resolution, independent of the planes' size."""
        size = (size,) * 3 if isinstance(size, int) else tuple(int(s) for s in size)
        chunk = int(chunk_size or self.chunk_size)
        points = grid_points(size, device=planes.coronal.device)
        b = planes.coronal.shape[0]
        outs = []
        for start in range(0, points.shape[0], chunk):
            pts = points[start:start + chunk].unsqueeze(0).expand(b, -1, -1)
            outs.append(maybe_checkpoint(self.use_checkpointing, self._decode_chunk, *planes, pts))
        out = torch.cat(outs, dim=1)  # (B, D*H*W, F)
        return out.transpose(1, 2).reshape(b, self.out_channels, *size)

    def _decode_chunk(self, coronal: torch.Tensor, sagittal: torch.Tensor, axial: torch.Tensor,
                      points: torch.Tensor) -> torch.Tensor:
        return self.forward(Triplanes(coronal, sagittal, axial), points)
