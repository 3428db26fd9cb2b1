"""Read one projection radiograph from a DICOM file and record the tags that say how to use it.

Only projection radiographs are accepted: Modality DX, CR, RF or XA (single frame), or a DX/CR/
XA/XRF SOP class. Secondary captures (Modality OT/SC or a Secondary Capture SOP class) are read
with a warning (their pixels may be a screenshot). Everything else (CT, MR, NM, PT, US, MG, IO,
PX, RTDOSE, RTIMAGE, SEG, SR, ...) is refused with a one-line :class:`InputError` naming the
modality. A malformed file (bad value representations, unreadable tags) is an ``InputError`` too.

The returned :class:`~DiffuX2CTLib.io.xray.XRayImage` holds the values after the modality LUT
(and the VOI LUT/window when asked), inverted when displayed inverted (MONOCHROME1 or
Presentation LUT Shape INVERSE) so that bright = dense **as displayed**. How those values relate
to the X-ray intensity (PixelIntensityRelationship LIN/LOG/DISP and its sign) is recorded, not
applied: :mod:`DiffuX2CTLib.io.xray_encoding` turns them into line integrals. Spacing and source
distances are recorded for :mod:`DiffuX2CTLib.io.xray_geometry`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .xray import XRayImage, _check_spacing

#: Modalities read as projection radiographs.
ACCEPTED_MODALITIES = ("DX", "CR", "RF", "XA")
#: Modalities read with a warning: a secondary capture may be a screenshot of a radiograph.
SECONDARY_CAPTURE_MODALITIES = ("OT", "SC")
_MODALITY_NAMES = {
    "CT": "computed tomography", "MR": "magnetic resonance", "NM": "nuclear medicine", "PT": "PET",
    "US": "ultrasound", "MG": "mammography", "IO": "intra-oral dental radiograph",
    "PX": "panoramic dental radiograph", "RTDOSE": "radiotherapy dose", "RTIMAGE": "radiotherapy portal image",
    "RTSTRUCT": "radiotherapy structures", "RTPLAN": "radiotherapy plan", "SEG": "segmentation",
    "SR": "structured report", "KO": "key object selection", "PR": "presentation state", "DOC": "document",
    "ECG": "electrocardiogram", "XC": "external camera photograph", "OP": "ophthalmic photograph",
}
#: SOP classes of projection radiographs (CR, DX, XA and XRF, classic and enhanced).
PROJECTION_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX",
    "1.2.840.10008.5.1.4.1.1.12.1": "XA",
    "1.2.840.10008.5.1.4.1.1.12.1.1": "XA",
    "1.2.840.10008.5.1.4.1.1.12.2": "RF",
    "1.2.840.10008.5.1.4.1.1.12.2.1": "RF",
}
_FOR_PROCESSING_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.1.1.1",)
_SECONDARY_CAPTURE_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
_MALFORMED = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError)


def read_dicom_xray(p: Path, apply_voi: bool, preamble: bool, voi_on_linear_data: bool = True) -> XRayImage:
    """Read ``p`` (see the module docstring). ``voi_on_linear_data=False`` leaves out the VOI of
    an image whose PixelIntensityRelationship is LIN (a window would break the linearity)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(p, force=not preamble)
    except (InvalidDicomError, OSError, EOFError, *_MALFORMED) as exc:
        raise InputError(p, f"is not a readable DICOM file ({type(exc).__name__})") from exc
    return _interpret_checked(ds, p, apply_voi, preamble, voi_on_linear_data)


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__"):
        value = "\\".join(str(v) for v in value)
    return str(value).strip()


def _check_kind(ds: Any, p: Path, warnings: list[str]) -> tuple[str, str]:
    """Refuse what is not a projection radiograph; returns (modality, SOP class UID)."""
    from pydicom.uid import UID

    modality = _text(ds, "Modality").upper()
    sop = _text(ds, "SOPClassUID")
    meta = getattr(ds, "file_meta", None)
    if not sop and meta is not None:
        sop = _text(meta, "MediaStorageSOPClassUID")
    sop_name = UID(sop).name if sop else ""
    known_other = bool(sop) and sop_name != sop and "Storage" in sop_name and sop not in PROJECTION_SOP_CLASSES \
        and not sop.startswith(_SECONDARY_CAPTURE_SOP_PREFIX)
    if modality in ACCEPTED_MODALITIES:
        if known_other:
            raise InputError(p, f"Modality {modality} but SOP class {sop_name!r}, which is not a projection radiograph")
        return modality, sop
    if modality in SECONDARY_CAPTURE_MODALITIES or (not modality and sop.startswith(_SECONDARY_CAPTURE_SOP_PREFIX)):
        warnings.append(f"secondary capture (Modality {modality or 'missing'}): read as a radiograph, but its "
                        "pixels may be a screenshot with display processing")
        return modality, sop
    if not modality:
        if known_other:
            raise InputError(p, f"SOP class {sop_name!r} is not a projection radiograph (need DX, CR, RF or XA)")
        if sop not in PROJECTION_SOP_CLASSES:
            warnings.append("DICOM has no Modality and no radiograph SOP class: read as a radiograph")
        return modality, sop
    name = _MODALITY_NAMES.get(modality, "not a projection radiograph")
    raise InputError(p, f"Modality {modality} ({name}) is not an X-ray projection radiograph; give a DX, CR, RF "
                        "or XA image")


def _int(ds: Any, keyword: str, p: Path, default: int) -> int:
    """An integer tag (``default`` when absent or empty); a bad value names the tag."""
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise InputError(p, f"malformed DICOM: {keyword} must be an integer, got {value!r}") from exc


def _positive(ds: Any, keyword: str, p: Path, count: int = 1) -> list[float] | None:
    """Optional positive number(s) of a tag, or ``None``; a bad value names the tag."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    items = list(value) if (not isinstance(value, (str, bytes)) and hasattr(value, "__iter__")) else [value]
    try:
        numbers = [float(v) for v in items]
    except (TypeError, ValueError) as exc:
        raise InputError(p, f"{keyword} must be numeric, got {value!r}") from exc
    if len(numbers) != count or not all(math.isfinite(v) and v > 0 for v in numbers):
        raise InputError(p, f"{keyword} must be {count} positive number(s), got {numbers}")
    return numbers


def xray_from_dataset(ds: Any, label: str | os.PathLike, apply_voi: bool = False,
                      voi_on_linear_data: bool = False) -> XRayImage:
    """Interpret an in-memory pydicom data set exactly as :func:`read_dicom_xray` reads a file
    (``label`` names it in messages). Used by the training augmentation, whose films never touch
    the disk but must be read the way a user's file is."""
    return _interpret_checked(ds, Path(label), apply_voi, True, voi_on_linear_data)


def _interpret_checked(ds: Any, p: Path, apply_voi: bool, preamble: bool, voi_on_linear_data: bool) -> XRayImage:
    """:func:`_interpret`, a malformed data set reported as an :class:`InputError` naming ``p``."""
    try:
        return _interpret(ds, p, apply_voi, preamble, voi_on_linear_data)
    except InputError:
        raise
    except _MALFORMED as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        raise InputError(p, f"malformed DICOM ({type(exc).__name__}: {first[:160]})") from exc


def _interpret(ds: Any, p: Path, apply_voi: bool, preamble: bool, voi_on_linear_data: bool) -> XRayImage:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    warnings: list[str] = []
    modality, sop = _check_kind(ds, p, warnings)
    if "PixelData" not in ds:
        raise InputError(p, "DICOM file has no pixel data" if preamble else "is not a supported image or DICOM file")
    photometric = _text(ds, "PhotometricInterpretation").upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(
            p, f"unsupported DICOM photometric interpretation {photometric or 'missing'!r} (need MONOCHROME1/2)"
        )
    if _int(ds, "SamplesPerPixel", p, 1) != 1:
        raise InputError(p, f"DICOM has {ds.SamplesPerPixel} samples per pixel; a grayscale radiograph has 1")
    frames = _int(ds, "NumberOfFrames", p, 1)
    if frames > 1:
        raise InputError(p, f"DICOM is multi-frame ({frames} frames); give a single radiograph")
    if _int(ds, "Rows", p, 0) == 0 or _int(ds, "Columns", p, 0) == 0:
        raise InputError(p, "image is empty (Rows or Columns is 0)")
    try:
        stored = ds.pixel_array
    except Exception as exc:  # decoders raise many types
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise InputError(p, f"cannot decode DICOM pixel data (transfer syntax {syntax}): {exc}") from exc
    if stored.ndim != 2:
        raise InputError(p, f"DICOM pixel data has shape {stored.shape}; an X-ray must be one 2D frame")

    relationship = _text(ds, "PixelIntensityRelationship").upper() or None
    sign = ds.get("PixelIntensityRelationshipSign")
    if sign is not None and sign != "":
        try:
            sign = int(sign)
        except (TypeError, ValueError) as exc:
            raise InputError(p, f"PixelIntensityRelationshipSign must be +1 or -1, got {sign!r}") from exc
        if sign not in (1, -1):
            raise InputError(p, f"PixelIntensityRelationshipSign must be +1 or -1, got {sign}")
    else:
        sign = None
    intent = _text(ds, "PresentationIntentType").upper() or None
    if intent is None and sop in _FOR_PROCESSING_SOP_CLASSES:
        intent = "FOR PROCESSING"

    values = apply_modality_lut(stored, ds).astype(np.float64)
    lo, hi = _modality_range(ds)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    voi, voi_skipped = None, None
    has_lut = bool(ds.get("VOILUTSequence"))
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    if apply_voi and (has_lut or has_window):
        if relationship == "LIN" and not voi_on_linear_data:
            voi_skipped = "PixelIntensityRelationship LIN: a VOI would break the linearity"
            warnings.append(f"VOI {'LUT' if has_lut else 'window'} not applied to linear (LIN) data")
        else:
            try:
                values = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise InputError(p, f"invalid DICOM VOI LUT or window: {exc}") from exc
            if has_lut:
                voi = "lut"
                lo, hi = 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
            else:
                voi = "window"  # apply_windowing maps to the modality output range [lo, hi]
    plut = _text(ds, "PresentationLUTShape").upper() or None
    # DX pairs MONOCHROME1 with Presentation LUT Shape INVERSE (one inversion, not two); elsewhere
    # INVERSE on MONOCHROME2 means the image is displayed inverted.
    inverted = photometric == "MONOCHROME1" or plut == "INVERSE"
    if inverted:
        values = (lo + hi) - values  # low values are displayed white = dense

    metadata: dict[str, Any] = {
        "format": "dicom",
        "modality": _text(ds, "Modality"),
        "sop_class_uid": sop,
        "photometric_interpretation": photometric,
        "presentation_lut_shape": plut,
        "presentation_intent": intent,
        "pixel_intensity_relationship": relationship,
        "pixel_intensity_relationship_sign": sign,
        "rescale_slope_sign": -1 if slope < 0 else 1,
        "view_position": _text(ds, "ViewPosition"),
        "patient_orientation": [str(v).strip() for v in (ds.get("PatientOrientation") or [])],
        "burned_in_annotation": _text(ds, "BurnedInAnnotation").upper() or None,
        "voi_applied": voi,
        "voi_skipped": voi_skipped,
        "inverted": inverted,
        "value_range": [float(lo), float(hi)],
        "inversion_offset": float(lo + hi) if inverted else None,
        "rescale": (slope, float(ds.get("RescaleIntercept", 0) or 0)),
        "warnings": warnings,
    }
    for key, keyword, count in (
        ("imager_pixel_spacing", "ImagerPixelSpacing", 2),
        ("pixel_spacing", "PixelSpacing", 2),
        ("estimated_magnification", "EstimatedRadiographicMagnificationFactor", 1),
        ("source_to_detector_mm", "DistanceSourceToDetector", 1),
        ("source_to_patient_mm", "DistanceSourceToPatient", 1),
    ):
        numbers = _positive(ds, keyword, p, count)
        metadata[key] = (numbers if count > 1 else numbers[0]) if numbers else None
    metadata["pixel_spacing_calibration_type"] = _text(ds, "PixelSpacingCalibrationType").upper() or None
    spacing, source = _dicom_spacing(ds, p)
    metadata["spacing_source"] = source
    return XRayImage(values.astype(np.float32), spacing, str(p), metadata)


def _modality_range(ds: Any) -> tuple[float, float]:
    """Range of values after the modality LUT (the range pydicom's windowing maps onto)."""
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        a, b = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
        lo, hi = min(a, b), max(a, b)
    return lo, hi


def _dicom_spacing(ds: Any, p: Path) -> tuple[tuple[float, float] | None, str | None]:
    """Detector-plane spacing (row, col) and which tag it came from."""
    if ds.get("ImagerPixelSpacing") is not None:
        return _check_spacing(ds.ImagerPixelSpacing, str(p), "ImagerPixelSpacing"), "ImagerPixelSpacing"
    if ds.get("PixelSpacing") is not None:
        spacing = _check_spacing(ds.PixelSpacing, str(p), "PixelSpacing")
        factor = ds.get("EstimatedRadiographicMagnificationFactor")
        if factor is not None:
            factor = float(factor)
            if not (math.isfinite(factor) and factor > 0):
                raise InputError(p, f"EstimatedRadiographicMagnificationFactor must be positive, got {factor}")
            # PixelSpacing is at the patient plane; the detector sees it magnified.
            return (spacing[0] * factor, spacing[1] * factor), "PixelSpacing*EstimatedRadiographicMagnificationFactor"
        return spacing, "PixelSpacing (assumed detector plane)"
    return None, None
