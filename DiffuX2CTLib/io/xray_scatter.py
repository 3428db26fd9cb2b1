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

The step works on the detector signal up to a constant factor, i.e. on line integrals in
their natural unit (nepers). Linear detector data (DICOM ``LIN``, ``--xray-encoding intensity``)
give that directly. A log or display-processed film stores an unknown affine function of
``-ln I``: its offset does not matter (a constant factor of ``I``), but its scale does. That
scale is estimated (:func:`estimate_log_scale`) from a body prior: the scale at which the
corrected film spans ``mu_water * WATER_EQUIVALENT_RANGE_MM[view]`` nepers between the 0.5th and
99.5th percentiles of its field, i.e. at which its densest part lies behind as much water as in
a typical adult chest or abdomen. The prior was measured on the five training scans of the
learning benchmark (250 mm AP, 325 mm lateral; the scans ranged 204-271 mm and 308-350 mm).
The defaults, ``spr = 0.3`` and a 60 mm FWHM kernel, are a chest film taken with an
anti-scatter grid; ``spr = 0`` turns the step off. Measured effects are in
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..errors import InputError
from .intensity import MU_WATER_PER_MM
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
#: Percentile of I / G(I) over the field that bounds the scatter ratio (not the minimum, which a
#: few pixels under a narrow dense structure, a lead marker or noise would set), and the smoothing
#: (mm) against noise.
BOUND_PERCENTILE = 0.5
#: Fraction of the bound used at most: at the bound itself the densest pixel would be all scatter.
BOUND_FRACTION = 0.5
NOISE_SIGMA_MM = 2.0
#: Water-equivalent thickness (mm) behind the densest part of a film's field, by view: the prior
#: that sets the scale of log and display films (module docstring).
WATER_EQUIVALENT_RANGE_MM = {"ap": 250.0, "lateral": 325.0}
#: Percentiles of the field whose difference is compared with the prior.
RANGE_PERCENTILES = (0.5, 99.5)
#: The scale is estimated on a copy block-averaged to pixels of at least this size (mm).
ESTIMATE_PIXEL_MM = 2.0
#: At most this many rescalings of the scale estimate, which stops when the range is within
#: ``ESTIMATE_TOLERANCE`` of the prior; fixed-point iterations of the scatter removal inside it.
ESTIMATE_STEPS = 8
ESTIMATE_TOLERANCE = 0.005
ESTIMATE_ITERATIONS = 6
#: Encodings whose scale of ``-ln I`` is unknown and estimated.
ESTIMATED_SCALE_ENCODINGS = ("log", "display", "displayed", "line-integral")


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
    fr, fc = (max(1, int(target // s)) for s in spacing_mm)
    small = _block_average(np.asarray(image, np.float64), (fr, fc))
    small = ndimage.gaussian_filter(small, (sigma_mm / (spacing_mm[0] * fr), sigma_mm / (spacing_mm[1] * fc)),
                                    mode="reflect", truncate=4.0)
    if fr == fc == 1:
        return small
    # back to full size: linear interpolation with the blocks' centres aligned (grid_mode)
    full = ndimage.zoom(small, (fr, fc), order=1, mode="reflect", grid_mode=True)
    return full[:rows, :cols]


def _block_average(image: np.ndarray, factors: tuple[int, int]) -> np.ndarray:
    """Means of ``factors``-sized blocks (the image padded by mirroring to a multiple of them)."""
    fr, fc = factors
    if fr == fc == 1:
        return image
    padded = np.pad(image, ((0, -image.shape[0] % fr), (0, -image.shape[1] % fc)), mode="symmetric")
    return padded.reshape(padded.shape[0] // fr, fr, padded.shape[1] // fc, fc).mean(axis=(1, 3))


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
                   fwhm_mm: float, field: np.ndarray | None = None, iterations: int = ITERATIONS) -> np.ndarray:
    """Line integrals with the modelled scatter removed (module docstring); float64, same shape.

    ``line_integrals`` are ``-ln(I / I0)`` in natural units; ``field`` (bool, True = exposed)
    limits where scatter arises and is removed (pixels outside keep their values); ``iterations``
    of the fixed point (the error shrinks by ``scatter_to_primary`` per iteration).
    """
    check_scatter_settings(scatter_to_primary, fwhm_mm)
    if scatter_to_primary == 0.0:
        return np.array(line_integrals, np.float64)
    p, inside, measured, reference = _relative_signal(line_integrals, field)
    sigma = fwhm_mm / FWHM_PER_SIGMA
    primary = measured / (1.0 + scatter_to_primary)
    floor = MIN_PRIMARY_FRACTION * measured
    for _ in range(iterations):
        scatter = scatter_to_primary * smooth_scatter_blur(primary, sigma, spacing_mm)
        primary = np.maximum(measured - scatter, floor)
    corrected = reference - np.log(np.maximum(primary, np.finfo(np.float64).tiny))
    return np.where(inside, corrected, p)


def _guarded_removal(line_integrals: np.ndarray, spacing_mm: tuple[float, float], scatter_to_primary: float,
                     fwhm_mm: float, field: np.ndarray | None) -> tuple[np.ndarray, float, float]:
    """``(corrected, ratio used, bound)``: :func:`remove_scatter` with the assumed ratio capped at
    ``BOUND_FRACTION`` of :func:`scatter_bound`."""
    bound = scatter_bound(line_integrals, spacing_mm, fwhm_mm, field)
    used = min(scatter_to_primary, BOUND_FRACTION * bound)
    return remove_scatter(line_integrals, spacing_mm, used, fwhm_mm, field), used, bound


def _field_range(values: np.ndarray, field: np.ndarray) -> float:
    lo, hi = np.percentile(values[field], RANGE_PERCENTILES)
    return float(hi - lo)


def estimate_log_scale(values: np.ndarray, spacing_mm: tuple[float, float], view: str, scatter_to_primary: float,
                       fwhm_mm: float, field: np.ndarray | None = None,
                       mu_water_per_mm: float = MU_WATER_PER_MM) -> float:
    """Nepers of ``-ln I`` per unit of ``values`` (bright = dense, any offset) for a log or display film.

    The scale ``k`` at which the film, with the assumed ``scatter_to_primary`` removed, spans
    ``mu_water_per_mm * WATER_EQUIVALENT_RANGE_MM[view]`` nepers between the
    ``RANGE_PERCENTILES`` of its field (:func:`correct_scatter` then applies the bound as usual).
    The corrected range is nearly proportional to ``k`` and the removal adds at most
    ``ln(1 / MIN_PRIMARY_FRACTION)``, so ``k`` is bracketed and found by rescaling it with
    ``target / range`` (a few steps), on a copy block-averaged to ``ESTIMATE_PIXEL_MM`` pixels.
    Raises :class:`InputError` for an unknown view or a constant field.
    """
    if view not in WATER_EQUIVALENT_RANGE_MM:
        raise InputError(None, f"no water-equivalent range known for view {view!r}; views: "
                               f"{', '.join(WATER_EQUIVALENT_RANGE_MM)}")
    values = np.asarray(values, np.float64)
    inside = np.ones(values.shape, bool) if field is None else np.asarray(field, bool)
    factors = tuple(max(1, int(ESTIMATE_PIXEL_MM // s)) for s in spacing_mm)
    small = _block_average(np.where(inside, values, 0.0), factors)
    small_field = _block_average(inside.astype(np.float64), factors) > 0.999
    if not small_field.any():
        small, small_field, factors = values, inside, (1, 1)
    small_spacing = (spacing_mm[0] * factors[0], spacing_mm[1] * factors[1])
    measured = _field_range(small, small_field) if small_field.any() else 0.0
    if not measured > 0:
        raise InputError(None, "the film's field is constant: no scale of -ln(I) can be estimated")
    target = mu_water_per_mm * WATER_EQUIVALENT_RANGE_MM[view]

    def corrected_range(k: float) -> float:
        corrected = remove_scatter(small * k, small_spacing, scatter_to_primary, fwhm_mm, small_field,
                                   iterations=ESTIMATE_ITERATIONS)
        return _field_range(corrected, small_field)

    # the corrected range is nearly proportional to k: rescale k by target / range until they agree
    high = target / measured  # no scatter removed: the film alone spans the target
    low = max(target - math.log(1.0 / MIN_PRIMARY_FRACTION), 0.25 * target) / measured
    k = high
    for _ in range(ESTIMATE_STEPS):
        ratio = target / corrected_range(k)
        k = min(max(k * ratio, low), high)
        if abs(ratio - 1.0) < ESTIMATE_TOLERANCE:
            break
    return k


def correct_scatter(xray: XRayImage, scatter_to_primary: float = DEFAULT_SCATTER_TO_PRIMARY,
                    fwhm_mm: float = DEFAULT_SCATTER_FWHM_MM, view: str | None = None,
                    mu_water_per_mm: float = MU_WATER_PER_MM,
                    log_units_per_decade: float | None = None) -> tuple[XRayImage, list[str]]:
    """Apply :func:`remove_scatter` to a film's line-integral estimate (module docstring).

    ``intensity`` data are corrected as they are; ``log``, ``display``, ``displayed`` and
    ``line-integral`` films first get their scale from :func:`estimate_log_scale` (which needs
    ``view``, ``"ap"`` or ``"lateral"``, and the model's ``mu_water_per_mm``), and are returned in
    their own unit. ``log`` data take the system's ``log_units_per_decade`` instead, when it is
    given. ``metadata["scatter_correction"]`` records what was done, and a warning says
    it. Needs the film's pixel spacing (the kernel is in mm); without it, or without a view for a
    film of unknown scale, the step is skipped with a warning.
    """
    check_scatter_settings(scatter_to_primary, fwhm_mm, xray.path)
    md = xray.metadata
    if scatter_to_primary == 0.0:
        return replace(xray, metadata={**md, "scatter_correction": "off"}), []
    kind = md.get("encoding") or "unknown"
    if kind != "intensity" and (kind not in ESTIMATED_SCALE_ENCODINGS or view not in WATER_EQUIVALENT_RANGE_MM):
        return (replace(xray, metadata={**md, "scatter_correction": f"not possible ({kind} data)"}),
                [f"scatter not removed: a {kind} image has no known scale of -ln(I)"])
    if xray.spacing_mm is None:
        return (replace(xray, metadata={**md, "scatter_correction": "skipped (no pixel spacing)"}),
                ["scatter not removed: the film has no pixel spacing for the scatter kernel"])
    scale, how = 1.0, ""
    if kind == "log" and log_units_per_decade is not None:
        scale = math.log(10.0) / log_units_per_decade
        how = f", on the given log scale of {log_units_per_decade:g} units per decade"
    elif kind != "intensity":
        try:
            scale = estimate_log_scale(xray.pixels, xray.spacing_mm, view, scatter_to_primary, fwhm_mm,
                                       xray.valid_mask, mu_water_per_mm)
        except InputError as exc:
            return (replace(xray, metadata={**md, "scatter_correction": f"not possible ({exc.problem})"}),
                    [f"scatter not removed: {exc.problem}"])
        how = (f", on a {kind} scale estimated at {1.0 / scale:.4g} units per neper (the field's densest part "
               f"behind {WATER_EQUIVALENT_RANGE_MM[view]:g} mm of water)")
    corrected, used, bound = _guarded_removal(np.asarray(xray.pixels, np.float64) * scale, xray.spacing_mm,
                                              scatter_to_primary, fwhm_mm, xray.valid_mask)
    note = f"scatter-to-primary {used:.2g}, {fwhm_mm:g} mm FWHM kernel"
    if used < scatter_to_primary:
        note += (f" (less than the assumed {scatter_to_primary:g}: the film allows at most {bound:.2g}, "
                 f"{BOUND_FRACTION:g} of it is used)")
    note += how
    extra = {"scatter_correction": note}
    if kind != "intensity":
        extra["log_units_per_neper"] = 1.0 / scale
    return (replace(xray, pixels=(corrected / scale).astype(np.float32), metadata={**md, **extra}),
            [f"scatter removed assuming {note} (--scatter-to-primary 0 to turn off)"])


__all__ = [
    "DEFAULT_SCATTER_FWHM_MM",
    "DEFAULT_SCATTER_TO_PRIMARY",
    "WATER_EQUIVALENT_RANGE_MM",
    "check_scatter_settings",
    "correct_scatter",
    "estimate_log_scale",
    "remove_scatter",
    "smooth_scatter_blur",
]
