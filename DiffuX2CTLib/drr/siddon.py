"""Exact Siddon ray tracing: the sparse system matrix of a biplanar cone-beam geometry.

Row ``r`` of the matrix is one detector pixel (views first, then rows, then columns, the order
of a ``(V, rows, cols)`` image stack); column ``c`` is one voxel in the C order of a
``(D, H, W)`` array. Entry ``A[r, c]`` is the length in millimetres of the segment of ray ``r``
(source to pixel centre) inside voxel ``c``, so ``A @ mu.ravel()`` with ``mu`` in 1/mm gives the
dimensionless line integrals ``-log(I / I0)``.

The intersections are computed in float64 (Siddon 1985; all plane crossings of each ray,
sorted, midpoints looked up), vectorised over chunks of rays with torch.
"""

from __future__ import annotations

import numpy as np
import torch

from ..geometry import BiplanarGeometry


def _ray_segments(
    source: torch.Tensor,
    targets: torch.Tensor,
    planes: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    spacing: torch.Tensor,
    box_min: torch.Tensor,
    shape_xyz: tuple[int, int, int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Voxel segments of rays from one ``source`` (3,) to ``targets`` (R, 3); xyz order, mm.

    Returns ``(ray_index, voxel_index, length_mm)`` of all non-empty segments.
    """
    direction = targets - source  # (R, 3)
    length = torch.linalg.vector_norm(direction, dim=1)  # (R,)
    box_max = box_min + spacing * torch.tensor(shape_xyz, dtype=spacing.dtype)

    # entry and exit parameters of the volume box, per axis then combined
    inv = 1.0 / direction  # +-inf for axis-parallel rays
    a0 = (box_min - source) * inv
    a1 = (box_max - source) * inv
    parallel = direction == 0
    inside_slab = (source >= box_min) & (source <= box_max)
    lo = torch.where(parallel, torch.where(inside_slab, -torch.inf, torch.inf), torch.minimum(a0, a1))
    hi = torch.where(parallel, torch.where(inside_slab, torch.inf, -torch.inf), torch.maximum(a0, a1))
    a_min = lo.amax(dim=1).clamp(min=0.0)
    a_max = hi.amin(dim=1).clamp(max=1.0)

    # every crossing with the planes of each axis, clamped into [a_min, a_max]
    crossings = []
    for axis in range(3):
        a = (planes[axis][None, :] - source[axis]) * inv[:, axis : axis + 1]
        a = torch.where(parallel[:, axis : axis + 1], a_min[:, None], a)
        crossings.append(a)
    alphas = torch.cat([a_min[:, None], a_max[:, None], *crossings], dim=1)
    alphas = torch.minimum(torch.maximum(alphas, a_min[:, None]), a_max[:, None].maximum(a_min[:, None]))
    alphas, _ = torch.sort(alphas, dim=1)

    seg = alphas[:, 1:] - alphas[:, :-1]  # (R, K) parametric lengths
    mid = 0.5 * (alphas[:, 1:] + alphas[:, :-1])
    keep = seg > 1e-12
    ray_idx, seg_idx = torch.nonzero(keep, as_tuple=True)
    mid = mid[ray_idx, seg_idx]
    point = source + mid[:, None] * direction[ray_idx]  # (S, 3) xyz
    ijk = torch.floor((point - box_min) / spacing).long()
    nx, ny, nz = shape_xyz
    ijk[:, 0].clamp_(0, nx - 1)
    ijk[:, 1].clamp_(0, ny - 1)
    ijk[:, 2].clamp_(0, nz - 1)
    voxel = (ijk[:, 2] * ny + ijk[:, 1]) * nx + ijk[:, 0]
    seg_mm = seg[ray_idx, seg_idx] * length[ray_idx]
    return ray_idx, voxel, seg_mm


def system_matrix(geometry: BiplanarGeometry, rays_per_chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Siddon system matrix of ``geometry`` in CSR form ``(crow int64, col int32, val float32 mm)``.

    Shape ``(geometry.num_rays, geometry.num_voxels)``; see the module docstring for the order.
    """
    d, h, w = geometry.volume_shape
    sz, sy, sx = geometry.volume_spacing_mm
    f64 = torch.float64
    spacing = torch.tensor([sx, sy, sz], dtype=f64)
    shape_xyz = (w, h, d)
    box_min = -0.5 * spacing * torch.tensor(shape_xyz, dtype=f64)
    planes = tuple(box_min[a] + spacing[a] * torch.arange(n + 1, dtype=f64) for a, n in enumerate(shape_xyz))

    counts, cols, vals = [], [], []
    for view in geometry.views:
        source = torch.from_numpy(geometry.view(view).source)
        targets = torch.from_numpy(geometry.pixel_centers(view).reshape(-1, 3))
        for start in range(0, len(targets), rays_per_chunk):
            chunk = targets[start : start + rays_per_chunk]
            ray, voxel, seg_mm = _ray_segments(source, chunk, planes, spacing, box_min, shape_xyz)
            counts.append(torch.bincount(ray, minlength=len(chunk)))
            cols.append(voxel.to(torch.int32))
            vals.append(seg_mm.to(torch.float32))
    # segments come out ray-major and, within a ray, ordered along the ray: voxel indices of one
    # ray are distinct, so the rows need no de-duplication, only column sorting for CSR.
    crow = torch.zeros(geometry.num_rays + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.cat(counts), 0)
    col = torch.cat(cols)
    val = torch.cat(vals)
    col, val = _sort_columns_per_row(crow, col, val)
    return crow.numpy(), col.numpy(), val.numpy()


def _sort_columns_per_row(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort column indices within each CSR row (some sparse kernels require it)."""
    rows = torch.repeat_interleave(torch.arange(len(crow) - 1), crow[1:] - crow[:-1])
    key = rows * (int(col.max()) + 1 if len(col) else 1) + col.long()
    order = torch.argsort(key)
    return col[order], val[order]
