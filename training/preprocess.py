"""One source scan -> cleaned CT on the model grid + DRRs, written as cache case(s).

Steps (all coordinates LPS mm, values HU):

1. ``read_ct`` (file, or DICOM folder + series UID; truncated or corrupt files are refused there);
   label maps are refused; the axes are
   permuted losslessly to LPS (``orient_lps``) so that array axis 0 is axial (superior).
2. :func:`DiffuX2CTLib.io.body.clean_ct`: padding below -1024 HU becomes air (``hu_stats`` with
   ``padding_fraction``), then the optional body mask sets the couch and everything outside the
   body to air (``body_at_fov_edge`` records a cut-off body).
4. The case: ``to_model_grid`` (one anti-aliased linear resampling) centred on
   ``body_center_lps`` of the cleaned CT, DRR line integrals by the shared ``DRRProjector``.
5. Offline augmentations (optional): each resampled once from the cleaned full-resolution CT
   through a seeded random affine (rotation, isotropic scale, centre shift), then an optional
   cut of the body's z extent and an intensity variation ``hu' = (hu + 1000)(1 + a) - 1000``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from DiffuX2CTLib.errors import InputError
from DiffuX2CTLib.io.body import (  # noqa: F401  (re-exported: the cleaning steps of a case)
    BODY_THRESHOLD_HU, CleanCT, body_mask, check_not_label_map, clean_ct, fov_edge_fraction, hu_statistics,
)
from DiffuX2CTLib.geometry import BiplanarGeometry
from DiffuX2CTLib.io.ct import (
    AIR_HU, antialias_for_spacing, array_to_image, body_center_lps, model_array, read_ct, to_model_grid,
)

from .cache import CaseRecord, write_case
from .objective import sample_seed
from .sources import SourceCase



@dataclass(frozen=True)
class AugmentOptions:
    """Offline augmentation: ``copies`` extra cases per scan (0 = none).

    Attributes:
        rotate_deg: maximum rotation about each LPS axis, degrees.
        scale: isotropic scale drawn in ``[1 - scale, 1 + scale]``.
        shift_mm: maximum shift of the grid centre along each axis, mm.
        z_cut_probability: chance of keeping only part of the body's z extent.
        z_keep_min: the kept contiguous fraction is drawn in ``[z_keep_min, 1]``.
        intensity: ``|a|`` bound of ``hu' = (hu + 1000)(1 + a) - 1000`` on non-air voxels.
    """

    copies: int = 0
    rotate_deg: float = 5.0
    scale: float = 0.05
    shift_mm: float = 15.0
    z_cut_probability: float = 0.5
    z_keep_min: float = 0.7
    intensity: float = 0.03


@dataclass(frozen=True)
class PrepareOptions:
    body_mask: bool = True
    seed: int = 0
    xray_supersample: int = 2
    augment: AugmentOptions = field(default_factory=AugmentOptions)


# --- augmentation --------------------------------------------------------------------------
def _rotation(deg: np.ndarray) -> np.ndarray:
    """Rotation matrix R = Rz @ Ry @ Rx for angles (x, y, z) in degrees about the LPS axes."""
    ax, ay, az = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def sample_augmentation(source_case_id: str, copy: int, seed: int, options: AugmentOptions) -> dict[str, Any]:
    """The parameters of augmentation ``copy`` of a scan, fixed by ``seed`` and the ids."""
    s = sample_seed(seed, "augment", source_case_id, copy)
    rng = np.random.default_rng(s)
    rotation = rng.uniform(-options.rotate_deg, options.rotate_deg, 3)
    scale = 1.0 + rng.uniform(-options.scale, options.scale)
    shift = rng.uniform(-options.shift_mm, options.shift_mm, 3)
    cut = rng.uniform() < options.z_cut_probability
    keep = rng.uniform(options.z_keep_min, 1.0)
    start = rng.uniform(0.0, 1.0 - keep)
    a = rng.uniform(-options.intensity, options.intensity)
    return {"source_case_id": source_case_id, "copy": int(copy), "sample_seed": int(s),
            "rotation_deg_lps": [float(v) for v in rotation], "scale": float(scale),
            "shift_mm_lps": [float(v) for v in shift],
            "z_keep": {"fraction": float(keep), "start": float(start)} if cut else None,
            "intensity_a": float(a)}


def augmented_model_ct(clean: sitk.Image, geometry: BiplanarGeometry, center_lps: tuple[float, float, float],
                       params: dict[str, Any]) -> tuple[sitk.Image, tuple[float, float, float]]:
    """Resample ``clean`` once onto the model grid through the affine of ``params``.

    The grid is centred at ``g = center + shift``; model point ``p`` samples the CT at
    ``g + R (p - g) / scale``. Returns the image (on ``array_to_image``'s grid at ``g``) and ``g``.
    """
    grid_center = tuple(float(c + s) for c, s in zip(center_lps, params["shift_mm_lps"]))
    matrix = _rotation(np.asarray(params["rotation_deg_lps"])) / params["scale"]
    transform = sitk.AffineTransform(3)
    transform.SetMatrix([float(v) for v in matrix.ravel()])
    transform.SetCenter(grid_center)
    reference = array_to_image(np.zeros(geometry.volume_shape, np.float32), geometry, grid_center)
    clean = antialias_for_spacing(clean, min(geometry.volume_spacing_mm) / params["scale"])
    resampled = sitk.Resample(clean, reference, transform, sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)
    values = sitk.GetArrayFromImage(resampled)
    if params.get("z_keep"):
        rows = np.flatnonzero((values > BODY_THRESHOLD_HU).any(axis=(1, 2)))
        if rows.size:
            extent = rows[-1] - rows[0] + 1
            lo = rows[0] + int(round(params["z_keep"]["start"] * extent))
            hi = lo + max(1, int(round(params["z_keep"]["fraction"] * extent)))
            values[:lo] = AIR_HU
            values[hi:] = AIR_HU
    tissue = values > AIR_HU
    values[tissue] = np.maximum((values[tissue] + 1000.0) * (1.0 + params["intensity_a"]) - 1000.0, AIR_HU)
    return array_to_image(values, geometry, grid_center), grid_center  # type: ignore[return-value]


# --- one source ----------------------------------------------------------------------------
def augmented_case_id(case_id: str, copy: int) -> str:
    return f"{case_id}_aug{copy:02d}"


def expected_case_ids(source: SourceCase, options: PrepareOptions) -> list[str]:
    """The case ids one source produces: the scan, then its augmentations."""
    return [source.case_id] + [augmented_case_id(source.case_id, c) for c in range(1, options.augment.copies + 1)]


def line_integrals(projector: Any, model_ct: sitk.Image) -> np.ndarray:
    """``(V, rows, cols)`` float32 DRR line integrals of a model-grid CT."""
    import torch

    with torch.no_grad():
        line = projector(torch.from_numpy(model_array(model_ct))[None, None])
    out = line[0].numpy().astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise InputError(None, "DRRs hold NaN or infinite values")
    return out


def prepare_source(source: SourceCase, geometry: BiplanarGeometry, projector: Any, cache_dir: str | os.PathLike,
                   options: PrepareOptions, skip_ids: frozenset[str] = frozenset()) -> list[CaseRecord]:
    """Prepare the cases of one source (except ``skip_ids``) and write them; returns their records."""
    original = read_ct(source.path, source.series_uid)
    clean = clean_ct(original, options.body_mask, source.path)
    center = body_center_lps(clean.image)
    base = dict(group=source.group, dataset=source.dataset, source=source.path, series_uid=source.series_uid,
                geometry_hash=geometry.hash, original_spacing_mm=original.GetSpacing(),
                original_shape=original.GetSize(), hu_stats=clean.hu_stats, body_mask=clean.body_mask,
                body_at_fov_edge=clean.body_at_fov_edge, xray_supersample=options.xray_supersample)
    written = []
    if source.case_id not in skip_ids:
        model_ct = to_model_grid(clean.image, geometry, center_lps=center)
        record = CaseRecord(case_id=source.case_id, center_lps=center, extra=dict(source.extra), **base)
        write_case(cache_dir, record, model_ct, line_integrals(projector, model_ct), geometry)
        written.append(record)
    for copy in range(1, options.augment.copies + 1):
        case_id = augmented_case_id(source.case_id, copy)
        if case_id in skip_ids:
            continue
        params = sample_augmentation(source.case_id, copy, options.seed, options.augment)
        model_ct, grid_center = augmented_model_ct(clean.image, geometry, center, params)
        record = CaseRecord(case_id=case_id, center_lps=grid_center, augmentation=params,
                            extra=dict(source.extra, source_case_id=source.case_id), **base)
        write_case(cache_dir, record, model_ct, line_integrals(projector, model_ct), geometry)
        written.append(record)
    return written


__all__ = ["AugmentOptions", "PrepareOptions", "CleanCT", "clean_ct", "body_mask", "fov_edge_fraction",
           "hu_statistics", "check_not_label_map", "sample_augmentation", "augmented_model_ct",
           "augmented_case_id", "expected_case_ids", "line_integrals", "prepare_source"]
