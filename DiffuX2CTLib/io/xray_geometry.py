"""Bring a film into the model's view convention and scale (see ``geometry/biplanar.py``).

**Orientation.** The model's AP image has columns towards the patient's left and rows towards
the feet (DICOM PatientOrientation ``L\\F``); its lateral image, a left lateral, has columns
towards posterior and rows towards the feet (``P\\F``). A film's PatientOrientation (row
direction, column direction; the first letter of each counts) says how it is stored: a film
stored transposed is transposed, a mirrored one (e.g. a PA film stored as seen from the source,
``R\\F``, or a right lateral displayed ``A\\F``) is flipped, and each change is a warning. A
film whose ViewPosition or PatientOrientation says it is the other view (a lateral given as
``--ap``), or an oblique, is refused. Without PatientOrientation the film is assumed to be
displayed in the model's convention (a warning for DICOM). A PA film, or a right lateral, is used
for the model's AP (left lateral) view with a warning: the rays are the same lines, only the
perspective differs slightly.

**Scale at the isocentre.** With detector pixel pitch ``s_det`` and film magnification
``M_film = SID / SOD`` (EstimatedRadiographicMagnificationFactor, else DistanceSourceToDetector
/ DistanceSourceToPatient), a film pixel spans ``s_iso = s_det / M_film`` mm at the isocentre.
The model's detector pixel spans ``pitch / M_model`` there (``M_model = SDD / SAD`` of the
checkpoint geometry). The film is resampled so that both agree at the isocentre, i.e. it is given
the equivalent pitch ``s_eq = s_iso * M_model`` on the model's detector plane. Sources of
``s_det`` / ``s_iso``, in order: ImagerPixelSpacing (detector plane) with a known magnification;
a PixelSpacing calibrated at the patient (PixelSpacingCalibrationType, or different from
ImagerPixelSpacing, or with an EstimatedRadiographicMagnificationFactor), taken as ``s_iso``;
ImagerPixelSpacing or an uncalibrated PixelSpacing with the model's magnification assumed (a
warning); the spacing of a NRRD/MHA/NIfTI or a DiffuX2CT PNG, which is at the model's detector
plane (our DRRs); the user's ``pixel_spacing_mm`` or ``field_of_view_mm`` (detector plane). A
film without any is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from .xray import XRayImage

if TYPE_CHECKING:  # pragma: no cover
    from ..geometry.biplanar import BiplanarGeometry

#: Model convention per view: (direction of increasing columns, of increasing rows).
MODEL_ORIENTATION = {"ap": ("L", "F"), "lateral": ("P", "F")}
_AXIS = {"L": "LR", "R": "LR", "A": "AP", "P": "AP", "H": "HF", "F": "HF"}
_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}
FRONTAL_VIEW_POSITIONS = ("AP", "PA")
LATERAL_VIEW_POSITIONS = ("LL", "RL", "LATERAL", "LAT", "LLAT", "RLAT")
OBLIQUE_VIEW_POSITIONS = ("RAO", "LAO", "RPO", "LPO", "RLO", "LLO", "OBL", "OBLIQUE")
#: A film magnification outside this range is refused as implausible.
MAGNIFICATION_RANGE = (1.0, 5.0)


def _family(view: str) -> str:
    return "frontal" if view == "ap" else "lateral"


def orient_to_view(xray: XRayImage, view: str) -> tuple[XRayImage, list[str]]:
    """``xray`` transposed/flipped into the model's ``view`` convention, and the warnings made.

    ``metadata["orientation_applied"]`` lists the operations (``transpose``, ``flip columns``,
    ``flip rows``) in the order applied. Raises :class:`InputError` for the wrong view.
    """
    if view not in MODEL_ORIENTATION:
        raise InputError(xray.path, f"unknown view {view!r}; expected one of {sorted(MODEL_ORIENTATION)}")
    md = xray.metadata
    if "orientation_applied" in md:
        return xray, []
    warnings: list[str] = []
    wanted = _family(view)
    position = str(md.get("view_position") or "").strip().upper()
    if position in OBLIQUE_VIEW_POSITIONS:
        raise InputError(xray.path, f"ViewPosition {position} is an oblique view; the model needs an AP and a "
                                    "lateral view")
    if position in FRONTAL_VIEW_POSITIONS + LATERAL_VIEW_POSITIONS:
        family = "frontal" if position in FRONTAL_VIEW_POSITIONS else "lateral"
        if family != wanted:
            raise InputError(xray.path, f"ViewPosition {position} is a {family} view; it cannot be the {view} view")
    elif position:
        warnings.append(f"ViewPosition {position!r} not recognised: assumed it is the {view} view")

    pixels, mask, spacing = xray.pixels, xray.valid_mask, xray.spacing_mm
    ops: list[str] = []
    orientation = [str(v).strip().upper() for v in (md.get("patient_orientation") or [])]
    letters = [o[:1] for o in orientation]
    shown, shown_letters = "\\".join(orientation), "\\".join(letters)
    model = "\\".join(MODEL_ORIENTATION[view])
    if len(orientation) == 2 and all(letter in _AXIS for letter in letters):
        if any(len(o) > 1 for o in orientation):
            warnings.append(f"PatientOrientation {shown} is oblique: only its first letters "
                            f"{shown_letters} are used")
        axes = {_AXIS[letters[0]], _AXIS[letters[1]]}
        family = {frozenset(("LR", "HF")): "frontal", frozenset(("AP", "HF")): "lateral"}.get(frozenset(axes))
        if family is None:
            raise InputError(xray.path, f"PatientOrientation {shown} is not a frontal or lateral "
                                        "projection")
        if family != wanted:
            raise InputError(xray.path, f"PatientOrientation {shown} describes a {family} view; "
                                        f"it cannot be the {view} view")
        row_dir, col_dir = letters
        target_row, target_col = MODEL_ORIENTATION[view]
        if _AXIS[row_dir] == "HF":
            pixels, row_dir, col_dir = pixels.T, col_dir, row_dir
            mask = None if mask is None else mask.T
            spacing = None if spacing is None else (spacing[1], spacing[0])
            ops.append("transpose")
        if row_dir != target_row:
            pixels = pixels[:, ::-1]
            mask = None if mask is None else mask[:, ::-1]
            ops.append("flip columns")
        if col_dir != target_col:
            pixels = pixels[::-1, :]
            mask = None if mask is None else mask[::-1, :]
            ops.append("flip rows")
        if ops:
            warnings.append(f"PatientOrientation {shown}: {', '.join(ops)} to the model's {view} "
                            f"convention ({model})")
    else:
        if orientation:
            warnings.append(f"PatientOrientation {shown} not understood: ignored")
        if md.get("format") == "dicom":
            layout = ("patient's right on the image left, head at the top" if view == "ap"
                      else "anterior on the image left, head at the top")
            warnings.append(f"no usable PatientOrientation: assumed the film is displayed as the model's {view} view "
                            f"({layout})")
    if position == "PA":
        warnings.append("a PA film is used as the AP view: same rays, but the source was behind the patient, so "
                        "the perspective (front/back magnification) differs slightly")
    elif position == "RL":
        warnings.append("a right lateral is used as the model's left lateral: same rays, but the source was on the "
                        "patient's left, so the perspective differs slightly")
    metadata = {**md, "orientation_applied": ops}
    oriented = replace(xray, pixels=np.ascontiguousarray(pixels), spacing_mm=spacing, metadata=metadata,
                       valid_mask=None if mask is None else np.ascontiguousarray(mask))
    return oriented, warnings


@dataclass(frozen=True)
class FilmScale:
    """How a film maps onto the model's detector.

    Attributes:
        isocenter_spacing_mm: film pixel size ``(row, col)`` at the isocentre, mm.
        model_detector_spacing_mm: the equivalent pitch on the model's detector plane,
            ``isocenter_spacing_mm * geometry.magnification``.
        magnification: the film's SID/SOD used (``None`` when the spacing was already at the patient).
        source: the tags or options it came from.
    """

    isocenter_spacing_mm: tuple[float, float]
    model_detector_spacing_mm: tuple[float, float]
    magnification: float | None
    source: str


def _film_magnification(md: dict[str, Any], path: str | None, warnings: list[str]) -> tuple[float | None, str]:
    ermf = md.get("estimated_magnification")
    sid, sod = md.get("source_to_detector_mm"), md.get("source_to_patient_mm")
    ratio = None
    if sid and sod:
        if sod >= sid:
            raise InputError(path, f"DistanceSourceToPatient ({sod:g} mm) must be less than DistanceSourceToDetector "
                                   f"({sid:g} mm)")
        ratio = sid / sod
    if ermf:
        if not MAGNIFICATION_RANGE[0] <= ermf <= MAGNIFICATION_RANGE[1]:
            raise InputError(path, f"EstimatedRadiographicMagnificationFactor {ermf:g} is not a plausible "
                                   f"magnification ({MAGNIFICATION_RANGE[0]:g} to {MAGNIFICATION_RANGE[1]:g})")
        if ratio and abs(ratio / ermf - 1) > 0.02:
            warnings.append(f"EstimatedRadiographicMagnificationFactor {ermf:g} differs from "
                            f"DistanceSourceToDetector/DistanceSourceToPatient {ratio:.4g}: used the former")
        return float(ermf), "EstimatedRadiographicMagnificationFactor"
    if ratio:
        if ratio > MAGNIFICATION_RANGE[1]:
            raise InputError(path, f"DistanceSourceToDetector/DistanceSourceToPatient = {ratio:.3g} is not a "
                                   "plausible magnification")
        return ratio, "DistanceSourceToDetector/DistanceSourceToPatient"
    return None, ""


def film_scale(xray: XRayImage, geometry: "BiplanarGeometry", pixel_spacing_mm: tuple[float, float] | None = None,
               field_of_view_mm: tuple[float, ...] | None = None) -> tuple[FilmScale, list[str]]:
    """The film's pixel size at the isocentre and on the model's detector (module docstring).

    ``pixel_spacing_mm`` (row, col, mm at the detector) or ``field_of_view_mm`` (width[, height]
    of the whole image at the detector, mm; square pixels when the height is left out) are used
    only for a film whose file has no spacing. Raises :class:`InputError` when no spacing is known.
    """
    md, path = xray.metadata, xray.path
    rows, cols = xray.shape
    model_m = geometry.magnification
    warnings: list[str] = []
    magnification, m_source = _film_magnification(md, path, warnings)
    assumed = f"the checkpoint geometry's SDD/SAD = {model_m:.4g}"

    def at_detector(spacing, what: str) -> tuple[tuple[float, float], float | None, str]:
        m = magnification
        if m is None:
            warnings.append(f"film magnification unknown (no EstimatedRadiographicMagnificationFactor or "
                            f"DistanceSourceToDetector/DistanceSourceToPatient): assumed {assumed}")
            m = model_m
        label = f"{what} / {m_source or 'assumed magnification'}"
        return (spacing[0] / m, spacing[1] / m), m, label

    iso = None
    if md.get("format") == "dicom":
        ips, ps = md.get("imager_pixel_spacing"), md.get("pixel_spacing")
        calibration = md.get("pixel_spacing_calibration_type")
        ps_at_patient = ps is not None and (
            calibration is not None or md.get("estimated_magnification") is not None
            or (ips is not None and any(abs(a / b - 1) > 0.01 for a, b in zip(ps, ips))))
        if ips is not None and magnification is not None:
            iso, used_m, source = at_detector(ips, "ImagerPixelSpacing")
        elif ps_at_patient:
            iso, used_m = (float(ps[0]), float(ps[1])), None
            source = f"PixelSpacing at the patient ({calibration or 'calibrated'})"
        elif ips is not None:
            iso, used_m, source = at_detector(ips, "ImagerPixelSpacing")
        elif ps is not None:
            warnings.append("PixelSpacing without PixelSpacingCalibrationType or ImagerPixelSpacing: assumed it is "
                            "the detector pixel pitch")
            iso, used_m, source = at_detector(ps, "PixelSpacing")
    elif xray.spacing_mm is not None:
        # NRRD/MHA/NIfTI and DiffuX2CT PNGs: spacing on the detector plane of the model geometry (our DRRs)
        iso, used_m = (xray.spacing_mm[0] / model_m, xray.spacing_mm[1] / model_m), model_m
        source = f"{md.get('spacing_source') or 'image spacing'} (at the model's detector plane)"
    if iso is not None and (pixel_spacing_mm is not None or field_of_view_mm is not None):
        warnings.append("the file has its own pixel spacing: --pixel-spacing/--field-of-view-mm ignored")
    if iso is None:
        if pixel_spacing_mm is not None:
            spacing = tuple(float(v) for v in pixel_spacing_mm)
            iso, used_m, source = at_detector(spacing, "--pixel-spacing")
        elif field_of_view_mm is not None:
            width = float(field_of_view_mm[0])
            height = float(field_of_view_mm[1]) if len(field_of_view_mm) > 1 and field_of_view_mm[1] else None
            spacing = (height / rows if height else width / cols, width / cols)
            iso, used_m, source = at_detector(spacing, "--field-of-view-mm")
        else:
            raise InputError(path, "has no pixel spacing (no ImagerPixelSpacing or PixelSpacing); give "
                                   "--pixel-spacing ROW,COL (mm at the detector) or --field-of-view-mm W[,H]")
        warnings.append(f"pixel spacing from {source.split(' / ')[0]}: {spacing[0]:.4g} x {spacing[1]:.4g} mm at the "
                        "detector")
    iso = (float(iso[0]), float(iso[1]))
    if not all(math.isfinite(v) and v > 0 for v in iso):
        raise InputError(path, f"pixel size at the isocentre must be positive, got {iso}")
    equivalent = (iso[0] * model_m, iso[1] * model_m)
    return FilmScale(iso, equivalent, used_m, source), warnings


__all__ = ["FilmScale", "MODEL_ORIENTATION", "film_scale", "orient_to_view"]
