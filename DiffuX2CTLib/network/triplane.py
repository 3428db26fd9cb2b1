"""Tri-plane decoupling generator: two radiographs -> coronal, sagittal and axial feature planes.

Planes are indexed like the volume array ``(D, H, W) = (z, y, x)`` (S, P, L; see
``DiffuX2CTLib.geometry.biplanar``):

* coronal ``(B, C, D, W)`` -- plane (z, x), read from the AP view;
* sagittal ``(B, C, D, H)`` -- plane (z, y), read from the lateral view;
* axial ``(B, C, H, W)`` -- plane (y, x), seen by neither view, fused from the other two.

Pipeline: a shared 2D encoder turns each radiograph into a feature map at detector resolution;
:class:`ProjectiveAligner` resamples the AP map onto the mid-coronal plane and the lateral map
onto the mid-sagittal plane through the cone-beam projection (magnification included);
:class:`AxialFusion` builds the axial plane by attention along z; each plane is refined by a
residual 2D block.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..geometry.biplanar import BiplanarGeometry
from .blocks import Downsample, ResBlock, Upsample, conv, group_norm
from .config import NetworkConfig

__all__ = [
    "Triplanes", "XrayEncoder2D", "ProjectiveAligner", "AxialFusion", "TriplaneGenerator",
    "check_geometry", "detector_grid",
]


class Triplanes(NamedTuple):
    """The three feature planes: coronal (B,C,D,W), sagittal (B,C,D,H), axial (B,C,H,W)."""

    coronal: torch.Tensor
    sagittal: torch.Tensor
    axial: torch.Tensor


def check_geometry(config: NetworkConfig, geometry: BiplanarGeometry) -> None:
    """Raise :class:`InputError` unless ``geometry`` samples the volume and detectors like ``config``."""
    if tuple(geometry.volume_shape) != (config.volume_size,) * 3:
        raise InputError(None, f"network volume_size {config.volume_size} does not match geometry "
                               f"{geometry.name!r} volume_shape {tuple(geometry.volume_shape)}")
    if tuple(geometry.detector_shape) != (config.xray_size,) * 2:
        raise InputError(None, f"network xray_size {config.xray_size} does not match geometry "
                               f"{geometry.name!r} detector_shape {tuple(geometry.detector_shape)}")
    missing = {"ap", "lateral"} - set(geometry.views)
    if missing:
        raise InputError(None, f"geometry {geometry.name!r} lacks the view(s) {sorted(missing)}")


def detector_grid(geometry: BiplanarGeometry, view: str, points_mm: np.ndarray) -> torch.Tensor:
    """``grid_sample`` grid (align_corners=False) of the detector positions where points project.

    ``points_mm``: (..., 3) geometry-frame (x, y, z) mm. Returns float32 (..., 2) holding
    (column, row) normalised so that -1 / +1 are the outer edges of the first / last pixel.
    """
    rc = geometry.project_points(view, points_mm)
    rows, cols = geometry.detector_shape
    gx = (2.0 * rc[..., 1] + 1.0) / cols - 1.0
    gy = (2.0 * rc[..., 0] + 1.0) / rows - 1.0
    return torch.from_numpy(np.stack([gx, gy], axis=-1).astype(np.float32))


class ProjectiveAligner(nn.Module):
    """Resample detector feature maps onto the two mid planes of the volume.

    ``coronal[b, c, k, i] = ap[b, c]`` bilinearly sampled where voxel-centre point
    ``(x_i, 0, z_k)`` projects on the AP detector; ``sagittal[b, c, k, j] = lateral[b, c]`` where
    ``(0, y_j, z_k)`` projects on the lateral detector. The grids are computed once from the
    geometry (non-persistent buffers); points projecting off the detector read zeros.
    """

    def __init__(self, geometry: BiplanarGeometry) -> None:
        super().__init__()
        z, y, x = geometry.voxel_centers_mm()
        zz, xx = np.meshgrid(z, x, indexing="ij")  # (D, W)
        coronal_pts = np.stack([xx, np.zeros_like(xx), zz], axis=-1)
        zz, yy = np.meshgrid(z, y, indexing="ij")  # (D, H)
        sagittal_pts = np.stack([np.zeros_like(yy), yy, zz], axis=-1)
        self.register_buffer("coronal_grid", detector_grid(geometry, "ap", coronal_pts)[None], persistent=False)
        self.register_buffer("sagittal_grid", detector_grid(geometry, "lateral", sagittal_pts)[None], persistent=False)

    def forward(self, ap: torch.Tensor, lateral: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ap``, ``lateral``: (B, C, rows, cols) -> coronal (B, C, D, W), sagittal (B, C, D, H)."""
        b = ap.shape[0]

        def sample(img: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
            grid = grid.to(img.dtype).expand(b, -1, -1, -1)
            return F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

        return sample(ap, self.coronal_grid), sample(lateral, self.sagittal_grid)


class AxialFusion(nn.Module):
    """Axial plane (y, x) by multi-head attention along z over the coronal and sagittal planes.

    For every axial position (y, x) and head, the column of volume points along z is weighted by
    ``softmax_z(a_c[z, x] + a_s[z, y])`` and averages ``v_c[z, x] + v_s[z, y]``, where ``a``/``v``
    are 1x1 projections of the coronal (``_c``) and sagittal (``_s``) planes. Because the logits
    are a sum, ``exp`` factorises and the weighted sum is two batched matrix products over z:
    ``O(C D H W)`` time but only ``O(C H W)`` memory -- the ``(C, D, H, W)`` lifted volume is
    never built. A 1x1 output projection follows.

    Args:
        channels: C (divisible by ``heads``).
        heads: independent attention heads, each over ``C / heads`` channels.
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.coronal_proj = nn.Conv2d(channels, channels + heads, 1)
        self.sagittal_proj = nn.Conv2d(channels, channels + heads, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, coronal: torch.Tensor, sagittal: torch.Tensor) -> torch.Tensor:
        """``coronal`` (B, C, D, W), ``sagittal`` (B, C, D, H) -> axial (B, C, H, W)."""
        b, c, d, w = coronal.shape
        h = sagittal.shape[-1]
        pc = self.coronal_proj(coronal)
        ps = self.sagittal_proj(sagittal)
        with torch.autocast(device_type=coronal.device.type, enabled=False):  # exp/sums in float32
            axial = self._attend(pc.float(), ps.float(), b, c, d, h, w)
        return self.out(axial.to(coronal.dtype))

    def _attend(self, pc: torch.Tensor, ps: torch.Tensor, b: int, c: int, d: int, h: int, w: int) -> torch.Tensor:
        n = self.heads
        a_c, v_c = pc[:, :n], pc[:, n:].reshape(b, n, c // n, d, w)
        a_s, v_s = ps[:, :n], ps[:, n:].reshape(b, n, c // n, d, h)
        # subtracting the per-column max over z is a factor common to numerator and denominator
        e_c = torch.exp(a_c - a_c.amax(dim=2, keepdim=True))  # (b, n, d, w)
        e_s = torch.exp(a_s - a_s.amax(dim=2, keepdim=True))  # (b, n, d, h)
        denom = torch.einsum("bnzy,bnzx->bnyx", e_s, e_c)
        num = torch.einsum("bnzy,bnczx->bncyx", e_s, e_c.unsqueeze(2) * v_c)
        num = num + torch.einsum("bnczy,bnzx->bncyx", e_s.unsqueeze(2) * v_s, e_c)
        return (num / denom.clamp_min(1e-30).unsqueeze(2)).reshape(b, c, h, w)


class XrayEncoder2D(nn.Module):
    """Small 2D U-Net over each radiograph, weights shared by both views.

    Both views are radiographs of the same body at the same scale, so one encoder sees twice the
    data; a learned per-view vector added after the stem lets it specialise per view. Levels
    ``channels[0], channels[1], ...`` with a strided downsampling between levels, nearest
    upsampling with skip concatenation back to full resolution.

    ``forward``: (B, V, rows, cols) images in [-1, 1] -> (B, V, out_channels, rows, cols).
    """

    def __init__(self, channels: tuple[int, ...], out_channels: int, num_views: int = 2, norm_groups: int = 32) -> None:
        super().__init__()
        self.num_views = num_views
        self.stem = conv(2, 1, channels[0])
        self.view_embedding = nn.Parameter(torch.randn(num_views, channels[0]) * 0.02)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = channels[0]
        for level, ch in enumerate(channels):
            self.down.append(ResBlock(2, prev, ch, norm_groups=norm_groups))
            if level < len(channels) - 1:
                self.downsample.append(Downsample(2, ch, ch))
            prev = ch
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for level in reversed(range(len(channels) - 1)):
            ch = channels[level]
            self.upsample.append(Upsample(2, prev, ch))
            self.up.append(ResBlock(2, 2 * ch, ch, norm_groups=norm_groups))
            prev = ch
        self.norm_out = group_norm(prev, norm_groups)
        self.conv_out = nn.Conv2d(prev, out_channels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, v, rows, cols = images.shape
        x = self.stem(images.reshape(b * v, 1, rows, cols))
        x = x + self.view_embedding.repeat(b, 1)[:, :, None, None]
        skips = []
        for level, block in enumerate(self.down):
            x = block(x)
            if level < len(self.downsample):
                skips.append(x)
                x = self.downsample[level](x)
        for upsample, block in zip(self.upsample, self.up):
            skip = skips.pop()
            x = block(torch.cat([upsample(x, skip.shape[2:]), skip], dim=1))
        x = self.conv_out(F.silu(self.norm_out(x)))
        return x.reshape(b, v, -1, rows, cols)


class TriplaneGenerator(nn.Module):
    """Radiographs ``(B, 2, M, M)`` in [-1, 1] -> :class:`Triplanes` with C = ``triplane_channels``.

    Input channels follow ``geometry.views`` (the default order is AP, lateral). The config's
    ``volume_size``/``xray_size`` must match the geometry (:func:`check_geometry`).
    """

    def __init__(self, config: NetworkConfig, geometry: BiplanarGeometry) -> None:
        super().__init__()
        check_geometry(config, geometry)
        self.view_index = {name: geometry.views.index(name) for name in ("ap", "lateral")}
        self.num_views = len(geometry.views)
        self.xray_size = config.xray_size
        c, groups = config.triplane_channels, config.norm_num_groups
        self.encoder = XrayEncoder2D(config.xray_encoder_channels, c, num_views=self.num_views, norm_groups=groups)
        self.aligner = ProjectiveAligner(geometry)
        self.coronal_refine = ResBlock(2, c, c, norm_groups=groups)
        self.sagittal_refine = ResBlock(2, c, c, norm_groups=groups)
        self.fusion = AxialFusion(c, config.triplane_heads)
        self.axial_refine = ResBlock(2, c, c, norm_groups=groups)

    def forward(self, xrays: torch.Tensor) -> Triplanes:
        expected = (self.num_views, self.xray_size, self.xray_size)
        if xrays.ndim != 4 or tuple(xrays.shape[1:]) != expected:
            raise InputError(None, f"radiographs must be (B, {', '.join(map(str, expected))}), got {tuple(xrays.shape)}")
        features = self.encoder(xrays)
        coronal, sagittal = self.aligner(features[:, self.view_index["ap"]], features[:, self.view_index["lateral"]])
        coronal = self.coronal_refine(coronal)
        sagittal = self.sagittal_refine(sagittal)
        axial = self.axial_refine(self.fusion(coronal, sagittal))
        return Triplanes(coronal, sagittal, axial)
