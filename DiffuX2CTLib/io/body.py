"""Clean a CT before it is projected: scanner padding to air, and a body mask that removes the couch.

Values are HU, coordinates LPS mm. Used by the training-data preparation and by the demo, so
that simulated radiographs of a CT are those of the patient alone, as in an upright radiograph
room (no couch, no padding outside the scan circle).

1. Padding: every value below -1024 HU (e.g. -2000 / -3024 outside the scan circle) becomes air
   (-1024); HU statistics are taken after that, with the padding fraction.
2. Body mask: voxels above -500 HU, in-plane opening (3 mm radius) to cut the couch and thin
   attachments, largest connected component, holes filled per axial slice (lungs, bowel gas),
   2 mm in-plane dilation; outside -> air. ``body_at_fov_edge`` is the fraction of the body's
   in-plane boundary on the field-of-view edge (a cut-off body).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .ct import AIR_HU, orient_lps

BODY_THRESHOLD_HU = -500.0
PADDING_FOV_HU = -1500.0  # values below this are scanner padding (outside the field of view)
OPENING_RADIUS_MM = 3.0
DILATION_RADIUS_MM = 2.0
_STATS_SAMPLES = 2_000_000


@dataclass
class CleanCT:
    """A CT after padding removal (and body masking): float32 HU, LPS-ordered axes."""

    image: sitk.Image
    hu_stats: dict[str, float]
    body_mask: bool
    body_at_fov_edge: float


def check_not_label_map(values: np.ndarray, path: str | os.PathLike | None) -> None:
    """Raise InputError when the volume holds a few small non-negative integers (a label map)."""
    sample = values.reshape(-1)[:: max(1, values.size // _STATS_SAMPLES)]
    if sample.min() >= 0 and sample.max() <= 1000 and np.all(sample == np.round(sample)):
        distinct = np.unique(sample)
        if distinct.size <= 64:
            raise InputError(path, f"looks like a label map ({distinct.size} integer values from "
                                   f"{distinct[0]:g} to {distinct[-1]:g}), not a CT in HU")


def hu_statistics(values: np.ndarray) -> dict[str, float]:
    """``min, max, mean, std, p01, p99`` (HU) of ``values``; percentiles from a regular subsample."""
    sample = values.reshape(-1)[:: max(1, values.size // _STATS_SAMPLES)]
    p01, p99 = np.percentile(sample, [1.0, 99.0])
    return {"min": float(values.min()), "max": float(values.max()), "mean": float(values.mean(dtype=np.float64)),
            "std": float(values.std(dtype=np.float64)), "p01": float(p01), "p99": float(p99)}


def _inplane_boundary(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` (K, J, I) with a 4-neighbour in their axial slice outside it (or off the slice)."""
    p = np.pad(mask, ((0, 0), (1, 1), (1, 1)), constant_values=False)
    inner = p[:, 1:-1, 1:-1] & p[:, :-2, 1:-1] & p[:, 2:, 1:-1] & p[:, 1:-1, :-2] & p[:, 1:-1, 2:]
    return mask & ~inner


def fov_edge_fraction(body: np.ndarray, fov: np.ndarray) -> float:
    """Fraction of the body's in-plane boundary on the field-of-view edge (both (K, J, I) bool)."""
    inside = body & fov
    boundary = _inplane_boundary(inside)
    total = int(boundary.sum())
    return float((boundary & _inplane_boundary(fov)).sum() / total) if total else 0.0


def _radius(spacing: tuple[float, ...], mm: float) -> list[int]:
    return [max(1, int(round(mm / spacing[0]))), max(1, int(round(mm / spacing[1]))), 0]


def body_mask(image: sitk.Image) -> sitk.Image:
    """The body (uint8 0/1) of an LPS-ordered CT in HU whose padding is already air."""
    spacing = image.GetSpacing()
    mask = sitk.BinaryThreshold(image, BODY_THRESHOLD_HU, 1e9, 1, 0)
    mask = sitk.BinaryMorphologicalOpening(mask, _radius(spacing, OPENING_RADIUS_MM), sitk.sitkBall, 0, 1)
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    body = (sitk.GetArrayFromImage(labels) == 1).astype(np.uint8)
    if not body.any():
        raise InputError(None, f"no body found (no connected region above {BODY_THRESHOLD_HU:g} HU)")
    for k in np.flatnonzero(body.any(axis=(1, 2))):  # fill holes slice by slice: lungs are holes
        body[k] = sitk.GetArrayViewFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(body[k]), False, 1))
    out = sitk.GetImageFromArray(body)
    out.CopyInformation(image)
    return sitk.BinaryDilate(out, _radius(spacing, DILATION_RADIUS_MM), sitk.sitkBall, 0, 1)


def clean_ct(image: sitk.Image, use_body_mask: bool = True, path: str | None = None) -> CleanCT:
    """Padding -> air, HU statistics, optional body mask (see the module docstring)."""
    image = orient_lps(image)
    values = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    check_not_label_map(values, path)
    padding = values < AIR_HU
    fov = values >= PADDING_FOV_HU
    values = np.maximum(values, np.float32(AIR_HU))
    stats = dict(hu_statistics(values), padding_fraction=float(padding.mean()))
    edge = 0.0
    if use_body_mask:
        floor = sitk.GetImageFromArray(values)
        floor.CopyInformation(image)
        try:
            body = sitk.GetArrayFromImage(body_mask(floor)).astype(bool)
        except InputError as exc:
            raise InputError(path, exc.problem) from exc
        values[~body] = AIR_HU
        edge = fov_edge_fraction(body, fov)
    cleaned = sitk.GetImageFromArray(values)
    cleaned.CopyInformation(image)
    return CleanCT(cleaned, stats, use_body_mask, edge)


__all__ = ["BODY_THRESHOLD_HU", "CleanCT", "body_mask", "check_not_label_map", "clean_ct", "fov_edge_fraction",
           "hu_statistics"]
