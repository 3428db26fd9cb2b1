"""Turn a radiograph's pixel values into an estimate of its line-integral image.

The network was trained on DRR line integrals ``p = -ln(I / I0)`` (dimensionless; bright =
dense), normalised by :class:`~DiffuX2CTLib.io.xray.XRayNormalization`, which removes any affine
map ``a * p + b`` (a > 0). So every input only has to become an increasing affine function of
``p``. How its values relate to ``p`` is the *encoding*:

* ``line-integral``: the values already are ``a * p + b``, bright = dense (our DRR NRRDs and
  16-bit PNGs; a film whose grey levels are linear in log exposure). Taken as they are.
* ``intensity``: the values are proportional to the detector signal ``I`` (bright = more
  X-rays, a raw "linear" detector image). ``p = -ln(max(I, 1e-6 * I0) / I0)``, where ``I0``, the
  unattenuated intensity, is estimated as the 99.9th percentile of the positive values (the open
  field around the body). ``I0`` only adds a constant to ``p``, which the normalisation removes;
  it sets the clipping floor that keeps ``ln(0)`` out.
* ``display``: a film for viewing, bright = dense, whose grey levels ``v`` were gamma encoded
  from a line-integral image, ``v / full_scale = p_n ** (1 / gamma)``. Inverted as
  ``p_n = clip(v / full_scale, 0, 1) ** gamma`` with ``gamma = 1`` unless told otherwise: a
  viewer's PNG or JPEG export stores the windowed presentation values, which are linear in the
  processed (log) image; a monitor's gamma is applied on display, not in the file. Give the
  gamma (e.g. 2.2) for an image that was gamma encoded. ``full_scale`` is the pixel type's
  largest code (255, 65535, the DICOM value range's top) or, for float images, the image maximum.

With ``encoding=None`` (``auto``) a DICOM file's tags choose (``v`` = stored value after the
modality LUT, before any display inversion; ``lo``, ``hi`` = the range of ``v``):

==============================================  ==============================================
PixelIntensityRelationship (sign)                path
==============================================  ==============================================
LIN (+1: higher v = more X-rays)                 intensity, ``I = v``
LIN (-1)                                         intensity, ``I = hi - v``
LIN (no sign)                                    as +1, with a warning (detectors count photons)
LOG (+1)                                         ``p = hi - v``
LOG (-1)                                         ``p = v - lo``
LOG (no sign)                                    sign from the display (MONOCHROME2 -> -1)
DISP, or none (FOR PRESENTATION or no intent)    as displayed (bright = dense), no gamma
none, FOR PROCESSING                             as displayed, with a warning
==============================================  ==============================================

A negative RescaleSlope reverses the sign. Other formats default to ``line-integral`` (NRRD/MHA/
NIfTI: our DRRs; PNG/TIFF/JPEG: with a warning, except the 16-bit PNGs DiffuX2CT writes). An
explicit encoding overrides the DICOM tags (with a warning when they disagree).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..errors import InputError
from .xray import XRayImage

ENCODINGS = ("line-integral", "intensity", "display")
DEFAULT_DISPLAY_GAMMA = 1.0
#: Percentile of the positive detector signal taken as the unattenuated intensity I0.
I0_PERCENTILE = 99.9
#: Signals below this fraction of I0 are clipped before the logarithm (p <= ln(1e6) = 13.8).
I0_FLOOR = 1e-6


def _stored_values(xray: XRayImage) -> np.ndarray:
    """The values before the reader's display inversion (DICOM MONOCHROME1/INVERSE)."""
    md = xray.metadata
    pixels = xray.pixels.astype(np.float64)
    if md.get("inverted") and md.get("inversion_offset") is not None:
        return float(md["inversion_offset"]) - pixels
    return pixels


def _value_range(xray: XRayImage, values: np.ndarray) -> tuple[float, float]:
    md = xray.metadata
    if md.get("value_range"):
        lo, hi = (float(v) for v in md["value_range"])
        return min(lo, float(values.min())), max(hi, float(values.max()))
    return min(0.0, float(values.min())), max(float(md.get("full_scale") or 0.0), float(values.max()))


def _dicom_choice(md: dict[str, Any], warnings: list[str]) -> tuple[str, int | None]:
    """(path, sign) from the DICOM tags: path in {"LIN", "LOG", "displayed"}."""
    relationship = md.get("pixel_intensity_relationship")
    sign = md.get("pixel_intensity_relationship_sign")
    if relationship == "LIN":
        if sign is None:
            warnings.append("PixelIntensityRelationship LIN without a sign: assumed +1 (higher values = more X-rays)")
            sign = 1
        return "LIN", sign
    if relationship == "LOG":
        if sign is None:
            sign = 1 if md.get("inverted") else -1
            warnings.append(f"PixelIntensityRelationship LOG without a sign: assumed {sign:+d} from the display "
                            f"({md.get('photometric_interpretation')}: bright = dense)")
        return "LOG", sign
    if relationship not in (None, "DISP"):
        warnings.append(f"PixelIntensityRelationship {relationship!r} is not LIN, LOG or DISP: read as displayed")
    elif relationship is None and md.get("presentation_intent") == "FOR PROCESSING":
        warnings.append("FOR PROCESSING image without PixelIntensityRelationship: assumed the values are "
                        "log-like as displayed (bright = dense); use --xray-encoding intensity for raw linear data")
    return "displayed", sign


def estimate_line_integral(xray: XRayImage, encoding: str | None = None,
                           display_gamma: float = DEFAULT_DISPLAY_GAMMA) -> tuple[XRayImage, list[str]]:
    """The line-integral estimate of ``xray`` (see the module docstring) and the warnings made.

    ``metadata["encoding_path"]`` says which path was taken (e.g. ``"LIN -> -ln(I/I0)"``) and
    ``metadata["encoding"]`` the encoding (``line-integral``, ``intensity``, ``log``,
    ``displayed`` or ``display``). An image that already has an ``encoding_path`` is returned
    unchanged. Spacing, path, validity mask and the other metadata are kept.
    """
    md = xray.metadata
    if "encoding_path" in md:
        return xray, []
    if encoding not in (None, "auto", *ENCODINGS):
        raise InputError(xray.path, f"unknown X-ray encoding {encoding!r}; choose one of auto, {', '.join(ENCODINGS)}")
    if not (np.isfinite(display_gamma) and display_gamma > 0):
        raise InputError(xray.path, f"display gamma must be positive, got {display_gamma}")
    warnings: list[str] = []
    fmt = md.get("format")
    is_dicom = fmt == "dicom"
    slope_sign = int(md.get("rescale_slope_sign", 1) or 1)
    extra: dict[str, Any] = {}

    if encoding in (None, "auto"):
        if is_dicom:
            kind, sign = _dicom_choice(md, warnings)
        else:
            kind, sign = "line-integral", None
            if fmt in ("png", "tiff", "jpeg") and not md.get("written_by_diffux2ct"):
                warnings.append(f"{fmt.upper()} has no encoding tags: assumed its grey levels are line integrals "
                                "(bright = dense, linear); use --xray-encoding display or intensity if not")
    else:
        kind, sign = encoding, md.get("pixel_intensity_relationship_sign")
        relationship = md.get("pixel_intensity_relationship")
        implied = {"LIN": "intensity", "LOG": "line-integral", "DISP": "line-integral"}.get(relationship or "")
        if is_dicom and implied and implied != kind:
            warnings.append(f"--xray-encoding {kind} overrides the DICOM PixelIntensityRelationship {relationship}")

    if kind in ("LIN", "intensity"):
        if is_dicom:
            values = _stored_values(xray)
            sign = (sign or 1) * slope_sign
            lo, hi = _value_range(xray, values)
            if md.get("voi_applied"):
                warnings.append("a VOI was applied to linear data: the -ln is distorted; read it without --apply-voi")
        else:
            values, sign = xray.pixels.astype(np.float64), 1
            lo, hi = _value_range(xray, values)
        intensity = values if sign > 0 else hi - values
        positive = intensity[intensity > 0]
        if positive.size == 0:
            raise InputError(xray.path, "no positive detector signal, cannot take -ln; is it really an intensity "
                                        "(linear) image?")
        i0 = float(np.percentile(positive, I0_PERCENTILE))
        clipped = intensity < I0_FLOOR * i0
        pixels = -np.log(np.maximum(intensity, I0_FLOOR * i0) / i0)
        source = "LIN" if kind == "LIN" else "intensity"
        path = f"{source} -> -ln(I/I0)" if sign > 0 else f"{source} (sign -1) -> -ln((hi - v)/I0)"
        extra = {"encoding": "intensity", "i0_estimate": i0, "clipped_fraction": float(clipped.mean())}
        if clipped.mean() > 0.01:
            warnings.append(f"{100 * clipped.mean():.1f}% of the pixels have (almost) no signal and were clipped "
                            "before -ln")
    elif kind == "LOG":
        values = _stored_values(xray)
        lo, hi = _value_range(xray, values)
        sign = sign * slope_sign
        pixels = hi - values if sign > 0 else values - lo
        path = "LOG -> hi - v" if sign > 0 else "LOG (sign -1) -> v - lo"
        extra = {"encoding": "log"}
    elif kind == "display":
        full = float(md.get("value_range", [0, 0])[1] if is_dicom else md.get("full_scale") or xray.pixels.max())
        if is_dicom:
            lo = float(md["value_range"][0])
            unit = (xray.pixels.astype(np.float64) - lo) / max(full - lo, 1e-12)
        else:
            unit = xray.pixels.astype(np.float64) / max(full, 1e-12)
        pixels = np.clip(unit, 0.0, 1.0) ** float(display_gamma)
        path = f"display (gamma {display_gamma:g}) -> (v/{full:g})^{display_gamma:g}"
        extra = {"encoding": "display", "display_gamma": float(display_gamma), "full_scale": full}
    elif kind == "displayed":
        pixels = xray.pixels.astype(np.float64)
        relationship = md.get("pixel_intensity_relationship") or "no PixelIntensityRelationship"
        path = f"{relationship} -> as displayed (bright = dense)"
        extra = {"encoding": "displayed"}
    else:  # line-integral
        pixels = xray.pixels.astype(np.float64)
        path = "line-integral -> as is"
        extra = {"encoding": "line-integral"}

    metadata = {**md, **extra, "encoding_path": path}
    return replace(xray, pixels=pixels.astype(np.float32), metadata=metadata), warnings


__all__ = ["DEFAULT_DISPLAY_GAMMA", "ENCODINGS", "I0_FLOOR", "I0_PERCENTILE", "estimate_line_integral"]
