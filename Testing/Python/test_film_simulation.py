"""Realistic films from DRR line integrals: physics, encodings, DICOM DX / PNG files, CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image

from DiffuX2CTLib.cli import main
from DiffuX2CTLib.errors import InputError
from DiffuX2CTLib.geometry import BiplanarGeometry
from DiffuX2CTLib.io.xray import read_xray
from DiffuX2CTLib.radiograph import (
    CollimationConfig,
    DetectorBlurConfig,
    EncodingConfig,
    ExposureConfig,
    FilmConfig,
    FocalSpotConfig,
    HeelConfig,
    LabelConfig,
    NoiseConfig,
    ScatterConfig,
    film_from_line_integrals,
    film_preset,
    random_film_config,
    simulate_films,
    write_film_files,
)
from DiffuX2CTLib.radiograph.film import dicom_window, gaussian_blur
from DiffuX2CTLib.radiograph.glyphs import GLYPHS, text_bitmap
from DiffuX2CTLib.radiograph.presets import PRESET_NAMES
from DiffuX2CTLib.simulate import SimulatedXRays

BARE = FilmConfig(heel=None, collimation=None, focal_spot=None, scatter=None, detector_blur=None, noise=None,
                  labels=None, encoding=EncodingConfig(intent="processing", relationship="LIN", bits_stored=16))


def bare(**stages) -> FilmConfig:
    """Every effect off except the given stages."""
    return BARE.replace(**stages)


def phantom(n: int = 128) -> np.ndarray:
    """Line integrals of a chest-like phantom: an elliptic body (p ~ 2) with a denser 'spine'."""
    yy, xx = np.mgrid[:n, :n] / (n - 1.0) - 0.5
    body = np.clip(1.0 - (yy / 0.45) ** 2 - (xx / 0.38) ** 2, 0.0, None)
    p = 2.2 * np.sqrt(body)
    p += 1.5 * ((np.abs(xx) < 0.04) & (body > 0))
    return p


def high_frequency_energy(image: np.ndarray, cutoff: float = 0.25) -> float:
    spectrum = np.abs(np.fft.fft2(image - image.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(image.shape[0]), np.fft.fftfreq(image.shape[1]), indexing="ij")
    return float(spectrum[np.hypot(fy, fx) > cutoff].sum())


# ---------------------------------------------------------------------------------------------
# exposure and noise
# ---------------------------------------------------------------------------------------------
LEVELS = (0.0, 0.5, 1.0, 2.0, 3.0)


def plateaus(block: int = 64) -> np.ndarray:
    return np.concatenate([np.full((block, block), v) for v in LEVELS], axis=1)


def test_mean_counts_follow_gain_times_exp_and_poisson_variance_is_proportional():
    exposure = ExposureConfig(detector_air_kerma_uGy=2.0, adu_per_uGy=500.0, dark_offset_adu=80.0)
    p = plateaus()
    film = film_from_line_integrals(p, (0.15, 0.15), bare(exposure=exposure, noise=NoiseConfig(electronic_adu=0.0)),
                                    np.random.default_rng(1))
    n0 = 0.6 * 30000.0 * 2.0 * 0.15**2  # eta * q * K0 * A
    assert film.n0_quanta == pytest.approx(n0)
    assert film.gain_adu == pytest.approx(1000.0)  # G = 500 ADU/uGy * 2 uGy
    g = film.adu_per_quantum
    ratios = []
    for i, level in enumerate(LEVELS):
        block = film.signal_adu[:, 64 * i:64 * (i + 1)] - 80.0
        expected = film.gain_adu * math.exp(-level)
        sigma_of_mean = math.sqrt(g * expected / block.size)
        assert abs(block.mean() - expected) < 5 * sigma_of_mean + 1e-9
        ratios.append(block.var(ddof=1) / block.mean())  # Poisson: var = g * mean (ADU)
    assert np.allclose(ratios, g, rtol=0.12)


def test_poisson_gaussian_noise_adds_electronic_variance():
    exposure = ExposureConfig(detector_air_kerma_uGy=1.0, adu_per_uGy=400.0)
    film = film_from_line_integrals(plateaus(), (0.15, 0.15), bare(exposure=exposure, noise=NoiseConfig(electronic_adu=6.0)),
                                    np.random.default_rng(2))
    means, variances = [], []
    for i in range(len(LEVELS)):
        block = film.signal_adu[:, 64 * i:64 * (i + 1)] - exposure.dark_offset_adu
        means.append(block.mean())
        variances.append(block.var(ddof=1))
    slope, intercept = np.polyfit(means, variances, 1)
    assert slope == pytest.approx(film.adu_per_quantum, rel=0.15)
    assert intercept == pytest.approx(36.0, abs=12.0)


def test_ideal_raw_film_recovers_line_integrals():
    p = phantom(96)
    film = film_from_line_integrals(p, (2.0, 2.0), film_preset("ideal"), np.random.default_rng(0))
    np.testing.assert_allclose(film.line_integrals(), p, atol=1e-10)
    # the stored 16-bit LIN values too, up to quantisation (half an ADU)
    stored = film.stored.astype(np.float64) - film.dark_offset_adu
    bound = 0.5 / (film.gain_adu * np.exp(-p)) * 1.01
    assert np.all(np.abs(-np.log(stored / film.gain_adu) - p) <= bound + 1e-12)
    assert film.encoding.intent == "FOR PROCESSING" and film.encoding.relationship == "LIN" and film.encoding.sign == 1


def test_same_seed_same_film_and_different_seed_differs():
    p, config = phantom(64), film_preset("presentation")
    a = film_from_line_integrals(p, (3.0, 3.0), config, np.random.default_rng(7), magnification=1.7)
    b = film_from_line_integrals(p, (3.0, 3.0), config, np.random.default_rng(7), magnification=1.7)
    c = film_from_line_integrals(p, (3.0, 3.0), config, np.random.default_rng(8), magnification=1.7)
    np.testing.assert_array_equal(a.stored, b.stored)
    np.testing.assert_array_equal(a.signal_adu, b.signal_adu)
    assert not np.array_equal(a.signal_adu, c.signal_adu)


# ---------------------------------------------------------------------------------------------
# blur and scatter
# ---------------------------------------------------------------------------------------------
def test_gaussian_blur_preserves_mean_has_the_right_width_and_removes_high_frequencies():
    rng = np.random.default_rng(3)
    image = rng.random((80, 96))
    blurred = gaussian_blur(image, (2.0, 3.0))
    assert blurred.mean() == pytest.approx(image.mean(), rel=1e-6)
    assert high_frequency_energy(blurred) < 1e-3 * high_frequency_energy(image)
    delta = np.zeros((81, 81))
    delta[40, 40] = 1.0
    psf = gaussian_blur(delta, (2.5, 4.0))
    offsets = np.arange(81) - 40
    assert psf.sum() == pytest.approx(1.0, abs=1e-9)
    assert (psf.sum(axis=1) * offsets**2).sum() == pytest.approx(2.5**2, rel=0.02)
    assert (psf.sum(axis=0) * offsets**2).sum() == pytest.approx(4.0**2, rel=0.02)


def test_focal_spot_blur_scales_with_magnification_and_detector_blur_preserves_mean():
    p = np.zeros((64, 64))
    p[:, 32:] = 2.0  # an edge
    config = bare(focal_spot=FocalSpotConfig(size_mm=1.2))
    sharp = film_from_line_integrals(p, (0.2, 0.2), BARE, np.random.default_rng(0))
    contact = film_from_line_integrals(p, (0.2, 0.2), config, np.random.default_rng(0), magnification=1.0)
    np.testing.assert_array_equal(contact.signal_adu, sharp.signal_adu)  # object on the detector: no blur

    def edge_width(film) -> float:  # 10-90 % rise distance along a row, in pixels
        row = film.signal_adu[32]
        y = (row - row.min()) / (row.max() - row.min())
        return float(np.sum((y > 0.1) & (y < 0.9)))

    m15 = film_from_line_integrals(p, (0.2, 0.2), config, np.random.default_rng(0), magnification=1.5)
    m30 = film_from_line_integrals(p, (0.2, 0.2), config, np.random.default_rng(0), magnification=3.0)
    # Gaussian of FWHM f (M - 1): 0.6 mm and 2.4 mm; 10-90 % width = 1.09 FWHM
    assert edge_width(m15) == pytest.approx(1.09 * 0.6 / 0.2, abs=1.5)
    assert edge_width(m30) == pytest.approx(1.09 * 2.4 / 0.2, abs=1.5)
    noisy = bare(noise=NoiseConfig(electronic_adu=0.0))
    raw = film_from_line_integrals(phantom(64), (0.5, 0.5), noisy, np.random.default_rng(4))
    blurred = film_from_line_integrals(phantom(64), (0.5, 0.5), noisy.replace(detector_blur=DetectorBlurConfig(1.5)),
                                       np.random.default_rng(4))
    assert blurred.signal_adu.mean() == pytest.approx(raw.signal_adu.mean(), rel=1e-6)
    assert high_frequency_energy(blurred.signal_adu) < 0.05 * high_frequency_energy(raw.signal_adu)


def test_scatter_is_a_smooth_positive_offset_with_the_requested_fraction():
    p = phantom(128)
    p[::8, :] += 1.0  # sharp structure the scatter must not reproduce
    spr = 0.6
    clean = film_from_line_integrals(p, (2.0, 2.0), BARE, np.random.default_rng(0))
    film = film_from_line_integrals(p, (2.0, 2.0), bare(scatter=ScatterConfig(spr, fwhm_mm=60.0)), np.random.default_rng(0))
    primary = clean.expected_quanta
    np.testing.assert_allclose(film.expected_quanta - film.scatter_quanta, primary, rtol=1e-12)
    assert film.scatter_quanta.sum() / primary.sum() == pytest.approx(spr, rel=1e-9)
    assert film.scatter_quanta.min() > 0
    assert high_frequency_energy(film.scatter_quanta) < 1e-4 * high_frequency_energy(primary)
    # contrast drops: -log of the film is compressed towards smaller values
    assert np.ptp(film.line_integrals()) < np.ptp(clean.line_integrals())


# ---------------------------------------------------------------------------------------------
# heel, collimation, labels
# ---------------------------------------------------------------------------------------------
def test_heel_effect_direction_and_magnitude():
    n = 100
    flat = np.zeros((n, n))
    film = film_from_line_integrals(flat, (4.0, 4.0), bare(heel=HeelConfig(percent=10.0)), np.random.default_rng(0))
    column = film.expected_quanta[:, n // 2]
    assert np.all(np.diff(column) > 0)  # anode at the top: intensity grows towards the cathode (bottom)
    edge = (n - 1) / n  # |t| of the outermost pixel centres
    assert column[-1] / column[0] == pytest.approx(1.10 ** (2 * edge), rel=1e-9)
    assert np.ptp(film.expected_quanta[n // 2]) == 0.0  # no gradient across the axis
    flipped = film_from_line_integrals(flat, (4.0, 4.0), bare(heel=HeelConfig(10.0, axis="cols", anode_at_start=False)),
                                       np.random.default_rng(0))
    row = flipped.expected_quanta[n // 2]
    assert np.all(np.diff(row) < 0)


def test_collimation_border_reads_the_unexposed_value():
    rows = 100
    pitch = 2.0
    coll = CollimationConfig(border_mm=(20.0, 10.0, 30.0, 0.0), edge_fwhm_mm=0.0)
    config = bare(collimation=coll, noise=NoiseConfig(electronic_adu=3.0),
                  exposure=ExposureConfig(dark_offset_adu=120.0))
    film = film_from_line_integrals(phantom(rows), (pitch, pitch), config, np.random.default_rng(5))
    mask = film.field_mask
    field = np.zeros_like(mask)
    field[10:95, 15:] = True  # 20 mm = 10 rows top, 10 mm = 5 rows bottom, 30 mm = 15 columns left
    np.testing.assert_array_equal(mask, field)
    band = ~mask
    assert np.all(film.expected_quanta[band] == 0.0)
    assert film.signal_adu[band].mean() == pytest.approx(120.0, abs=0.5)  # the dark offset
    assert film.signal_adu[band].std() == pytest.approx(3.0, rel=0.1)  # electronic noise only
    assert film.signal_adu[mask].mean() > 1000.0
    # with a penumbra, the band far from the edges still reads unexposed; presentation shows it white
    soft = film_preset("presentation").replace(collimation=dataclasses.replace(coll, edge_fwhm_mm=3.0), labels=None)
    shown = film_from_line_integrals(phantom(rows), (pitch, pitch), soft, np.random.default_rng(5), magnification=1.5)
    far = np.zeros_like(band)
    far[:7, :] = True
    assert np.all(shown.expected_quanta[far] < 1e-6 * shown.n0_quanta)
    assert np.all(shown.display[far] == 1.0) and np.all(shown.stored[far] == 4095)


def test_labels_saturate_only_small_regions():
    p = phantom(128)
    labels = LabelConfig(marker="R", marker_corner="top-left", text=("SIMULATED", "AP"), text_corner="bottom-right")
    base = film_preset("presentation").replace(collimation=None, noise=None)
    plain = film_from_line_integrals(p, (3.9, 3.9), base.replace(labels=None), np.random.default_rng(0), magnification=1.75)
    film = film_from_line_integrals(p, (3.9, 3.9), base.replace(labels=labels), np.random.default_rng(0), magnification=1.75)
    text, marker = film.annotation_mask, film.marker_mask
    assert 0 < text.mean() < 0.05 and 0 < marker.mean() < 0.02
    assert np.all(film.stored[text] == 4095) and np.all(film.display[text] == 1.0)
    rows, cols = np.nonzero(text)
    assert rows.min() > 64 and cols.min() > 64  # bottom-right block
    rows, cols = np.nonzero(marker)
    assert rows.max() < 64 and cols.max() < 64  # top-left marker
    # the lead marker attenuates the beam by its transmission
    np.testing.assert_allclose(film.expected_quanta[marker], 0.005 * plain.expected_quanta[marker], rtol=1e-9)
    outside = ~(text | marker)
    assert np.mean(film.stored[outside] == 4095) < 0.01
    mono1 = film_from_line_integrals(p, (3.9, 3.9), base.replace(
        labels=labels, encoding=dataclasses.replace(base.encoding, photometric="MONOCHROME1")),
        np.random.default_rng(0), magnification=1.75)
    assert np.all(mono1.stored[text] == 0)  # MONOCHROME1: white is the minimum


def test_glyph_font_and_bitmap_layout():
    assert set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -+.:/") <= set(GLYPHS)
    bitmap = text_bitmap(["RL", "a"])
    assert bitmap.shape == (7 + 2 + 7, 2 * 5 + 1)
    np.testing.assert_array_equal(bitmap[:7, :5], GLYPHS["R"])
    np.testing.assert_array_equal(bitmap[:7, 6:], GLYPHS["L"])
    np.testing.assert_array_equal(bitmap[9:, :5], GLYPHS["A"])
    with pytest.raises(InputError, match="font"):
        text_bitmap(["é"])


# ---------------------------------------------------------------------------------------------
# encodings
# ---------------------------------------------------------------------------------------------
def test_presentation_window_matches_a_dicom_viewer_and_photometric_inverts():
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_voi_lut

    p = phantom(96)
    config = film_preset("presentation").replace(noise=None, labels=None)
    film = film_from_line_integrals(p, (4.0, 4.0), config, np.random.default_rng(0), magnification=1.75)
    enc = film.encoding
    assert (enc.intent, enc.relationship, enc.sign, enc.photometric) == ("FOR PRESENTATION", "LOG", -1, "MONOCHROME2")
    inside = film.field_mask
    assert np.corrcoef(film.stored[inside], p[inside])[0, 1] > 0.95  # denser = higher stored value
    ds = Dataset()
    ds.BitsStored, ds.PixelRepresentation, ds.PhotometricInterpretation = 12, 0, "MONOCHROME2"
    ds.WindowCenter, ds.WindowWidth = enc.window_center, enc.window_width
    viewer = apply_voi_lut(film.stored.astype(np.float64), ds) / 4095.0
    np.testing.assert_allclose(viewer, film.display, atol=1e-6)
    np.testing.assert_allclose(dicom_window(film.stored, enc.window_center, enc.window_width), film.display, atol=1e-6)
    mono1 = film_from_line_integrals(p, (4.0, 4.0), config.replace(
        encoding=dataclasses.replace(config.encoding, photometric="MONOCHROME1")),
        np.random.default_rng(0), magnification=1.75)
    np.testing.assert_array_equal(mono1.stored, 4095 - film.stored)
    assert mono1.encoding.sign == +1
    ds.WindowCenter, ds.WindowWidth = mono1.encoding.window_center, mono1.encoding.window_width
    shown = 1.0 - apply_voi_lut(mono1.stored.astype(np.float64), ds) / 4095.0  # MONOCHROME1: low = white
    np.testing.assert_allclose(shown, film.display, atol=2.0 / 4095)


def test_log_processing_encoding_is_log10_of_the_pixel_kerma():
    p = phantom(64)
    config = BARE.replace(encoding=EncodingConfig(intent="processing", relationship="LOG", bits_stored=12,
                                                  log_counts_per_decade=1000.0))
    film = film_from_line_integrals(p, (2.0, 2.0), config, np.random.default_rng(0))
    kerma = 10.0 * np.exp(-p)  # uGy
    np.testing.assert_array_equal(film.stored, np.clip(np.rint(2048 + 1000 * np.log10(kerma)), 0, 4095))
    assert film.encoding.relationship == "LOG" and film.encoding.sign == 1
    assert film.exposure_index == pytest.approx(100 * np.median(kerma[kerma < 8.0]), rel=1e-6)


def test_presets_and_random_configs_are_valid_and_reproducible():
    p = phantom(48)
    for name in PRESET_NAMES:
        film = film_from_line_integrals(p, (6.0, 6.0), film_preset(name, np.random.default_rng(1)),
                                        np.random.default_rng(1), magnification=1.5)
        assert film.stored.dtype == np.uint16 and film.stored.max() <= film.encoding.max_value
    a = random_film_config(np.random.default_rng(11), 1.0)
    assert a == random_film_config(np.random.default_rng(11), 1.0)
    assert random_film_config(np.random.default_rng(11), 0.0) == film_preset("presentation")
    for seed in range(25):
        config = random_film_config(np.random.default_rng(seed), 1.0)
        assert 1.0 <= config.exposure.detector_air_kerma_uGy <= 30.0
        assert config.scatter is None or 0.1 <= config.scatter.scatter_to_primary <= 1.5
        assert config.heel is None or 0.0 <= config.heel.percent <= 15.0
        film = film_from_line_integrals(p, (6.0, 6.0), config, np.random.default_rng(seed), magnification=1.5)
        assert np.isfinite(film.display).all()
    half = random_film_config(np.random.default_rng(3), 0.5)
    full = random_film_config(np.random.default_rng(3), 1.0)
    base = film_preset("presentation").exposure.detector_air_kerma_uGy
    k_half, k_full = half.exposure.detector_air_kerma_uGy, full.exposure.detector_air_kerma_uGy
    assert k_half == pytest.approx(math.sqrt(base * k_full), rel=1e-9)  # halfway in log scale
    assert FilmConfig.from_dict(json.loads(json.dumps(full.to_dict()))) == full
    with pytest.raises(InputError):
        random_film_config(np.random.default_rng(0), 1.5)


def test_bad_settings_are_refused():
    with pytest.raises(InputError, match="bits_stored"):
        EncodingConfig(bits_stored=20)
    with pytest.raises(InputError, match="no exposed field"):
        film_from_line_integrals(np.zeros((10, 10)), (1.0, 1.0), bare(collimation=CollimationConfig((6.0, 6.0, 0, 0))))
    with pytest.raises(InputError, match="magnification"):
        film_from_line_integrals(np.zeros((10, 10)), (1.0, 1.0), BARE, magnification=0.5)
    with pytest.raises(InputError, match="NaN"):
        film_from_line_integrals(np.full((4, 4), np.nan), (1.0, 1.0), BARE)


def test_film_speed():
    config = film_preset("presentation").replace(labels=LabelConfig(marker="R"))
    rng = np.random.default_rng(0)
    timings = {}
    for n, limit in ((128, 0.25), (512, 2.5)):  # targets 50 ms and 0.5 s, with a margin for busy machines
        p = phantom(n)
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            film_from_line_integrals(p, (430.0 / n, 430.0 / n), config, rng, magnification=1.75)
            best = min(best, time.perf_counter() - start)
        timings[n] = best
        assert best < limit, timings


# ---------------------------------------------------------------------------------------------
# DICOM DX and PNG files
# ---------------------------------------------------------------------------------------------
def simulated_xrays(size: int = 64) -> SimulatedXRays:
    geometry = BiplanarGeometry.preset("x2ct", volume_size=16, xray_size=size)
    line = np.stack([phantom(size), 0.8 * phantom(size).T]).astype(np.float32)
    return SimulatedXRays(line, line / line.max() * 2 - 1, geometry, (0.0, 0.0, 0.0), None, 0.01937)


@pytest.mark.parametrize("preset", ["presentation", "film-mono1", "processing-raw", "processing-log"])
def test_dicom_dx_files_carry_the_tags(tmp_path, preset):
    result = simulated_xrays()
    films = simulate_films(result, preset, seed=4)
    names = write_film_files(tmp_path, films, source="/data/ct.nii.gz")
    assert names == {v: {"dicom_dx_film": f"{v}_film.dcm", "png8_film": f"{v}_film.png"} for v in ("ap", "lateral")}
    geometry = result.geometry
    expected = {"ap": ("AP", ["L", "F"], "R"), "lateral": ("LL", ["P", "F"], "L")}
    datasets = {}
    for view, film in films.films.items():
        path = tmp_path / f"{view}_film.dcm"
        assert path.read_bytes()[128:132] == b"DICM"
        ds = pydicom.dcmread(path)
        datasets[view] = ds
        enc = film.encoding
        processing = enc.intent == "FOR PROCESSING"
        sop = "1.2.840.10008.5.1.4.1.1.1.1.1" if processing else "1.2.840.10008.5.1.4.1.1.1.1"
        assert ds.file_meta.MediaStorageSOPClassUID == sop == ds.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.Modality == "DX" and ds.PresentationIntentType == enc.intent
        assert ds.PhotometricInterpretation == enc.photometric == film.config.encoding.photometric
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, enc.bits_stored, enc.bits_stored - 1)
        assert ds.PixelRepresentation == 0 and ds.SamplesPerPixel == 1
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept), ds.RescaleType) == (1.0, 0.0, "US")
        assert ds.PixelIntensityRelationship == enc.relationship
        assert ds.PixelIntensityRelationshipSign == enc.sign
        assert ds.PresentationLUTShape == ("IDENTITY" if enc.photometric == "MONOCHROME2" else "INVERSE")
        if processing:
            assert "WindowCenter" not in ds and "WindowWidth" not in ds
        else:
            assert float(ds.WindowCenter) == pytest.approx(enc.window_center)
            assert float(ds.WindowWidth) == pytest.approx(enc.window_width)
        assert [float(v) for v in ds.ImagerPixelSpacing] == pytest.approx(list(geometry.detector_spacing_mm))
        assert float(ds.DistanceSourceToDetector) == pytest.approx(949.0)
        assert float(ds.DistanceSourceToPatient) == pytest.approx(541.0)
        assert float(ds.EstimatedRadiographicMagnificationFactor) == pytest.approx(949.0 / 541.0, rel=1e-8)
        position, orientation, marker = expected[view]
        assert ds.ViewPosition == position and list(ds.PatientOrientation) == orientation
        assert film.config.labels.marker == marker
        assert ds.BodyPartExamined == "CHEST" and ds.ImageLaterality == "U"
        assert ds.AnatomicRegionSequence[0].CodingSchemeDesignator == "SCT"
        assert list(ds.ImageType) == ["DERIVED", "PRIMARY", ""]
        assert "SIMULATED" in str(ds.PatientName) and ds.PatientID.startswith("SIM-")
        assert "SIMULATED" in ds.ImageComments and "ct.nii.gz" in ds.DerivationDescription
        assert ds.BurnedInAnnotation == ("YES" if film.annotation_mask.any() else "NO")
        assert float(ds.ExposureIndex) == pytest.approx(film.exposure_index, abs=0.06)
        np.testing.assert_array_equal(ds.pixel_array, film.stored)
        png = read_xray(tmp_path / f"{view}_film.png")
        assert png.spacing_mm == pytest.approx(geometry.detector_spacing_mm)
        # a film, not one of our normalised line-integral PNGs: labels and scatter are handled
        assert png.metadata["simulated_film"] and not png.metadata.get("written_by_diffux2ct")
        assert Image.open(tmp_path / f"{view}_film.png").mode == "L"
        np.testing.assert_array_equal(png.pixels, np.rint(film.display * 255.0))
        if not processing:  # presentation data read as bright = dense, with the detector spacing
            read = read_xray(path)
            assert read.spacing_mm == pytest.approx(geometry.detector_spacing_mm)
            inside = film.field_mask & ~film.annotation_mask & ~film.marker_mask
            assert np.corrcoef(read.pixels[inside], result.line_integrals[list(films.films).index(view)][inside])[0, 1] > 0.9
    ap, lat = datasets["ap"], datasets["lateral"]
    assert ap.StudyInstanceUID == lat.StudyInstanceUID and ap.SeriesInstanceUID == lat.SeriesInstanceUID
    assert ap.SOPInstanceUID != lat.SOPInstanceUID and (ap.InstanceNumber, lat.InstanceNumber) == (1, 2)


def test_eight_bit_dicom(tmp_path):
    from DiffuX2CTLib.radiograph import DXAcquisition, write_dx_dicom

    config = film_preset("presentation").replace(encoding=EncodingConfig(bits_stored=8))
    film = film_from_line_integrals(phantom(33), (5.0, 5.0), config, np.random.default_rng(0), magnification=1.5)
    geometry = BiplanarGeometry.preset("clinical", 16, 33)
    write_dx_dicom(tmp_path / "x.dcm", film, DXAcquisition.from_geometry(geometry, "ap"))
    ds = pydicom.dcmread(tmp_path / "x.dcm")
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (8, 8, 7)
    np.testing.assert_array_equal(ds.pixel_array, film.stored)
    assert float(ds.DistanceSourceToPatient) == 1650.0 and ds.ViewPosition == "AP"
    assert [p.name for p in tmp_path.iterdir()] == ["x.dcm"]  # no temporary left behind


# ---------------------------------------------------------------------------------------------
# diffux2ct simulate --style radiograph
# ---------------------------------------------------------------------------------------------
def write_ct(path: Path) -> Path:
    z, y, x = np.mgrid[:24, :24, :24]
    hu = np.where((x - 12) ** 2 + (y - 12) ** 2 < 81, 0.0, -1000.0).astype(np.float32)
    hu[4:8, 10:14, 14:18] = 1500.0
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(image, str(path))
    return path


DRR_FILES = ["ap.nrrd", "ap.png", "geometry.json", "lateral.nrrd", "lateral.png"]
FILM_FILES = ["ap_film.dcm", "ap_film.png", "lateral_film.dcm", "lateral_film.png"]


def test_cli_radiograph_style_writes_films_reproducibly(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFUX2CT_CACHE", str(tmp_path / "cache"))
    ct = write_ct(tmp_path / "ct.nrrd")
    common = ["simulate", "--ct", str(ct), "--size", "16", "--xray-size", "40"]
    assert main([*common, "--out", str(tmp_path / "drr")]) == 0
    assert sorted(p.name for p in (tmp_path / "drr").iterdir()) == DRR_FILES
    assert "film" not in json.loads((tmp_path / "drr" / "geometry.json").read_text())

    for out in ("a", "b"):
        assert main([*common, "--out", str(tmp_path / out), "--style", "radiograph", "--seed", "5"]) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(DRR_FILES + FILM_FILES)
    sidecar = json.loads((tmp_path / "a" / "geometry.json").read_text())
    assert sidecar["files"]["ap"]["dicom_dx_film"] == "ap_film.dcm"
    assert sidecar["files"]["lateral"]["png8_film"] == "lateral_film.png"
    assert sidecar["film"]["seed"] == 5 and sidecar["film"]["preset"] == "presentation"
    assert sidecar["film"]["views"]["lateral"]["view_position"] == "LL"
    for name in ("ap_film.dcm", "lateral_film.dcm"):
        a, b = pydicom.dcmread(tmp_path / "a" / name), pydicom.dcmread(tmp_path / "b" / name)
        np.testing.assert_array_equal(a.pixel_array, b.pixel_array)
        assert a.SOPInstanceUID != b.SOPInstanceUID
    assert (tmp_path / "a" / "ap_film.png").read_bytes() == (tmp_path / "b" / "ap_film.png").read_bytes()
    # DRR outputs are the same with and without films
    assert (tmp_path / "a" / "ap.png").read_bytes() == (tmp_path / "drr" / "ap.png").read_bytes()
    assert str(tmp_path / "a" / "lateral_film.dcm") in capsys.readouterr().out

    assert main([*common, "--out", str(tmp_path / "c"), "--style", "radiograph", "--seed", "5",
                 "--film-preset", "processing-raw", "--intent", "presentation", "--monochrome", "1",
                 "--no-labels", "--no-collimation"]) == 0
    ds = pydicom.dcmread(tmp_path / "c" / "ap_film.dcm")
    assert (ds.PresentationIntentType, ds.PhotometricInterpretation, ds.BurnedInAnnotation) == (
        "FOR PRESENTATION", "MONOCHROME1", "NO")
    assert json.loads((tmp_path / "c" / "geometry.json").read_text())["film"]["config"]["collimation"] is None


def test_cli_film_options_need_radiograph_style_and_failures_leave_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFUX2CT_CACHE", str(tmp_path / "cache"))
    ct = write_ct(tmp_path / "ct.nrrd")
    common = ["simulate", "--ct", str(ct), "--size", "16", "--xray-size", "24"]
    out = tmp_path / "out"
    assert main([*common, "--out", str(out), "--film-preset", "ideal"]) == 2
    assert "--style radiograph" in capsys.readouterr().err and not out.exists()

    from DiffuX2CTLib.radiograph import simulation

    def failing_png(path, film):
        if "lateral" in Path(path).name:
            raise InputError(path, "disk full")
        return real_png(path, film)

    real_png = simulation.write_film_png
    monkeypatch.setattr(simulation, "write_film_png", failing_png)
    assert main([*common, "--out", str(out), "--style", "radiograph"]) == 2
    assert "disk full" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # no DRR, no film, no staging folder
