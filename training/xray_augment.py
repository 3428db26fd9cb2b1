"""Radiograph-style augmentation: train on what a real film looks like after our reader.

A clinician's film is not a DRR. With probability ``augment.film_prob`` a training sample's two
radiographs are replaced, on the fly, by simulated films of the same views, read back through the
very chain that reads a user's file at inference:

1. positioning: the supersampled line integrals (the detector ``factor`` times finer) are
   magnified about the image centre by ``1 + U(-magnification, magnification)``, rotated in plane
   by ``U(-xray_rotate_deg, xray_rotate_deg)`` and shifted by ``U(-xray_shift_mm, xray_shift_mm)``
   per axis (mm at the detector), air outside -- while the stored geometry tags stay nominal, as
   when a patient stands off the isocentre;
2. the film: :func:`DiffuX2CTLib.radiograph.film.film_from_line_integrals` with settings drawn by
   :func:`~DiffuX2CTLib.radiograph.presets.random_film_config` (``film_strength``): exposure and
   detector gain, Poisson-Gaussian noise, focal-spot and detector blur, scatter, heel effect,
   lead marker and burned-in text, collimation, and the storage encoding (FOR PROCESSING linear or
   log, FOR PRESENTATION with a display curve and a VOI window, MONOCHROME1 or 2);
3. storage: a DX DICOM data set built in memory by the DICOM writer, or (with probability
   ``film_png_fraction``) an 8-bit display PNG read with ``--xray-encoding display``;
4. reading: :func:`DiffuX2CTLib.io.radiograph.prepare_radiograph` -- encoding to line integrals,
   burned-in label and collimation masking, orientation and scale from the tags, resampling to the
   model's detector, normalisation over the valid pixels.

The random draws come from the sample's seed (:func:`training.objective.sample_seed`), so a
resumed or distributed run augments every sample identically. Everything runs on the CPU in
numpy (about 20-40 ms per view at a 128-pixel supersampled detector).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from DiffuX2CTLib.geometry import BiplanarGeometry
from DiffuX2CTLib.io.intensity import MU_WATER_PER_MM
from DiffuX2CTLib.io.xray import XRayImage, XRayNormalization

from .config import AugmentConfig
from .objective import sample_seed

#: Salt of the film augmentation's random stream (independent of the volume augmentation's).
FILM_SALT = "radiograph-film"


def jitter_images(images: torch.Tensor, scale: torch.Tensor, angle_rad: torch.Tensor,
                  shift_px: torch.Tensor) -> torch.Tensor:
    """Magnify, rotate and shift ``(N, rows, cols)`` images about their centres (bilinear, zeros
    outside). ``scale`` (N,) > 1 enlarges the content; ``angle_rad`` (N,) rotates it
    counter-clockwise on the image; ``shift_px`` (N, 2) moves it by (rows, cols) pixels."""
    n, rows, cols = images.shape
    cos, sin = torch.cos(angle_rad), torch.sin(angle_rad)
    # output -> input mapping in normalised coordinates (x = cols, y = rows), square pixels
    aspect = cols / rows
    theta = torch.zeros((n, 2, 3), dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = cos / scale
    theta[:, 0, 1] = -sin / scale / aspect
    theta[:, 1, 0] = sin / scale * aspect
    theta[:, 1, 1] = cos / scale
    theta[:, 0, 2] = -2.0 * shift_px[:, 1] / cols
    theta[:, 1, 2] = -2.0 * shift_px[:, 0] / rows
    grid = F.affine_grid(theta, (n, 1, rows, cols), align_corners=False)
    return F.grid_sample(images[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


class RadiographAugmenter:
    """Replaces some samples' network inputs by read-back simulated films (module docstring).

    Args:
        config: the augmentation settings (``film_prob``, ``film_strength``, ``film_png_fraction``,
            ``magnification``, ``xray_shift_mm``, ``xray_rotate_deg``).
        geometry: the model geometry (its detector is the network input).
        factor: supersampling of the line integrals given to :meth:`__call__`.
        normalization: the checkpoint's radiograph normalisation.
        mu_water_per_mm: water attenuation (1/mm) of the training data, which the reader's body
            prior for log and display films is expressed in (the checkpoint stores the same value,
            and inference reads films with it).
    """

    def __init__(self, config: AugmentConfig, geometry: BiplanarGeometry, factor: int,
                 normalization: XRayNormalization, mu_water_per_mm: float = MU_WATER_PER_MM) -> None:
        self.config = config
        self.geometry = geometry
        self.factor = int(factor)
        self.normalization = normalization
        self.mu_water_per_mm = float(mu_water_per_mm)
        self.fine_spacing_mm = tuple(s / self.factor for s in geometry.detector_spacing_mm)

    @property
    def enabled(self) -> bool:
        return self.config.enabled and self.config.film_prob > 0

    def __call__(self, fine_line_integrals: torch.Tensor, xrays: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """``xrays`` (B, V, rows, cols) with the chosen samples replaced by read-back films made
        from ``fine_line_integrals`` (B, V, rows * factor, cols * factor)."""
        if not self.enabled:
            return xrays
        out = xrays.clone()
        fine = fine_line_integrals.detach().float().cpu()
        for b, seed in enumerate(seeds):
            rng = np.random.default_rng(sample_seed(int(seed), FILM_SALT))
            if rng.random() >= self.config.film_prob:
                continue
            for v, view in enumerate(self.geometry.views):
                pixels = self.film_input(fine[b, v], view, rng)
                out[b, v] = torch.from_numpy(pixels).to(out.device, out.dtype)
        return out

    def positioning(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Step 1 on one supersampled line-integral image ``(rows, cols)``."""
        c = self.config
        scale = 1.0 + rng.uniform(-c.magnification, c.magnification)
        angle = math.radians(rng.uniform(-c.xray_rotate_deg, c.xray_rotate_deg))
        shift = [rng.uniform(-c.xray_shift_mm, c.xray_shift_mm) / s for s in self.fine_spacing_mm]
        return jitter_images(image[None], torch.tensor([scale]), torch.tensor([angle]),
                             torch.tensor([shift], dtype=torch.float32))[0]

    def film_input(self, fine_image: torch.Tensor, view: str, rng: np.random.Generator) -> np.ndarray:
        """Steps 1-4 for one view: the normalised network input ``geometry.detector_shape``."""
        from DiffuX2CTLib.io.radiograph import RadiographOptions, prepare_radiograph
        from DiffuX2CTLib.io.xray_dicom import xray_from_dataset
        from DiffuX2CTLib.radiograph.dicom_writer import DXAcquisition, build_dx_dataset
        from DiffuX2CTLib.radiograph.film import film_from_line_integrals
        from DiffuX2CTLib.radiograph.presets import random_film_config
        from DiffuX2CTLib.radiograph.simulation import view_labels

        line_integrals = self.positioning(fine_image, rng).numpy().astype(np.float64)
        acquisition = DXAcquisition.from_geometry(self.geometry, view)
        config = random_film_config(rng, self.config.film_strength)
        if config.labels is not None:
            config = config.replace(labels=view_labels(config.labels, acquisition))
        film = film_from_line_integrals(line_integrals, self.fine_spacing_mm, config, rng,
                                        magnification=self.geometry.magnification)
        label = f"augmented-{view}"
        if rng.random() < self.config.film_png_fraction:
            display = np.round(np.clip(film.display, 0.0, 1.0) * 255.0).astype(np.uint8)
            xray = XRayImage(display, self.fine_spacing_mm, f"{label}.png",
                             {"format": "png", "full_scale": 255.0, "bit_depth": 8})
            options = RadiographOptions(xray_encoding="display")
        else:
            xray = xray_from_dataset(build_dx_dataset(film, acquisition), f"{label}.dcm")
            options = RadiographOptions()
        prepared = prepare_radiograph(xray, view, self.geometry, self.normalization, options,
                                      mu_water_per_mm=self.mu_water_per_mm)
        return prepared.pixels


__all__ = ["FILM_SALT", "RadiographAugmenter", "jitter_images"]
