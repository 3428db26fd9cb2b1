"""Network-input radiographs of CT volumes, rendered as the detector sees them.

Each detector pixel integrates over its area, so the DRR is rendered on a detector ``factor``
times finer per side (same physical panel) with the shared Siddon projector and the line
integrals are average-pooled ``factor x factor`` back to the model's detector. The result is
normalised with the checkpoint's :class:`~DiffuX2CTLib.io.xray.XRayNormalization`, exactly as a
loaded radiograph is. Training, validation, evaluation and data preparation all use this one
renderer, so the network always sees the same kind of image.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from DiffuX2CTLib.drr import DRRProjector
from DiffuX2CTLib.geometry import BiplanarGeometry
from DiffuX2CTLib.io.intensity import MU_WATER_PER_MM
from DiffuX2CTLib.io.xray import XRayNormalization


class RadiographRenderer(torch.nn.Module):
    """HU volumes ``(B, 1, D, H, W)`` -> line integrals or normalised radiographs ``(B, V, rows, cols)``.

    Args:
        geometry: the model geometry (its detector is the network input size).
        factor: supersampling per detector side (1 = one ray per pixel centre).
        mu_water_per_mm: water attenuation for HU -> mu (1/mm).
        normalization: the radiograph normalisation (default: the library's).
        cache_dir: system-matrix cache folder (default: the library's).
    """

    def __init__(self, geometry: BiplanarGeometry, factor: int = 4, mu_water_per_mm: float = MU_WATER_PER_MM,
                 normalization: XRayNormalization | None = None, cache_dir: str | os.PathLike | None = None) -> None:
        super().__init__()
        rows, cols = geometry.detector_shape
        if rows != cols:
            raise ValueError("supersampled rendering needs a square detector")
        self.geometry = geometry
        self.factor = int(factor)
        self.normalization = normalization or XRayNormalization()
        fine = geometry if self.factor == 1 else geometry.with_sizes(xray_size=rows * self.factor)
        self.projector = DRRProjector(fine, mu_water_per_mm=mu_water_per_mm, normalization=self.normalization,
                                      cache_dir=cache_dir)

    def forward(self, volume_hu: torch.Tensor) -> torch.Tensor:
        """Pixel-averaged line integrals ``-log(I/I0)`` (dimensionless), float32; like
        :meth:`DiffuX2CTLib.drr.DRRProjector.forward`, so either can be used as a projector."""
        return self.pool(self.fine(volume_hu))

    def fine(self, volume_hu: torch.Tensor) -> torch.Tensor:
        """Line integrals on the supersampled detector ``(B, V, rows * factor, cols * factor)``."""
        return self.projector(volume_hu)

    def pool(self, fine: torch.Tensor) -> torch.Tensor:
        """Supersampled line integrals averaged back to the model's detector pixels."""
        return fine if self.factor == 1 else F.avg_pool2d(fine, self.factor)

    def line_integrals(self, volume_hu: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`forward`."""
        return self.forward(volume_hu)

    def radiograph(self, volume_hu: torch.Tensor) -> torch.Tensor:
        """Normalised radiographs in [-1, 1], the network's input."""
        return self.normalization(self.forward(volume_hu))


__all__ = ["RadiographRenderer"]
