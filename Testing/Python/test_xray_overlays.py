"""Collimation borders and burned-in labels are found in every kind of film the simulator makes,
and nothing is found where there is none.

Films of an analytic chest phantom (its abdomen runs out of the bottom of the detector) are made
with :mod:`DiffuX2CTLib.radiograph` in each storage encoding (FOR PROCESSING linear and log, FOR
PRESENTATION with a display curve, MONOCHROME1 and 2, 10-16 bits, the 8-bit display PNG), at a
typical and at a low, noisy dose, on a 128-pixel (training) and a 512-pixel detector, and read
back to line integrals as :func:`~DiffuX2CTLib.io.radiograph.prepare_radiograph` does. The bands
found must cover the unexposed area and end within the blade's penumbra; every burned-in text
pixel must be found and nothing else; clean DRRs (the phantom, crops whose anatomy reaches the
edges, projections of real CTs) and films without overlays must give nothing at all.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from DiffuX2CTLib.geometry import BiplanarGeometry
from DiffuX2CTLib.io import xray_overlays
from DiffuX2CTLib.io.radiograph import RadiographOptions, prepare_radiograph
from DiffuX2CTLib.io.xray import XRayImage, XRayNormalization
from DiffuX2CTLib.io.xray_dicom import xray_from_dataset
from DiffuX2CTLib.io.xray_encoding import estimate_line_integral
from DiffuX2CTLib.io.xray_overlays import MAX_BAND_FRACTION, find_overlays, mask_overlays
from DiffuX2CTLib.radiograph.dicom_writer import DXAcquisition, build_dx_dataset
from DiffuX2CTLib.radiograph.film import (
    CollimationConfig,
    EncodingConfig,
    ExposureConfig,
    FilmConfig,
    LabelConfig,
    NoiseConfig,
    collimation_profile,
    film_from_line_integrals,
)
from DiffuX2CTLib.radiograph.presets import random_film_config
from DiffuX2CTLib.radiograph.simulation import view_labels

DETECTOR_MM = 430.0
MU_WATER = 0.02  # 1/mm
MODEL = BiplanarGeometry.preset("clinical", volume_size=32, xray_size=32)
NORM = XRayNormalization()


def chest(n: int) -> tuple[np.ndarray, tuple[float, float]]:
    """``(n, n)`` line integrals of an analytic chest phantom on a 430 mm detector, and the pitch.

    Ellipsoids (centre x, y; half-axes a, b in the image plane; half depth; attenuation relative to
    water): a body whose abdomen leaves the detector at the bottom, lungs, heart, spine, a dense
    liver and the shoulders at the top corners."""
    pitch = DETECTOR_MM / n
    c = (np.arange(n) - (n - 1) / 2) * pitch
    y, x = np.meshgrid(c, c, indexing="ij")

    def ellipsoid(x0, y0, a, b, half_depth, mu):
        inside = 1.0 - ((x - x0) / a) ** 2 - ((y - y0) / b) ** 2
        return mu * MU_WATER * 2.0 * half_depth * np.sqrt(np.clip(inside, 0.0, None))

    p = ellipsoid(0, 40, 170, 250, 120, 1.0)
    p -= ellipsoid(-75, -40, 60, 110, 70, 0.8) + ellipsoid(75, -40, 60, 110, 70, 0.8)
    p += ellipsoid(25, 15, 60, 60, 60, 0.05) + ellipsoid(0, 0, 14, 300, 14, 1.0)
    p += ellipsoid(-40, 150, 140, 70, 90, 0.3)
    p += ellipsoid(-170, -190, 60, 45, 60, 1.0) + ellipsoid(170, -190, 60, 45, 60, 1.0)
    return p, (pitch, pitch)


#: Low dose: 1.2 uGy at a low quantum efficiency; the abdomen gets a few quanta per pixel.
LOW_DOSE = {"exposure": ExposureConfig(detector_air_kerma_uGy=1.2, quantum_efficiency=0.4, adu_per_uGy=150.0,
                                       dark_offset_adu=40.0),
            "noise": NoiseConfig(electronic_adu=5.0)}
#: The noisiest corner of random_film_config: 1 uGy at 60 ADU/uGy with 7 ADU electronic noise, so
#: that air has an SNR of ~10 and a tenth of the field is clipped noise (specks at the extreme value).
NOISE_LIMITED = {"exposure": ExposureConfig(detector_air_kerma_uGy=1.0, quantum_efficiency=0.4, adu_per_uGy=60.0,
                                            dark_offset_adu=40.0),
                 "noise": NoiseConfig(electronic_adu=7.0)}
DOSES = {"typical dose": {}, "low dose": LOW_DOSE, "noise-limited": NOISE_LIMITED}
ENCODINGS = {
    "processing LIN M2 14-bit": EncodingConfig(intent="processing", relationship="LIN", bits_stored=14),
    "processing LIN M1 16-bit": EncodingConfig(intent="processing", relationship="LIN", photometric="MONOCHROME1",
                                               bits_stored=16),
    "processing LOG M2 12-bit": EncodingConfig(intent="processing", relationship="LOG", bits_stored=12),
    "processing LOG M1 10-bit": EncodingConfig(intent="processing", relationship="LOG", photometric="MONOCHROME1",
                                               bits_stored=10),
    "presentation M2 12-bit gamma 0.7": EncodingConfig(gamma=0.7),
    "presentation M1 16-bit gamma 1.4": EncodingConfig(photometric="MONOCHROME1", bits_stored=16, gamma=1.4,
                                                       display_percentiles=(2.0, 98.0)),
    "8-bit display PNG": EncodingConfig(gamma=1.2),
}
BORDERS_MM = (20.0, 35.0, 12.0, 28.0)  # top, bottom, left, right
EDGE_FWHM_MM = 4.0
LABELS = LabelConfig(marker="R", marker_corner="top-left", text=("PORTABLE", "AP"), text_corner="bottom-left")


def read_back(film, encoding_name: str) -> np.ndarray:
    """The film's line-integral estimate, as the reader makes it (DICOM data set or display PNG)."""
    if encoding_name.endswith("PNG"):
        display = np.round(np.clip(film.display, 0.0, 1.0) * 255.0).astype(np.uint8)
        xray = XRayImage(display, film.spacing_mm, "film.png", {"format": "png", "full_scale": 255.0})
        xray, _ = estimate_line_integral(xray, "display")
    else:
        acquisition = DXAcquisition.from_geometry(MODEL, "ap")
        xray, _ = estimate_line_integral(xray_from_dataset(build_dx_dataset(film, acquisition), "film.dcm"))
    return xray.pixels


def make_film(n: int, encoding_name: str, dose: str, overlays: bool = True, seed: int = 0):
    p, spacing = chest(n)
    config = FilmConfig(encoding=ENCODINGS[encoding_name], **DOSES[dose])
    if overlays:
        config = config.replace(collimation=CollimationConfig(BORDERS_MM, EDGE_FWHM_MM), labels=LABELS)
    else:
        config = config.replace(collimation=None, labels=None)
    film = film_from_line_integrals(p, spacing, config, np.random.default_rng(seed), magnification=1.1)
    return film, read_back(film, encoding_name)


@pytest.mark.parametrize("n", [128, 512])
@pytest.mark.parametrize("dose", list(DOSES))
@pytest.mark.parametrize("encoding_name", list(ENCODINGS))
def test_bands_and_text_are_found_in_every_encoding(encoding_name, dose, n):
    film, x = make_film(n, encoding_name, dose)
    found = find_overlays(x)
    # each band covers the lines that got less than a tenth of the beam (3% for the display PNG,
    # whose display curve flattens the penumbra's tail), and ends where the penumbra has faded
    # (99.5% of the beam), give or take a line (two on the finer detector). A noise-limited film's
    # dense abdomen reads as the unexposed band beside it: the bottom band may be missed there.
    soft, _ = collimation_profile(x.shape, film.spacing_mm, film.config.collimation)
    rows, cols = x.shape
    edges = {"top": soft[:, cols // 2], "bottom": soft[::-1, cols // 2], "left": soft[rows // 2],
             "right": soft[rows // 2, ::-1]}
    for side, beam in edges.items():
        half = beam[:beam.size // 2]  # from this edge to the middle
        shaded = int((half < (0.03 if encoding_name.endswith("PNG") else 0.1)).sum())
        faded = int((half < 0.995).sum())
        if dose == "noise-limited" and side == "bottom":
            shaded = 0
        assert shaded <= found.bands[side] <= faded + (1 if n <= 128 else 2), (side, found.bands, shaded, faded)
    # nothing is found away from the text and the marker; at a typical dose the text is found
    # wherever it stands out (at a low dose clipped noise specks stand out as much as the text)
    near = ndimage.binary_dilation(film.annotation_mask | film.marker_mask, iterations=2)
    assert not (found.labels & ~near).any(), int((found.labels & ~near).sum())
    if dose != "typical dose":
        return
    text = film.annotation_mask & ~found.collimation
    missed = text & ~found.labels
    span = np.subtract(*np.percentile(x[~found.collimation], [99.5, 0.5]))
    for r, c in np.argwhere(missed):  # text missed only where it hardly stands out (over dense anatomy)
        window = (slice(max(0, r - 2), r + 3), slice(max(0, c - 2), c + 3))
        around = x[window][~film.annotation_mask[window]]
        assert around.size == 0 or abs(x[r, c] - np.median(around)) < 0.3 * span, (r, c, int(missed.sum()))
    assert missed.sum() < 0.2 * text.sum(), (int(missed.sum()), int(text.sum()))


@pytest.mark.parametrize("encoding_name", list(ENCODINGS))
def test_films_without_overlays_give_nothing(encoding_name):
    """Noisy films whose dense anatomy is clipped into specks at the extreme value, at both sizes."""
    for n, dose in ((128, "noise-limited"), (128, "low dose"), (512, "noise-limited"), (512, "typical dose")):
        _, x = make_film(n, encoding_name, dose, overlays=False)
        found = find_overlays(x)
        assert not found.collimation.any(), (n, dose, found.bands)
        assert not found.labels.any(), (n, dose, int(found.labels.sum()))


def test_clean_phantom_and_crops_reaching_the_edges_give_nothing():
    for n in (128, 512, 1024):
        p, _ = chest(n)
        k = n // 8
        crops = [p, p[k:-k, k:-k], p[2 * k:, k:-k], p[:-2 * k, 2 * k:], p[3 * k:-k, 2 * k:-2 * k]]
        for image in crops:
            for variant in (image, image[::-1], image.T, image[:, ::-1], 3.0 + 700.0 * image):
                found = find_overlays(variant)
                assert not found.any, (n, variant.shape, found.bands, int(found.labels.sum()))


def test_projections_of_real_cts_give_nothing(shared_data_dir):
    """Parallel projections (mu of water x (1 + HU/1000), summed) of real chest and abdomen CTs,
    whole and cropped so that the anatomy reaches the edges, in both directions."""
    import SimpleITK as sitk

    for name in ("chest_lung2.nrrd", "abdomen_ct.nii.gz"):
        path = shared_data_dir / name
        if not path.exists():
            continue
        image = sitk.ReadImage(str(path))
        hu = sitk.GetArrayFromImage(image).astype(np.float32)  # (z, y, x)
        sx, sy, sz = image.GetSpacing()
        mu = MU_WATER * np.clip(1.0 + hu / 1000.0, 0.0, None)
        for axis, spacing in ((1, sy), (2, sx)):  # AP, lateral
            projection = mu.sum(axis=axis) * spacing
            rows = ndimage.zoom(projection, (sz / sx, 1.0), order=1)[::-1]  # square pixels, head up
            r, c = rows.shape
            for crop in (rows, rows[r // 8:-r // 8, c // 6:-c // 6], rows[r // 4:, c // 4:]):
                for variant in (crop, crop.T):
                    found = find_overlays(variant)
                    assert not found.any, (name, axis, variant.shape, found.bands, int(found.labels.sum()))


def test_band_is_capped_and_the_rest_is_masked():
    p, spacing = chest(128)
    config = FilmConfig(collimation=CollimationConfig((190.0, 10.0, 10.0, 10.0), 3.0), labels=None)
    film = film_from_line_integrals(p, spacing, config, np.random.default_rng(1), magnification=1.1)
    found = find_overlays(read_back(film, "presentation M2 12-bit gamma 0.7"))
    assert found.bands["top"] == int(MAX_BAND_FRACTION * 128)
    assert all(2 <= found.bands[s] <= 5 for s in ("bottom", "left", "right")), found.bands


def _network_inputs(p, spacing, seed: int, png: bool):
    """The network input of a random film (found overlays, true overlays) and of the clean DRR."""
    geometry = MODEL.with_sizes(xray_size=p.shape[0])
    acquisition = DXAcquisition.from_geometry(geometry, "ap")
    rng = np.random.default_rng(seed)
    config = random_film_config(rng, 1.0)
    if config.labels is not None:
        config = config.replace(labels=view_labels(config.labels, acquisition))
    film = film_from_line_integrals(p, spacing, config, rng, magnification=geometry.magnification)
    if png:
        display = np.round(np.clip(film.display, 0.0, 1.0) * 255.0).astype(np.uint8)
        xray = XRayImage(display, film.spacing_mm, "film.png", {"format": "png", "full_scale": 255.0})
        options = RadiographOptions(xray_encoding="display")
    else:
        xray = xray_from_dataset(build_dx_dataset(film, acquisition), "film.dcm")
        options = RadiographOptions()
    found = prepare_radiograph(xray, "ap", MODEL, NORM, options).pixels
    soft = (collimation_profile(p.shape, spacing, config.collimation)[0] if config.collimation
            else np.ones(p.shape))
    truth = xray_overlays.Overlays((film.annotation_mask | film.marker_mask) & (soft >= 0.95), soft < 0.95)
    real = xray_overlays.find_overlays
    xray_overlays.find_overlays = lambda pixels: truth
    try:
        oracle = prepare_radiograph(xray, "ap", MODEL, NORM, options).pixels
    finally:
        xray_overlays.find_overlays = real
    return found, oracle


def _corr(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.mark.parametrize("png", [False, True], ids=["DICOM", "display PNG"])
def test_random_training_films_reach_the_network_as_with_the_true_masks(png):
    """Random film settings at full strength, 128-pixel detector (as in training): the network
    input made with the overlays found is as close to the clean DRR's as with the true masks."""
    p, spacing = chest(128)
    clean = prepare_radiograph(XRayImage(p.astype(np.float32), spacing, "clean.nrrd", {"format": "nrrd"}), "ap",
                               MODEL, NORM).pixels
    found_r, oracle_r = [], []
    for seed in range(16):
        found, oracle = _network_inputs(p, spacing, seed, png)
        found_r.append(_corr(found, clean))
        oracle_r.append(_corr(oracle, clean))
    gap = np.subtract(oracle_r, found_r)
    print(f"{'PNG' if png else 'DICOM'}: found median {np.median(found_r):.4f} min {min(found_r):.4f}; "
          f"true masks median {np.median(oracle_r):.4f}; largest gap {gap.max():.4f}")
    assert gap.max() < 0.01, list(zip(found_r, oracle_r))


def test_it_is_fast():
    _, small = make_film(128, "processing LOG M2 12-bit", "low dose")
    film, _ = make_film(1024, "presentation M1 16-bit gamma 1.4", "noise-limited")  # speckled: the slow case
    acquisition = DXAcquisition.from_geometry(MODEL, "ap")
    big, _ = estimate_line_integral(xray_from_dataset(build_dx_dataset(film, acquisition), "film.dcm"))
    find_overlays(small)  # imports

    def best(f, repeat):
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            f()
            times.append(time.perf_counter() - began)
        return min(times)

    t_small = best(lambda: find_overlays(small), 5)
    t_big = best(lambda: mask_overlays(big), 2)
    print(f"128 px: {1000 * t_small:.1f} ms, 1024 px: {1000 * t_big:.0f} ms")
    assert t_small < 0.05 and t_big < 0.6  # ~5 ms and ~120 ms on 2 cores; generous for busy machines
