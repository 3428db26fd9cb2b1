"""Differentiable biplanar DRR projector: a precomputed Siddon matrix applied as a sparse matmul.

``DRRProjector(geometry)`` maps CT volumes ``(B, 1, D, H, W)`` (HU, or attenuation in 1/mm via
:meth:`DRRProjector.project_mu`) to line integrals ``(B, V, rows, cols)``, one channel per view
in ``geometry.views`` order, using the frames of :mod:`DiffuX2CTLib.geometry.biplanar`.

The matrix ``A`` (rays x voxels, mm) depends only on the geometry, so it is built once, cached
on disk under the geometry hash, and kept in memory per device and dtype together with its
transpose; the forward pass is ``A @ x`` and the backward pass ``A^T @ g`` in a custom autograd
Function, exact and cheap.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from ..geometry import BiplanarGeometry
from ..io.atomic import atomic_file
from ..io.files import default_cache_dir
from ..io.intensity import MU_WATER_PER_MM, hu_to_mu
from ..io.xray import XRayNormalization
from .siddon import system_matrix

MATRIX_FORMAT = "siddon-csr-v1"


class SystemMatrix:
    """The CSR Siddon matrix of one geometry, with per-(device, dtype) copies of A and A^T."""

    def __init__(self, crow: np.ndarray, col: np.ndarray, val: np.ndarray, shape: tuple[int, int]) -> None:
        self.crow, self.col, self.val, self.shape = crow, col, val, shape
        self._copies: dict[tuple[str, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()

    @property
    def nnz(self) -> int:
        return len(self.val)

    def tensors(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, A^T)`` as sparse CSR tensors on ``device`` in ``dtype``."""
        key = (str(device), dtype)
        with self._lock:
            if key not in self._copies:
                index_dtype = torch.int32 if self.nnz < 2**31 else torch.int64
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
                    a = torch.sparse_csr_tensor(
                        torch.from_numpy(self.crow).to(index_dtype),
                        torch.from_numpy(self.col).to(index_dtype),
                        torch.from_numpy(self.val).to(dtype),
                        size=self.shape,
                    )
                    at = a.t().to_sparse_csr()
                    self._copies[key] = (a.to(device), at.to(device))
            return self._copies[key]

    # --- disk cache (safetensors: plain arrays, nothing executable) --------------------
    def save(self, path: Path, geometry_hash: str) -> None:
        from safetensors.numpy import save_file

        with atomic_file(path) as tmp:
            save_file(
                {"crow": self.crow, "col": self.col, "val": self.val},
                str(tmp),
                metadata={"format": MATRIX_FORMAT, "geometry_hash": geometry_hash,
                          "rows": str(self.shape[0]), "cols": str(self.shape[1])},
            )

    @classmethod
    def load(cls, path: Path, geometry_hash: str, shape: tuple[int, int]) -> "SystemMatrix | None":
        """Load a cached matrix, or ``None`` when it is missing, stale or damaged."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                if (meta.get("format"), meta.get("geometry_hash")) != (MATRIX_FORMAT, geometry_hash):
                    return None
                arrays = {k: f.get_tensor(k) for k in ("crow", "col", "val")}
        except Exception:  # missing, truncated or not safetensors: rebuild
            return None
        crow = arrays["crow"]
        if len(crow) != shape[0] + 1 or crow[-1] != len(arrays["val"]) or len(arrays["col"]) != len(arrays["val"]):
            return None
        if len(arrays["col"]) and (arrays["col"].min() < 0 or arrays["col"].max() >= shape[1]):
            return None
        return cls(crow, arrays["col"], arrays["val"], shape)


_MEMORY_CACHE: dict[str, SystemMatrix] = {}
_MEMORY_LOCK = threading.Lock()


def load_system_matrix(geometry: BiplanarGeometry, cache_dir: str | os.PathLike | None = None, use_disk: bool = True) -> SystemMatrix:
    """The system matrix of ``geometry``: from memory, else from the disk cache, else built."""
    key = geometry.hash
    with _MEMORY_LOCK:
        if key in _MEMORY_CACHE:
            return _MEMORY_CACHE[key]
        shape = (geometry.num_rays, geometry.num_voxels)
        path = Path(cache_dir or default_cache_dir()) / "projectors" / f"{key}.safetensors"
        matrix = SystemMatrix.load(path, key, shape) if use_disk else None
        if matrix is None:
            matrix = SystemMatrix(*system_matrix(geometry), shape=shape)
            if use_disk:
                try:
                    matrix.save(path, key)
                except OSError as exc:  # read-only home etc.: keep going without the cache
                    warnings.warn(f"could not cache the DRR system matrix at {path}: {exc}", stacklevel=2)
        _MEMORY_CACHE[key] = matrix
        return matrix


def _spmm(matrix: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``matrix @ dense`` for a CSR matrix and a dense ``(K, B)`` block.

    One column goes through the sparse matrix-vector kernel (about 25% faster than a one-column
    matrix product on CPU); several columns are made row-major first, as the kernel expects.
    """
    if dense.shape[1] == 1:
        return torch.mv(matrix, dense[:, 0]).unsqueeze(1)
    return torch.sparse.mm(matrix, dense.contiguous())


class _SparseProject(torch.autograd.Function):
    """``y = A x`` for a batch of flattened volumes, with ``dx = A^T dy``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: torch.Tensor, at: torch.Tensor) -> torch.Tensor:  # x: (N, B)
        ctx.save_for_backward(at)  # sparse tensors are kept alive, not copied
        return _spmm(a, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # grad: (R, B)
        (at,) = ctx.saved_tensors
        grad_x = _spmm(at, grad) if ctx.needs_input_grad[0] else None
        return grad_x, None, None


class DRRProjector(torch.nn.Module):
    """Cone-beam DRRs of CT volumes for a fixed :class:`BiplanarGeometry`.

    Args:
        geometry: source, detector and volume sampling; the volume is centred at the isocentre.
        mu_water_per_mm: linear attenuation of water used for HU -> mu (1/mm).
        normalization: the radiograph normalisation shared with real X-rays.
        cache_dir: where system matrices are cached (default :func:`default_cache_dir`).
        use_disk_cache: set False to always build in memory (tests).
    """

    def __init__(
        self,
        geometry: BiplanarGeometry,
        mu_water_per_mm: float = MU_WATER_PER_MM,
        normalization: XRayNormalization | None = None,
        cache_dir: str | os.PathLike | None = None,
        use_disk_cache: bool = True,
    ) -> None:
        super().__init__()
        self.geometry = geometry
        self.mu_water_per_mm = float(mu_water_per_mm)
        self.normalization = normalization or XRayNormalization()
        self.matrix = load_system_matrix(geometry, cache_dir, use_disk_cache)

    def project_mu(self, mu: torch.Tensor) -> torch.Tensor:
        """Line integrals ``(B, V, rows, cols)`` of attenuation volumes ``(B, 1, D, H, W)`` in 1/mm.

        Computed in float32 (float64 inputs stay float64) whatever the autocast state.
        """
        d, h, w = self.geometry.volume_shape
        if mu.ndim != 5 or tuple(mu.shape[1:]) != (1, d, h, w):
            raise ValueError(f"expected volumes of shape (B, 1, {d}, {h}, {w}), got {tuple(mu.shape)}")
        dtype = torch.float64 if mu.dtype == torch.float64 else torch.float32
        a, at = self.matrix.tensors(mu.device, dtype)
        with torch.autocast(device_type=mu.device.type, enabled=False):
            x = mu.to(dtype).reshape(mu.shape[0], -1).t()  # (N, B)
            y = _SparseProject.apply(x, a, at)  # (R, B)
        rows, cols = self.geometry.detector_shape
        return y.t().reshape(mu.shape[0], len(self.geometry.views), rows, cols)

    def forward(self, volume_hu: torch.Tensor) -> torch.Tensor:
        """Line integrals ``(B, V, rows, cols)`` of CT volumes ``(B, 1, D, H, W)`` in HU."""
        return self.project_mu(hu_to_mu(volume_hu, self.mu_water_per_mm))

    def radiograph(self, volume_hu: torch.Tensor) -> torch.Tensor:
        """Normalised radiographs in [-1, 1] ``(B, V, rows, cols)``, as real X-rays are normalised."""
        return self.normalization(self.forward(volume_hu))
