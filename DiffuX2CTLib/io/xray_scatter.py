"""Remove an assumed scatter component from a film whose intensity scale is known.

Scattered X-rays add a smooth signal ``S`` to the primary ``P`` that carries the line integrals:
the detector reads ``I = P + S`` and ``-ln(I / I0) = p - ln(1 + S / P)``, so dense anatomy
(small ``P``) loses contrast. With the usual convolution model (scatter = a broad Gaussian blur
of the primary, in total ``spr`` times the primary) the primary is the solution of

    P = I - spr * G_fwhm (P)        inside the exposed field,

found by fixed-point iteration (a contraction for ``spr < 1``; ``P`` is kept at or above
``MIN_PRIMARY_FRACTION * I`` so noise cannot drive it to zero). The ratio used is the assumed one
or, if smaller, what the film allows (:func:`scatter_bound`): the signal under the densest anatomy
cannot be less than the scatter. The blur runs on a copy
downsampled to about ``fwhm / 15`` pixels (the kernel is smooth), through SciPy.

This needs the detector signal up to a constant factor, i.e. line integrals in their natural
unit: the ``intensity`` path (DICOM ``LIN`` data or ``--xray-encoding intensity``). A log or
display-processed film is an unknown affine function of ``-ln I`` (its scale set by the
system's processing), so scatter cannot be removed from it; it is left alone with a warning.
The defaults, ``spr = 0.3`` and a 60 mm FWHM kernel, are a chest film taken with an
anti-scatter grid; ``spr = 0`` turns the step off. Measured effects are in
``benchmarks/RESULTS.md`` (the correction helps when the true ratio is 0.3-0.8, and costs a
little when it is 0.2).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..errors import InputError
from .xray import XRayImage

DEFAULT_SCATTER_TO_PRIMARY = 0.3
DEFAULT_SCATTER_FWHM_MM = 60.0
#: The corrected primary never drops below this fraction of the measured signal (at most ln 20 added).
MIN_PRIMARY_FRACTION = 0.05
#: Fixed-point iterations; the error shrinks by ``spr`` per iteration.
ITERATIONS = 10
#: Downsampled pixels per kernel FWHM for the scatter blur.
PIXELS_PER_FWHM = 15.0
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Percentile of I / G(I) over the field that bounds the scatter ratio, and the smoothing (mm) against noise.
BOUND_PERCENTILE = 0.0
#: Fraction of the bound used at most: at the bound itself the densest pixel would be all scatter.
BOUND_FRACTION = 0.5
NOISE_SIGMA_MM = 2.0


def check_scatter_settings(scatter_to_primary: float, fwhm_mm: float, path=None) -> None:
    """Raise :class:`InputError` unless ``0 <= spr < 1`` and the FWHM is positive and finite."""
    if not (math.isfinite(scatter_to_primary) and 0.0 <= scatter_to_primary < 1.0):
        raise InputError(path, f"scatter-to-primary ratio must be in [0, 1), got {scatter_to_primary!r}")
    if not (math.isfinite(fwhm_mm) and fwhm_mm > 0):
        raise InputError(path, f"scatter kernel FWHM must be a positive number of mm, got {fwhm_mm!r}")


def smooth_scatter_blur(image: np.ndarray, sigma_mm: float, spacing_mm: tuple[float, float]) -> np.ndarray:
    """Gaussian blur (standard deviation ``sigma_mm``) of a smooth-target image, computed at reduced size.

    The image is block-averaged to pixels of about ``sigma * FWHM_PER_SIGMA / PIXELS_PER_FWHM`` mm,
    blurred with :func:`scipy.ndimage.gaussian_filter` (mirror edges) and interpolated back
    (linear, pixel centres aligned). float64, same shape.
    """
    from scipy import ndimage

    rows, cols = image.shape
    target = sigma_mm * FWHM_PER_SIGMA / PIXELS_PER_FWHM
    factors = [max(1, int(target // s)) for s in spacing_mm]
    fr, fc = factors
    pr, pc = -rows % fr, -cols % fc
    padded = np.pad(np.asarray(image, np.float64), ((0, pr), (0, pc)), mode="symmetric")
    small = padded.reshape(padded.shape[0] // fr, fr, padded.shape[1] // fc, fc).mean(axis=(1, 3))
    small = ndimage.gaussian_filter(small, (sigma_mm / (spacing_mm[0] * fr), sigma_mm / (spacing_mm[1] * fc)),
                                    mode="reflect", truncate=4.0)
    if fr == fc == 1:
        return small
    # back to full size: linear interpolation with the blocks' centres aligned (grid_mode)
    full = ndimage.zoom(small, (fr, fc), order=1, mode="reflect", grid_mode=True)
    return full[:rows, :cols]


def _relative_signal(line_integrals: np.ndarray, field: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``(p, inside, I, reference)``: the line integrals as float64, the field mask, the relative
    signal ``I = exp(-(p - reference))`` (<= 1 inside the field, 0 outside) and ``reference``,
    the smallest line integral in the field (0 for an empty field)."""
    p = np.asarray(line_integrals, np.float64)
    inside = np.ones(p.shape, bool) if field is None else np.asarray(field, bool)
    reference = float(np.min(p[inside])) if inside.any() else 0.0
    return p, inside, np.where(inside, np.exp(-(p - reference)), 0.0), reference


def scatter_bound(line_integrals: np.ndarray, spacing_mm: tuple[float, float], fwhm_mm: float,
                  field: np.ndarray | None = None) -> float:
    """About the largest scatter-to-primary ratio the film allows: a guard against over-correction.

    With ``I = P + s G(P)`` and ``P >= 0``, ``I / G(I) >= s G(P) / (G(P) + s G(G(P)))``, which is
    about ``s / (1 + s)`` where ``G(P)`` is smooth, with near equality under the densest anatomy,
    where scatter dominates. So ``s`` is about at most ``q / (1 - q)``, ``q`` the
    ``BOUND_PERCENTILE`` percentile of ``I / G(I)`` over the field (``I`` lightly smoothed against
    noise). A film without scatter gives a small value (0.01-0.2 in our tests, depending on how
    dense its densest anatomy is); under narrow dense structures it can fall below the true ratio,
    which only makes the correction milder.
    """
    _, inside, measured, _ = _relative_signal(line_integrals, field)
    if not inside.any():
        return 0.0
    smooth = smooth_scatter_blur(measured, NOISE_SIGMA_MM, spacing_mm)
    blurred = smooth_scatter_blur(measured, fwhm_mm / FWHM_PER_SIGMA, spacing_mm)
    ratio = smooth[inside] / np.maximum(blurred[inside], np.finfo(np.float64).tiny)
    q = float(np.clip(np.percentile(ratio, BOUND_PERCENTILE), 0.0, 0.99))
    return q / (1.0 - q)


def remove_scatter(line_integrals: np.ndarray, spacing_mm: tuple[float, float], scatter_to_primary: float,
                   fwhm_mm: float, field: np.ndarray | None = None) -> np.ndarray:
    """Line integrals with the modelled scatter removed (module docstring); float64, same shape.

    ``line_integrals`` are ``-ln(I / I0)`` in natural units; ``field`` (bool, True = exposed)
    limits where scatter arises and is removed (pixels outside keep their values).
    """
    check_scatter_settings(scatter_to_primary, fwhm_mm)
    if scatter_to_primary == 0.0:
        return np.array(line_integrals, np.float64)
    p, inside, measured, reference = _relative_signal(line_integrals, field)
    sigma = fwhm_mm / FWHM_PER_SIGMA
    primary = measured / (1.0 + scatter_to_primary)
    floor = MIN_PRIMARY_FRACTION * measured
    for _ in range(ITERATIONS):
        scatter = scatter_to_primary * smooth_scatter_blur(primary, sigma, spacing_mm)
        primary = np.maximum(measured - scatter, floor)
    corrected = reference - np.log(np.maximum(primary, np.finfo(np.float64).tiny))
    return np.where(inside, corrected, p)


def correct_scatter(xray: XRayImage, scatter_to_primary: float = DEFAULT_SCATTER_TO_PRIMARY,
                    fwhm_mm: float = DEFAULT_SCATTER_FWHM_MM) -> tuple[XRayImage, list[str]]:
    """Apply :func:`remove_scatter` to a line-integral estimate from the ``intensity`` path.

    Other encodings are returned unchanged, with a warning that scatter was not removed (unless
    ``scatter_to_primary`` is 0). ``metadata["scatter_correction"]`` records what was done.
    Needs the film's pixel spacing (the kernel is in mm); without it the step is skipped with a
    warning.
    """
    check_scatter_settings(scatter_to_primary, fwhm_mm, xray.path)
    md = xray.metadata
    if scatter_to_primary == 0.0:
        return replace(xray, metadata={**md, "scatter_correction": "off"}), []
    if md.get("encoding") != "intensity":
        kind = md.get("encoding") or "unknown"
        return (replace(xray, metadata={**md, "scatter_correction": f"not possible ({kind} data)"}),
                [f"scatter not removed: a {kind} image has no known scale of -ln(I) (only linear detector "
                 "data can be corrected)"])
    if xray.spacing_mm is None:
        return (replace(xray, metadata={**md, "scatter_correction": "skipped (no pixel spacing)"}),
                ["scatter not removed: the film has no pixel spacing for the scatter kernel"])
    bound = scatter_bound(xray.pixels, xray.spacing_mm, fwhm_mm, xray.valid_mask)
    used = min(scatter_to_primary, BOUND_FRACTION * bound)
    corrected = remove_scatter(xray.pixels, xray.spacing_mm, used, fwhm_mm, xray.valid_mask)
    note = f"scatter-to-primary {used:.2g}, {fwhm_mm:g} mm FWHM kernel"
    if used < scatter_to_primary:
        note += (f" (less than the assumed {scatter_to_primary:g}: the film allows at most {bound:.2g}, "
                 f"{BOUND_FRACTION:g} of it is used)")
    return (replace(xray, pixels=corrected.astype(np.float32), metadata={**md, "scatter_correction": note}),
            [f"scatter removed assuming {note} (--scatter-to-primary 0 to turn off)"])


__all__ = [
    "DEFAULT_SCATTER_FWHM_MM",
    "DEFAULT_SCATTER_TO_PRIMARY",
    "check_scatter_settings",
    "correct_scatter",
    "remove_scatter",
    "smooth_scatter_blur",
]
