"""Scatter removal from linear detector data (``DiffuX2CTLib.io.xray_scatter``).

The model: the detector reads ``I = P + spr * G(P)`` (scatter = a broad Gaussian blur of the
primary). The reader solves for ``P``: directly where the scale of ``-ln I`` is known (LIN data),
after estimating that scale from a body prior for log or display-processed films.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from DiffuX2CTLib.errors import InputError
from DiffuX2CTLib.io.radiograph import RadiographOptions, prepare_radiograph
from DiffuX2CTLib.io.xray import XRayImage
from DiffuX2CTLib.io.intensity import MU_WATER_PER_MM
from DiffuX2CTLib.io.xray_scatter import (
    WATER_EQUIVALENT_RANGE_MM,
    correct_scatter,
    estimate_log_scale,
    remove_scatter,
    scatter_bound,
    smooth_scatter_blur,
)
from test_xray_reading import FILM, MODEL, correlations, line_integrals, phantom_hu

SPACING = (0.5, 0.5)


def body_line_integrals(shape=(240, 200)) -> np.ndarray:
    """A chest-like projection (natural units): an elliptic body up to 5, two lungs, a dense spine."""
    r, c = np.meshgrid(np.arange(shape[0]) - shape[0] / 2, np.arange(shape[1]) - shape[1] / 2, indexing="ij")
    body = np.clip(1 - (c / 85.0) ** 2 - (r / 110.0) ** 2, 0, None)
    p = 5.0 * np.sqrt(body)
    for side in (-1, 1):
        p -= 1.5 * np.sqrt(np.clip(1 - ((c - side * 40) / 25.0) ** 2 - (r / 60.0) ** 2, 0, None))
    p += 1.2 * (np.abs(c) < 8) * (body > 0)
    return np.clip(p, 0, None)


def with_scatter(p: np.ndarray, spr: float, fwhm_mm: float) -> np.ndarray:
    """``-ln(P + spr * G(P))`` with SciPy's own Gaussian (not the reader's downsampled one)."""
    primary = np.exp(-p)
    sigma = [fwhm_mm / 2.3548 / s for s in SPACING]
    return -np.log(primary + spr * ndimage.gaussian_filter(primary, sigma, mode="mirror"))


def test_remove_scatter_recovers_the_line_integrals():
    p = body_line_integrals()
    measured = with_scatter(p, 0.4, 30.0)
    corrected = remove_scatter(measured, SPACING, 0.4, 30.0)
    dense = p > 3.0
    before, after = np.abs(measured - p)[dense].mean(), np.abs(corrected - p)[dense].mean()
    worst = np.abs(corrected - p)[dense].max()
    print(f"mean error where p > 3: {before:.3f} before, {after:.4f} after (largest {worst:.3f})")
    assert before > 1.0 and after < 0.03 and worst < 0.15  # where S >> P a 1% error in S is 0.1 in p
    assert np.corrcoef(corrected.ravel(), p.ravel())[0, 1] > 0.9999
    np.testing.assert_array_equal(remove_scatter(measured, SPACING, 0.0, 30.0), measured)


def test_remove_scatter_leaves_pixels_outside_the_field_alone():
    p = body_line_integrals()
    field = np.zeros(p.shape, bool)
    field[20:-20, 15:-15] = True
    measured = np.where(field, with_scatter(p, 0.3, 30.0), 9.0)  # collimated: no signal
    corrected = remove_scatter(measured, SPACING, 0.3, 30.0, field)
    np.testing.assert_array_equal(corrected[~field], 9.0)
    assert np.isfinite(corrected).all() and (corrected[field] >= measured[field] - 1e-9).all()


def test_downsampled_blur_matches_a_full_gaussian():
    image = np.zeros((1001, 899))  # a 400 mm film, a 60 mm FWHM kernel
    image[300:700, 200:600] = 1.0
    image[800:830, 50:850] = 3.0
    spacing = (0.4, 0.45)
    fast = smooth_scatter_blur(image, 25.0, spacing)
    full = ndimage.gaussian_filter(image, (25.0 / 0.4, 25.0 / 0.45), mode="mirror")
    assert fast.shape == image.shape
    assert np.abs(fast - full).max() < 0.03 * full.max()
    assert fast.sum() == pytest.approx(full.sum(), rel=0.01)


def test_linear_data_are_corrected_as_they_are_and_every_case_is_said():
    p = body_line_integrals()
    linear = XRayImage(with_scatter(p, 0.3, 60.0).astype(np.float32), SPACING, "raw.dcm", {"encoding": "intensity"})
    fixed, warnings = correct_scatter(linear)
    assert fixed.metadata["scatter_correction"].startswith("scatter-to-primary 0.")
    assert len(warnings) == 1 and warnings[0].startswith("scatter removed assuming scatter-to-primary 0.")
    assert warnings[0].endswith("(--scatter-to-primary 0 to turn off)")
    r_before, r_after = (np.corrcoef(x.pixels.ravel(), p.ravel())[0, 1] for x in (linear, fixed))
    assert r_after > r_before + 0.005  # partly: the ratio used is capped by what the film allows (below)

    log = XRayImage(linear.pixels * 800.0 + 100.0, SPACING, "film.dcm", {"encoding": "displayed"})
    same, warnings = correct_scatter(log)  # no view: no prior for the scale
    np.testing.assert_array_equal(same.pixels, log.pixels)
    assert same.metadata["scatter_correction"] == "not possible (displayed data)"
    assert warnings == ["scatter not removed: a displayed image has no known scale of -ln(I)"]
    odd = XRayImage(linear.pixels, SPACING, "film.dcm", {"encoding": "weird"})
    assert correct_scatter(odd, view="ap")[0].metadata["scatter_correction"] == "not possible (weird data)"

    no_spacing = XRayImage(linear.pixels, None, "raw.png", {"encoding": "intensity"})
    same, warnings = correct_scatter(no_spacing)
    np.testing.assert_array_equal(same.pixels, no_spacing.pixels)
    assert warnings == ["scatter not removed: the film has no pixel spacing for the scatter kernel"]

    off, warnings = correct_scatter(linear, 0.0)
    assert warnings == [] and off.metadata["scatter_correction"] == "off"
    for bad in ((1.0, 60.0), (-0.1, 60.0), (float("nan"), 60.0), (0.3, 0.0), (0.3, float("inf"))):
        with pytest.raises(InputError):
            correct_scatter(linear, *bad)


def test_the_film_bounds_the_scatter_removed():
    """A film without scatter allows almost none; more scatter allows more; the assumed ratio is capped."""
    p = body_line_integrals()
    bounds = [scatter_bound(with_scatter(p, s, 60.0) if s else p, SPACING, 60.0) for s in (0.0, 0.1, 0.3, 0.6)]
    print("bounds for true ratios 0, 0.1, 0.3, 0.6:", np.round(bounds, 3))
    assert bounds[0] < 0.05 and all(b < c for b, c in zip(bounds, bounds[1:]))
    assert bounds[1] == pytest.approx(0.1, abs=0.03)
    clean = XRayImage(p.astype(np.float32), SPACING, "clean.dcm", {"encoding": "intensity"})
    fixed, warnings = correct_scatter(clean)
    assert "the film allows at most" in fixed.metadata["scatter_correction"] and "0.5 of it is used" in warnings[0]
    # at the bound the densest pixel would be all scatter; at half of it, it changes by about ln 2
    assert np.abs(fixed.pixels - p).max() < 1.0
    guarded = np.corrcoef(fixed.pixels.ravel(), p.ravel())[0, 1]
    unguarded = np.corrcoef(remove_scatter(p, SPACING, 0.3, 60.0).ravel(), p.ravel())[0, 1]
    print(f"scatter-free film corrected: r {guarded:.4f} with the bound, {unguarded:.4f} with the assumed 0.3")
    assert guarded > 0.995 and unguarded < guarded - 0.01


@pytest.mark.parametrize("preset, true_spr", [("processing-raw", 0.3), ("processing-raw", 0.6),
                                               ("processing-log", 0.4), ("presentation", 0.4)])
def test_a_film_with_scatter_reads_closer_to_the_drr(tmp_path, preset, true_spr):
    """Simulated films (noise, blur, heel, scatter) through the whole reading chain: raw linear
    data as they are, log and presentation films on their estimated scale."""
    from DiffuX2CTLib.io.xray_dicom import xray_from_dataset
    from DiffuX2CTLib.radiograph.dicom_writer import DXAcquisition, build_dx_dataset
    from DiffuX2CTLib.radiograph.film import ScatterConfig, film_from_line_integrals
    from DiffuX2CTLib.radiograph.presets import film_preset

    hu = phantom_hu()
    clean = line_integrals(MODEL, hu)
    film_lines = line_integrals(FILM, hu)
    config = film_preset(preset).replace(scatter=ScatterConfig(true_spr, 60.0), labels=None)
    rs = {}
    for spr in (0.0, 0.3):
        inputs, references = [], []
        for i, view in enumerate(FILM.views):
            film = film_from_line_integrals(film_lines[i], FILM.detector_spacing_mm, config, np.random.default_rng(i),
                                            magnification=FILM.magnification)
            xray = xray_from_dataset(build_dx_dataset(film, DXAcquisition.from_geometry(FILM, view)), f"{view}.dcm")
            prepared = prepare_radiograph(xray, view, MODEL, options=RadiographOptions(scatter_to_primary=spr))
            inputs.append(prepared.pixels)
            if spr and preset != "processing-raw":
                assert "scale estimated at" in prepared.summary["scatter_correction"]
            references.append(prepare_radiograph(XRayImage(clean[i].astype(np.float32), MODEL.detector_spacing_mm,
                                                           f"{view}.nrrd", {"format": "nrrd"}), view, MODEL).pixels)
        rs[spr] = min(correlations(np.stack(inputs), np.stack(references)))
    print(f"{preset}, true SPR {true_spr}: worst view r {rs[0.0]:.4f} uncorrected, {rs[0.3]:.4f} corrected (0.3)")
    assert rs[0.3] > rs[0.0] + 0.005


def prior_body(view: str = "ap") -> np.ndarray:
    """:func:`body_line_integrals` scaled so that its field spans the prior's range for ``view``."""
    p = body_line_integrals()
    lo, hi = np.percentile(p, [0.5, 99.5])
    return p * MU_WATER_PER_MM * WATER_EQUIVALENT_RANGE_MM[view] / (hi - lo)


@pytest.mark.parametrize("gain, offset", [(434.3, 200.0), (-0.002, 0.9)])
def test_the_scale_of_a_log_film_is_estimated_from_the_body_prior(gain, offset):
    """A log film (any affine function of -ln I, even inverted) of a body that spans the prior's
    range: the scale is recovered, and the corrected film comes back in the film's own unit."""
    p = prior_body("ap")
    measured = with_scatter(p, 0.3, 60.0)
    stored = gain * measured + offset
    bright_dense = stored if gain > 0 else -stored
    k = estimate_log_scale(bright_dense, SPACING, "ap", 0.3, 60.0)
    print(f"estimated {1 / k:.4g} units per neper, true {abs(gain):.4g}")
    assert k * abs(gain) == pytest.approx(1.0, rel=0.15)

    film = XRayImage(bright_dense.astype(np.float32), SPACING, "film.dcm", {"encoding": "log"})
    fixed, warnings = correct_scatter(film, view="ap")
    note = fixed.metadata["scatter_correction"]
    assert "on a log scale estimated at" in note and "250 mm of water" in note
    assert fixed.metadata["log_units_per_neper"] == pytest.approx(1 / k)
    assert warnings == [f"scatter removed assuming {note} (--scatter-to-primary 0 to turn off)"]
    r_before, r_after = (np.corrcoef(x.ravel(), p.ravel())[0, 1] for x in (bright_dense, fixed.pixels))
    print(f"r with the line integrals: {r_before:.4f} before, {r_after:.4f} after")
    assert r_after > r_before + 0.005
    # in the film's own unit (`gain` per neper): the contrast lost to scatter partly comes back
    before, after = (np.polyfit(p.ravel(), x.ravel().astype(np.float64), 1)[0] for x in (bright_dense, fixed.pixels))
    print(f"units per neper of p: {before:.1f} before, {after:.1f} after, {abs(gain):.1f} without scatter")
    assert before < after < 1.05 * abs(gain)


def test_a_log_film_without_scatter_is_barely_changed():
    """The bound still guards: with no scatter in the film, the estimated correction stays small."""
    p = prior_body("lateral")
    film = XRayImage((1000.0 * p).astype(np.float32), SPACING, "film.dcm", {"encoding": "display"})
    fixed, _ = correct_scatter(film, view="lateral")
    r = np.corrcoef(fixed.pixels.ravel(), p.ravel())[0, 1]
    print(f"scatter-free log film corrected: r {r:.4f}; {fixed.metadata['scatter_correction']}")
    assert r > 0.995


def test_the_scale_estimate_refuses_what_it_cannot_do():
    p = prior_body()
    with pytest.raises(InputError, match="no water-equivalent range known for view 'pa'"):
        estimate_log_scale(p, SPACING, "pa", 0.3, 60.0)
    with pytest.raises(InputError, match="field is constant"):
        estimate_log_scale(np.ones_like(p), SPACING, "ap", 0.3, 60.0)
    flat = XRayImage(np.ones(p.shape, np.float32), SPACING, "flat.dcm", {"encoding": "log"})
    same, warnings = correct_scatter(flat, view="ap")
    np.testing.assert_array_equal(same.pixels, flat.pixels)
    assert warnings == ["scatter not removed: the film's field is constant: no scale of -ln(I) can be estimated"]


def test_a_known_log_scale_is_used_instead_of_the_estimate():
    """--log-units-per-decade: LOG data of a system whose scale is known are corrected on it."""
    from DiffuX2CTLib.worker import build_parser, reading_options

    p = prior_body("ap") * 1.3  # a body the prior would misjudge
    gain = 1000.0 / np.log(10.0)  # 1000 units per decade
    film = XRayImage((gain * with_scatter(p, 0.3, 60.0)).astype(np.float32), SPACING, "film.dcm", {"encoding": "log"})
    given, warnings = correct_scatter(film, view="ap", log_units_per_decade=1000.0)
    assert "on the given log scale of 1000 units per decade" in given.metadata["scatter_correction"]
    assert given.metadata["log_units_per_neper"] == pytest.approx(gain)
    estimated, _ = correct_scatter(film, view="ap")
    truth = correct_scatter(XRayImage((film.pixels / gain).astype(np.float32), SPACING, "raw.dcm",
                                      {"encoding": "intensity"}))[0].pixels * gain
    np.testing.assert_allclose(given.pixels, truth, rtol=1e-5, atol=1e-3)
    assert not np.allclose(estimated.pixels, truth, rtol=1e-3, atol=1.0)
    # display films ignore it (their scale is per image); the worker passes it through
    display = XRayImage(film.pixels, SPACING, "film.png", {"encoding": "display"})
    assert "estimated at" in correct_scatter(display, view="ap", log_units_per_decade=1000.0)[0].metadata[
        "scatter_correction"]
    args = build_parser().parse_args(["--ap", "a", "--lateral", "l", "--checkpoint", "m", "--output", "o.nrrd",
                                      "--log-units-per-decade", "1000"])
    assert reading_options(args).log_units_per_decade == 1000.0
    assert RadiographOptions(log_units_per_decade=1000).to_dict()["log_units_per_decade"] == 1000.0
