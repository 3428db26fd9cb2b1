"""Real radiographs read correctly: each film style reaches the network like the clean DRR.

A body phantom on the model grid is projected with our DRR projector, then written as the films
a hospital sends (raw FOR PROCESSING detector data, LOG data, MONOCHROME1, VOI-windowed, a
gamma-encoded PNG, burned-in labels and collimation, another magnification, a PA film, a right
lateral, no spacing). After :func:`prepare_xrays` each must correlate >= 0.98 with the network
input of the clean DRR; non-radiographs and malformed files must give one-line InputErrors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from DiffuX2CTLib.errors import InputError
from DiffuX2CTLib.geometry import BiplanarGeometry
from DiffuX2CTLib.inference import prepare_xrays
from DiffuX2CTLib.io.radiograph import RadiographOptions, prepare_radiograph
from DiffuX2CTLib.io.xray import XRayNormalization, fit_xray_to_detector, read_xray

REPO = Path(__file__).resolve().parents[2]
MODEL = BiplanarGeometry.preset("clinical", volume_size=48, xray_size=64)
FILM = MODEL.with_sizes(xray_size=128)  # the same room, a finer detector: the "hospital" films
MIN_CORRELATION = 0.98
NORM = XRayNormalization()
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
ORIENTATION = {"ap": ["L", "F"], "lateral": ["P", "F"]}
VIEW_POSITION = {"ap": "AP", "lateral": "LL"}


def phantom_hu() -> np.ndarray:
    """(D, H, W) = (S, P, L) HU on the model grid: a chest-like body, asymmetric on every axis."""
    n = MODEL.volume_shape[0]
    c = (np.arange(n) - (n - 1) / 2) * MODEL.volume_spacing_mm[0]
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    hu = np.full((n, n, n), -1000.0, np.float32)
    body = (x / 110) ** 2 + (y / 80) ** 2 + (z / 130) ** 2 <= 1
    hu[body] = 30.0
    for side, height, bottom in ((-1, 75, -35), (1, 95, -60)):  # lungs; the right one is shorter (liver)
        lung = ((x - side * 50) / 40) ** 2 + ((y + 5) / 50) ** 2 + ((z - 10) / height) ** 2 <= 1
        hu[body & lung & (z > bottom)] = -800.0
    hu[((x - 30) / 45) ** 2 + ((y + 25) / 38) ** 2 + ((z + 15) / 45) ** 2 <= 1] = 60.0  # heart, patient left
    hu[((x - 45) / 22) ** 2 + ((y + 20) / 20) ** 2 + ((z + 75) / 14) ** 2 <= 1] = -900.0  # stomach gas, left
    for level in range(-50, 110, 26):  # ribs: bony rings just inside the skin, sloping down laterally
        ring = (x / 104) ** 2 + (y / 74) ** 2
        hu[body & (ring >= 0.8) & (np.abs(z - level - 0.15 * np.abs(x)) < 5)] = 500.0
    hu[body & ((x / 16) ** 2 + ((y - 50) / 16) ** 2 <= 1)] = 700.0  # spine, posterior
    hu[(np.abs(z - 95) < 8) & (np.abs(y + 45) < 8) & (x > -95) & (x < -20)] = 900.0  # right clavicle
    hu[(np.abs(z - 60) < 12) & (np.abs(y + 60) < 6) & (np.abs(x - 60) < 15)] = 2500.0  # pacemaker, left, anterior
    return hu


def line_integrals(geometry: BiplanarGeometry, hu: np.ndarray) -> np.ndarray:
    """(2, rows, cols) float64 DRR line integrals (AP, lateral) of ``hu`` for ``geometry``."""
    from DiffuX2CTLib.drr import DRRProjector

    with torch.no_grad():
        lines = DRRProjector(geometry)(torch.from_numpy(np.ascontiguousarray(hu))[None, None])
    return lines[0].double().numpy()


@pytest.fixture(scope="module")
def drr():
    """Clean model-detector DRRs (the reference) and the film DRRs of the phantom."""
    hu = phantom_hu()
    mag = BiplanarGeometry(name="film-x1.6", source_to_isocenter_mm=1000.0, source_to_detector_mm=1600.0,
                           detector_shape=(128, 128), detector_spacing_mm=(5.0, 5.0),
                           volume_shape=MODEL.volume_shape, volume_spacing_mm=MODEL.volume_spacing_mm)
    model = line_integrals(MODEL, hu)
    return {
        "model": model,
        "reference": prepare_xrays(model[0], model[1], MODEL, NORM),
        "film": line_integrals(FILM, hu),
        "magnified": line_integrals(mag, hu),
        "mag_geometry": mag,
        "pa": line_integrals(FILM, hu[:, ::-1, :])[0],  # mirrored front/back = source behind the patient
        "rl": line_integrals(FILM, hu[:, :, ::-1])[1],  # mirrored left/right = source on the left
    }


def correlations(inputs: np.ndarray, reference: np.ndarray) -> list[float]:
    return [float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) for a, b in zip(inputs, reference)]


def write_dicom(path: Path, stored: np.ndarray, view: str, *, spacing=FILM.detector_spacing_mm,
                sid=FILM.source_to_detector_mm, sod=FILM.source_to_isocenter_mm, **tags) -> Path:
    """A single-frame uncompressed DX file; ``None`` for a tag leaves it out."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    values = {"Modality": "DX", "SOPClassUID": DX_PRESENTATION, "PhotometricInterpretation": "MONOCHROME2",
              "PresentationIntentType": "FOR PRESENTATION", "ViewPosition": VIEW_POSITION[view],
              "PatientOrientation": ORIENTATION[view], "ImagerPixelSpacing": list(spacing) if spacing else None,
              "DistanceSourceToDetector": sid, "DistanceSourceToPatient": sod, "BitsStored": 16}
    values.update(tags)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = values["SOPClassUID"]
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    stored = np.ascontiguousarray(stored, dtype=np.uint16)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.PixelRepresentation = 1, 16, 0
    for key, value in values.items():
        if value is not None:
            setattr(ds, key, value)
    ds.HighBit = int(ds.BitsStored) - 1
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def film_pair(folder: Path, make, name: str) -> tuple[Path, Path]:
    """``make(view, stem)`` -> file, for the AP and the lateral view (stems ``NAME_ap``, ``NAME_lateral``)."""
    folder.mkdir(parents=True, exist_ok=True)
    return tuple(make(view, folder / f"{name}_{view}") for view in ("ap", "lateral"))  # type: ignore[return-value]


def unit(p: np.ndarray) -> np.ndarray:
    """Line integrals scaled to [0, 1] (0 = air)."""
    return np.clip(p / p.max(), 0.0, 1.0)


def raw_counts(p: np.ndarray, gain: float = 60000.0) -> np.ndarray:
    """A linear detector: I = G exp(-p), in counts."""
    return np.round(gain * np.exp(-p))


# --- one function per film style: (view, line integrals, path stem) -> file ------------------
def lin_processing(view, p, stem):
    return write_dicom(stem.with_suffix(".dcm"), raw_counts(p), view, SOPClassUID=DX_PROCESSING,
                       PresentationIntentType="FOR PROCESSING", PixelIntensityRelationship="LIN",
                       PixelIntensityRelationshipSign=1)


def lin_inverted_sign(view, p, stem):
    return write_dicom(stem.with_suffix(".dcm"), 65535 - raw_counts(p), view, SOPClassUID=DX_PROCESSING,
                       PresentationIntentType="FOR PROCESSING", PixelIntensityRelationship="LIN",
                       PixelIntensityRelationshipSign=-1)


def log_plus(view, p, stem):  # higher values = more X-rays: air bright in the stored values
    return write_dicom(stem.with_suffix(".dcm"), np.round(4000 - 3800 * unit(p)), view, BitsStored=12,
                       PixelIntensityRelationship="LOG", PixelIntensityRelationshipSign=1)


def log_minus(view, p, stem):
    return write_dicom(stem.with_suffix(".dcm"), np.round(100 + 3800 * unit(p)), view, BitsStored=12,
                       PixelIntensityRelationship="LOG", PixelIntensityRelationshipSign=-1)


def monochrome1(view, p, stem):  # a presentation film whose low values are displayed white (dense)
    return write_dicom(stem.with_suffix(".dcm"), np.round(4095 * (1 - unit(p))), view, BitsStored=12,
                       PhotometricInterpretation="MONOCHROME1", PresentationLUTShape="INVERSE")


def voi_windowed(view, p, stem):
    return write_dicom(stem.with_suffix(".dcm"), np.round(400 + 3000 * unit(p)), view, BitsStored=12,
                       PixelIntensityRelationship="LOG", PixelIntensityRelationshipSign=-1,
                       WindowCenter=1900, WindowWidth=3000)


def labelled_collimated(view, p, stem, band: int = 8):
    """A display film with bright collimation bands on every edge and a burned-in "R" label."""
    film = np.round(200 + 3500 * unit(p))
    film[:band], film[-band:], film[:, :band], film[:, -band:] = 3900, 3900, 3900, 3900
    r0, c0 = band + 6, band + 6  # an "R" of 2-pixel strokes, 13 x 9 px, inside the field (over air)
    film[r0:r0 + 13, c0:c0 + 2] = 4095
    film[r0:r0 + 2, c0:c0 + 8] = 4095
    film[r0 + 6:r0 + 8, c0:c0 + 8] = 4095
    film[r0:r0 + 8, c0 + 7:c0 + 9] = 4095
    for k in range(6):
        film[r0 + 7 + k, c0 + 3 + k:c0 + 5 + k] = 4095
    film[-band - 14:-band - 4, -band - 40:-band - 4] = 4095  # a text block in the bottom-right corner
    film[-band - 12:-band - 6:2, -band - 38:-band - 6:3] = 0
    return write_dicom(stem.with_suffix(".dcm"), film, view, BitsStored=12, PixelIntensityRelationship="DISP")


def no_spacing(view, p, stem):
    return write_dicom(stem.with_suffix(".dcm"), np.round(4095 * unit(p)), view, BitsStored=12,
                       spacing=None, sid=None, sod=None)


def gamma_png(view, p, stem):
    code = np.round(255 * unit(p) ** (1 / 2.2)).astype(np.uint8)  # an sRGB-like display encoding
    path = stem.with_suffix(".png")
    Image.fromarray(code).save(path)
    return path


#: These synthetic films carry no scatter, so the raw ones are read without scatter removal
#: (test_xray_scatter.py covers films that have scatter, and what the removal costs on one without).
NO_SCATTER = RadiographOptions(scatter_to_primary=0.0)
STYLES = {
    # name: (writer, options)
    "raw LIN FOR PROCESSING": (lin_processing, NO_SCATTER),
    "LIN sign -1": (lin_inverted_sign, NO_SCATTER),
    "LOG sign +1": (log_plus, RadiographOptions()),
    "LOG sign -1": (log_minus, RadiographOptions()),
    "MONOCHROME1": (monochrome1, RadiographOptions()),
    "VOI window not applied": (voi_windowed, RadiographOptions()),
    "VOI window applied": (voi_windowed, RadiographOptions(apply_voi=True)),
    "label and collimation": (labelled_collimated, RadiographOptions()),
    "no spacing + --pixel-spacing": (no_spacing, RadiographOptions(pixel_spacing_mm=FILM.detector_spacing_mm)),
    "display-gamma PNG": (gamma_png, RadiographOptions(xray_encoding="display", display_gamma=2.2,
                                                       pixel_spacing_mm=FILM.detector_spacing_mm)),
}


@pytest.mark.parametrize("style", list(STYLES))
def test_film_style_reaches_the_network_like_the_clean_drr(drr, tmp_path, style):
    write, options = STYLES[style]
    ap, lateral = film_pair(tmp_path, lambda view, stem: write(view, drr["film"][0 if view == "ap" else 1], stem),
                            style.replace(" ", "_"))
    report: dict = {}
    inputs = prepare_xrays(ap, lateral, MODEL, NORM, options, report=report)
    r = correlations(inputs, drr["reference"])
    print(f"{style}: correlation AP {r[0]:.4f}, lateral {r[1]:.4f}")
    assert min(r) >= MIN_CORRELATION, (style, r, report["warnings"])
    for view in ("ap", "lateral"):
        assert report["views"][view]["encoding_path"]
        assert report["views"][view]["magnification"] == pytest.approx(MODEL.magnification)


def test_a_mixed_pair_takes_an_encoding_per_view(drr, tmp_path):
    """A DICOM AP read by its tags and a display PNG lateral: --xray-encoding lateral=display."""
    from DiffuX2CTLib.worker import build_parser, reading_options

    ap = log_minus("ap", drr["film"][0], tmp_path / "ap")
    lateral = gamma_png("lateral", drr["film"][1], tmp_path / "lateral")
    args = build_parser().parse_args(["--ap", "a", "--lateral", "l", "--checkpoint", "m", "--output", "o.nrrd",
                                      "--xray-encoding", "lateral=display", "--display-gamma", "2.2",
                                      "--pixel-spacing", ",".join(map(str, FILM.detector_spacing_mm))])
    options = reading_options(args)
    assert options.encoding_for("ap") is None and options.encoding_for("lateral") == "display"
    assert options.to_dict()["xray_encoding"] == {"lateral": "display"}
    report: dict = {}
    r = correlations(prepare_xrays(ap, lateral, MODEL, NORM, options, report=report), drr["reference"])
    assert min(r) >= MIN_CORRELATION, (r, report["warnings"])
    assert report["views"]["ap"]["encoding_path"] == "LOG (sign -1) -> v - lo"
    assert report["views"]["lateral"]["encoding_path"].startswith("display (gamma 2.2)")
    assert not any("overrides the DICOM" in w for w in report["warnings"])
    # one encoding for both views overrides the AP's DICOM tags, and says so
    both = RadiographOptions(xray_encoding="display", display_gamma=2.2, pixel_spacing_mm=FILM.detector_spacing_mm)
    report = {}
    prepare_xrays(ap, lateral, MODEL, NORM, both, report=report)
    assert any(w.startswith("ap (ap.dcm): --xray-encoding display overrides the DICOM") for w in report["warnings"])
    with pytest.raises(InputError, match="unknown view 'pa'"):
        RadiographOptions(xray_encoding={"pa": "display"})
    with pytest.raises(InputError, match="unknown X-ray encoding 'film'"):
        RadiographOptions(xray_encoding={"ap": "film"})


def test_encoding_paths_and_warnings_say_what_was_done(drr, tmp_path):
    p = drr["film"][0]
    raw = read_xray(lin_processing("ap", p, tmp_path / "raw"))
    assert raw.metadata["pixel_intensity_relationship"] == "LIN" and raw.metadata["presentation_intent"] == "FOR PROCESSING"
    prepared = prepare_radiograph(tmp_path / "raw.dcm", "ap", MODEL, options=NO_SCATTER)
    assert prepared.image.metadata["encoding_path"] == "LIN -> -ln(I/I0)"
    assert prepared.image.metadata["i0_estimate"] == pytest.approx(60000, rel=1e-3)  # the open field
    # the -ln gives the line integrals themselves (I0 = the unattenuated beam)
    np.testing.assert_allclose(prepared.image.pixels, p, atol=0.02)
    assert prepared.warnings == [] and prepared.summary["scatter_correction"] == "off"
    # by default scatter is removed from linear data, and the worker says so
    default = prepare_radiograph(tmp_path / "raw.dcm", "ap", MODEL)
    note = default.summary["scatter_correction"]
    assert note.startswith("scatter-to-primary ") and "less than the assumed 0.3: the film allows at most" in note
    assert [w.split(": ", 1)[1] for w in default.warnings] == [f"scatter removed assuming {note} (--scatter-to-primary "
                                                              "0 to turn off)"]

    assert prepare_radiograph(lin_inverted_sign("ap", p, tmp_path / "inv"), "ap", MODEL).image.metadata[
        "encoding_path"] == "LIN (sign -1) -> -ln((hi - v)/I0)"
    assert prepare_radiograph(log_plus("ap", p, tmp_path / "lp"), "ap", MODEL).image.metadata[
        "encoding_path"] == "LOG -> hi - v"
    m1 = prepare_radiograph(monochrome1("ap", p, tmp_path / "m1"), "ap", MODEL).image.metadata
    assert m1["encoding_path"] == "no PixelIntensityRelationship -> as displayed (bright = dense)" and m1["inverted"]

    # LIN without a sign, FOR PROCESSING without a relationship: read, with the assumption said
    path = write_dicom(tmp_path / "nosign.dcm", raw_counts(p), "ap", PixelIntensityRelationship="LIN",
                       PresentationIntentType="FOR PROCESSING")
    assert any("assumed +1" in w for w in prepare_radiograph(path, "ap", MODEL).warnings)
    path = write_dicom(tmp_path / "norel.dcm", np.round(4095 * unit(p)), "ap", BitsStored=12,
                       PresentationIntentType="FOR PROCESSING")
    assert any("FOR PROCESSING image without PixelIntensityRelationship" in w
               for w in prepare_radiograph(path, "ap", MODEL).warnings)

    # a PNG without tags: line integrals assumed, and said; our own 16-bit PNGs: no warning
    png = prepare_radiograph(gamma_png("ap", p, tmp_path / "g"), "ap", MODEL,
                             options=RadiographOptions(pixel_spacing_mm=FILM.detector_spacing_mm))
    assert png.image.metadata["encoding_path"] == "line-integral -> as is"
    assert any("assumed its grey levels are line integrals" in w for w in png.warnings)
    assert any("--pixel-spacing" in w for w in png.warnings)
    assert all(w.startswith("ap (g.png): ") for w in png.warnings)


def test_without_the_right_reading_the_old_path_is_far_off(drr, tmp_path):
    """What issue 8 measured: each style read as a line integral (the old behaviour) is wrong."""
    p = drr["film"][0]
    options = RadiographOptions(xray_encoding="line-integral", pixel_spacing_mm=FILM.detector_spacing_mm)
    raw = prepare_radiograph(lin_processing("ap", p, tmp_path / "raw"), "ap", MODEL,
                             options=RadiographOptions(xray_encoding="line-integral"))
    gamma = prepare_radiograph(gamma_png("ap", p, tmp_path / "g"), "ap", MODEL, options=options)
    right = prepare_radiograph(tmp_path / "g.png", "ap", MODEL,
                               options=RadiographOptions(xray_encoding="display", display_gamma=2.2,
                                                         pixel_spacing_mm=options.pixel_spacing_mm))
    reference = drr["reference"][0]
    r_raw, r_gamma, r_right = (correlations(x.pixels[None], reference[None])[0] for x in (raw, gamma, right))
    print(f"raw read as line integral: {r_raw:.3f}; gamma PNG as line integral: {r_gamma:.3f}, as display: "
          f"{r_right:.3f}; mean shift {np.abs(gamma.pixels - reference).mean():.3f}")
    assert r_raw < 0.5 and r_right > r_gamma and np.abs(gamma.pixels - reference).mean() > 0.05
    assert np.abs(right.pixels - reference).mean() < np.abs(gamma.pixels - reference).mean() / 2


def test_voi_window_that_clips_is_left_out_by_default(drr, tmp_path):
    p = drr["film"][0]
    path = write_dicom(tmp_path / "lung.dcm", np.round(400 + 3000 * unit(p)), "ap", BitsStored=12,
                       PixelIntensityRelationship="LOG", PixelIntensityRelationshipSign=-1,
                       WindowCenter=1000, WindowWidth=800)  # a narrow lung window clips the body
    reference = drr["reference"][0]
    default = prepare_radiograph(path, "ap", MODEL)
    applied = prepare_radiograph(path, "ap", MODEL, options=RadiographOptions(apply_voi=True))
    r_default, r_applied = (correlations(x.pixels[None], reference[None])[0] for x in (default, applied))
    assert default.image.metadata["voi_applied"] is None and applied.image.metadata["voi_applied"] == "window"
    assert r_default >= MIN_CORRELATION > r_applied
    # LIN data never gets a VOI, even when asked
    raw = write_dicom(tmp_path / "raw.dcm", raw_counts(p), "ap", PixelIntensityRelationship="LIN",
                      PixelIntensityRelationshipSign=1, WindowCenter=30000, WindowWidth=1000)
    linear = prepare_radiograph(raw, "ap", MODEL, options=RadiographOptions(apply_voi=True))
    assert linear.image.metadata["voi_applied"] is None and any("VOI window not applied" in w for w in linear.warnings)


def test_labels_and_collimation_are_found_masked_and_reported(drr, tmp_path):
    path = labelled_collimated("ap", drr["film"][0], tmp_path / "lc")
    stored = read_xray(path).pixels
    prepared = prepare_radiograph(path, "ap", MODEL)
    overlays = prepared.image.metadata["overlays"]
    assert overlays["bands"] == {"top": 8, "bottom": 8, "left": 8, "right": 8}
    mask = prepared.image.valid_mask
    assert not mask[stored == 4095].any()  # every label pixel is left out ...
    assert overlays["label_pixels"] < 3 * int((stored == 4095).sum())  # ... and not much more
    assert not mask[:8].any() and not mask[:, -8:].any() and mask[40:90, 40:90].all()
    text = " | ".join(prepared.warnings)
    assert "collimation border found (top 8, bottom 8, left 8, right 8 px)" in text
    assert "burned-in label found" in text and "top-left" in text and "bottom-right" in text
    assert 0.1 < prepared.summary["masked_fraction"] < 0.5
    # without the masking the bands and labels dominate the statistics
    plain = prepare_radiograph(path, "ap", MODEL, options=RadiographOptions(detect_overlays=False))
    r_plain = correlations(plain.pixels[None], drr["reference"][:1])[0]
    r_masked = correlations(prepared.pixels[None], drr["reference"][:1])[0]
    print(f"label and collimation: masked {r_masked:.4f}, not masked {r_plain:.4f}")
    assert r_masked >= MIN_CORRELATION > r_plain


def test_clean_drr_films_have_no_overlays(drr, tmp_path):
    """No false labels or bands on the DRRs themselves (16-bit PNG and DICOM display films)."""
    from DiffuX2CTLib.io.xray import write_png16
    from DiffuX2CTLib.io.xray_overlays import find_overlays

    for i, view in enumerate(("ap", "lateral")):
        for film in (drr["film"][i], drr["pa"], drr["rl"], drr["magnified"][i]):
            found = find_overlays(unit(film))
            assert not found.any, (view, found.bands, int(found.labels.sum()))
        write_png16(tmp_path / f"{view}.png", unit(drr["film"][i]), spacing_mm=FILM.detector_spacing_mm)
        assert prepare_radiograph(tmp_path / f"{view}.png", view, MODEL).warnings == []


@pytest.mark.parametrize("tags", ["sid-sod", "ermf", "pixel-spacing-calibrated"])
def test_film_at_another_magnification_is_scaled_at_the_isocentre(drr, tmp_path, tags):
    geometry = drr["mag_geometry"]  # SOD 1000, SID 1600: magnification 1.6, 5 mm detector pixels
    spacing = geometry.detector_spacing_mm
    extra = {"sid-sod": {}, "ermf": {"sid": None, "sod": None, "EstimatedRadiographicMagnificationFactor": 1.6},
             "pixel-spacing-calibrated": {"spacing": None, "sid": None, "sod": None,
                                          "PixelSpacing": [s / 1.6 for s in spacing],
                                          "PixelSpacingCalibrationType": "GEOMETRY"}}[tags]

    def write(view, stem):
        p = drr["magnified"][0 if view == "ap" else 1]
        return write_dicom(stem.with_suffix(".dcm"), np.round(4095 * unit(p)), view, BitsStored=12,
                           **{"spacing": spacing, "sid": 1600.0, "sod": 1000.0, **extra})

    ap, lateral = film_pair(tmp_path, write, "mag")
    report: dict = {}
    inputs = prepare_xrays(ap, lateral, MODEL, NORM, report=report)
    r = correlations(inputs, drr["reference"])
    print(f"magnification x1.6 ({tags}): correlation AP {r[0]:.4f}, lateral {r[1]:.4f}")
    assert min(r) >= MIN_CORRELATION, (r, report)
    iso = report["views"]["ap"]["isocenter_spacing_mm"]
    assert iso == pytest.approx([5.0 / 1.6] * 2)
    assert report["views"]["ap"]["model_detector_spacing_mm"] == pytest.approx([5.0 / 1.6 * MODEL.magnification] * 2)
    # the old reading: the file's spacing taken as the model's detector pitch, magnification ignored
    old = np.stack([NORM.normalize_numpy(fit_xray_to_detector(read_xray(path), MODEL, view).pixels)
                    for path, view in ((ap, "ap"), (lateral, "lateral"))])
    r_old = correlations(old, drr["reference"])
    print(f"  old reading (magnification ignored): AP {r_old[0]:.4f}, lateral {r_old[1]:.4f}")
    assert max(r_old) < MIN_CORRELATION


def test_pa_film_and_right_lateral_are_flipped_into_the_model_convention(drr, tmp_path):
    pa = write_dicom(tmp_path / "pa.dcm", np.round(4095 * unit(drr["pa"][:, ::-1])), "ap", BitsStored=12,
                     ViewPosition="PA", PatientOrientation=["R", "F"])  # as seen from the source
    rl = write_dicom(tmp_path / "rl.dcm", np.round(4095 * unit(drr["rl"][:, ::-1])), "lateral", BitsStored=12,
                     ViewPosition="RL", PatientOrientation=["A", "F"])  # anterior on the right
    report: dict = {}
    inputs = prepare_xrays(pa, rl, MODEL, NORM, report=report)
    r = correlations(inputs, drr["reference"])
    print(f"PA film + right lateral: correlation AP {r[0]:.4f}, lateral {r[1]:.4f}")
    assert min(r) >= MIN_CORRELATION
    assert report["views"]["ap"]["orientation_applied"] == ["flip columns"]
    assert report["views"]["lateral"]["orientation_applied"] == ["flip columns"]
    text = " | ".join(report["warnings"])
    assert "ap (pa.dcm): PatientOrientation R\\F: flip columns" in text and "a PA film is used as the AP view" in text
    assert "lateral (rl.dcm): PatientOrientation A\\F: flip columns" in text and "right lateral" in text
    # left mirrored they would miss the bar: the phantom is asymmetric
    assert max(correlations(inputs[:, :, ::-1], drr["reference"])) < MIN_CORRELATION

    # a transposed film (rows towards the patient's left) is transposed back
    transposed = write_dicom(tmp_path / "t.dcm", np.round(4095 * unit(drr["film"][0])).T, "ap", BitsStored=12,
                             PatientOrientation=["F", "L"])
    t = prepare_radiograph(transposed, "ap", MODEL)
    assert t.image.metadata["orientation_applied"] == ["transpose"]
    assert correlations(t.pixels[None], drr["reference"][:1])[0] >= MIN_CORRELATION


@pytest.mark.parametrize("view_position, orientation, view, message", [
    ("LL", ["P", "F"], "ap", "ViewPosition LL is a lateral view; it cannot be the ap view"),
    ("AP", ["L", "F"], "lateral", "ViewPosition AP is a frontal view; it cannot be the lateral view"),
    ("", ["A", "F"], "ap", "PatientOrientation A\\F describes a lateral view; it cannot be the ap view"),
    ("RAO", ["L", "F"], "ap", "ViewPosition RAO is an oblique view"),
])
def test_a_film_of_the_other_view_is_refused(drr, tmp_path, view_position, orientation, view, message):
    path = write_dicom(tmp_path / "wrong.dcm", np.round(4095 * unit(drr["film"][0])), "ap", BitsStored=12,
                       ViewPosition=view_position or None, PatientOrientation=orientation)
    with pytest.raises(InputError) as info:
        prepare_radiograph(path, view, MODEL)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_film_without_spacing_is_refused_unless_given(drr, tmp_path):
    path = no_spacing("ap", drr["film"][0], tmp_path / "nosp")
    with pytest.raises(InputError, match=r"nosp.dcm: has no pixel spacing .*--pixel-spacing ROW,COL .*--field-of-view-mm"):
        prepare_radiograph(path, "ap", MODEL)
    width = FILM.detector_spacing_mm[1] * 128
    for options in (RadiographOptions(pixel_spacing_mm=FILM.detector_spacing_mm),
                    RadiographOptions(field_of_view_mm=(width,)), RadiographOptions(field_of_view_mm=(width, width))):
        prepared = prepare_radiograph(path, "ap", MODEL, options=options)
        assert correlations(prepared.pixels[None], drr["reference"][:1])[0] >= MIN_CORRELATION
        assert prepared.summary["isocenter_spacing_mm"] == pytest.approx(
            [FILM.detector_spacing_mm[0] / MODEL.magnification] * 2)
        assert any("magnification unknown" in w for w in prepared.warnings)
    # a file with its own spacing keeps it; the option is ignored, and said so
    own = prepare_radiograph(monochrome1("ap", drr["film"][0], tmp_path / "own"), "ap", MODEL,
                             options=RadiographOptions(pixel_spacing_mm=(9.0, 9.0)))
    assert any("ignored" in w for w in own.warnings)
    assert own.summary["isocenter_spacing_mm"] == pytest.approx([FILM.detector_spacing_mm[0] / MODEL.magnification] * 2)


# --- not radiographs, malformed files ---------------------------------------------------------
def _pydicom_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available")
    return Path(path)


@pytest.mark.parametrize("make, message", [
    (lambda d: write_dicom(d / "ct.dcm", np.zeros((8, 8)), "ap", Modality="CT", SOPClassUID="1.2.840.10008.5.1.4.1.1.2"),
     "Modality CT (computed tomography) is not an X-ray projection radiograph"),
    (lambda d: _pydicom_file("CT_small.dcm"), "Modality CT (computed tomography)"),
    (lambda d: _pydicom_file("MR_small.dcm"), "Modality MR (magnetic resonance)"),
    (lambda d: _pydicom_file("rtdose_1frame.dcm"), "Modality RTDOSE (radiotherapy dose)"),
    (lambda d: write_dicom(d / "mg.dcm", np.zeros((8, 8)), "ap", Modality="MG"), "Modality MG (mammography)"),
    (lambda d: write_dicom(d / "us.dcm", np.zeros((8, 8)), "ap", Modality="US"), "Modality US (ultrasound)"),
    (lambda d: write_dicom(d / "dxct.dcm", np.zeros((8, 8)), "ap", SOPClassUID="1.2.840.10008.5.1.4.1.1.2"),
     "Modality DX but SOP class 'CT Image Storage'"),
])
def test_dicom_that_is_not_a_radiograph_is_refused(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError) as info:
        read_xray(path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_secondary_capture_is_read_with_a_warning(drr, tmp_path):
    path = write_dicom(tmp_path / "sc.dcm", np.round(4095 * unit(drr["film"][0])), "ap", BitsStored=12,
                       Modality="OT", SOPClassUID="1.2.840.10008.5.1.4.1.1.7")
    prepared = prepare_radiograph(path, "ap", MODEL)
    assert any("secondary capture" in w for w in prepared.warnings)
    assert correlations(prepared.pixels[None], drr["reference"][:1])[0] >= MIN_CORRELATION


def _malformed_dx(d: Path) -> Path:
    path = write_dicom(d / "bad.dcm", np.zeros((8, 8)), "ap", DistanceSourceToDetector="1800.5")
    data = path.read_bytes()
    assert data.count(b"1800.5") == 1
    path.write_bytes(data.replace(b"1800.5", b"18x0.5"))  # a DS value that is not a number
    return path


def _malformed_frames(d: Path) -> Path:
    path = write_dicom(d / "frames.dcm", np.zeros((8, 8)), "ap", NumberOfFrames="1")
    data = path.read_bytes()
    index = data.index(b"\x28\x00\x08\x00IS")  # (0028,0008) Number of Frames, explicit VR
    length = int.from_bytes(data[index + 6:index + 8], "little")
    path.write_bytes(data[:index + 8] + b"1A".ljust(length) + data[index + 8 + length:])  # IS "1A"
    return path


def _truncated(d: Path) -> Path:
    path = write_dicom(d / "cut.dcm", np.zeros((64, 64)), "ap")
    path.write_bytes(path.read_bytes()[:-3000])  # pixel data cut short
    return path


@pytest.mark.parametrize("make", [lambda d: _pydicom_file("badVR.dcm"), _malformed_dx, _malformed_frames, _truncated])
def test_malformed_dicom_is_an_input_error(tmp_path, make):
    import warnings

    path = make(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values while reading
        with pytest.raises(InputError) as info:
            prepare_radiograph(path, "ap", MODEL)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert type(info.value).__name__ == "InputError"


def test_options_are_checked():
    for bad in (dict(xray_encoding="film"), dict(display_gamma=0.0), dict(pixel_spacing_mm=(0.1,)),
                dict(field_of_view_mm=(-3.0,)), dict(scatter_to_primary=1.0), dict(scatter_to_primary=-0.1),
                dict(scatter_to_primary=float("nan")), dict(scatter_fwhm_mm=0.0), dict(log_units_per_decade=0.0),
                dict(log_units_per_decade=float("inf")), dict(log_units_per_decade="1000")):
        with pytest.raises(InputError):
            RadiographOptions(**bad)


# --- the worker, end to end, on a raw DICOM pair ----------------------------------------------
def test_worker_reads_a_raw_dicom_pair(drr, tmp_path):
    from DiffuX2CTLib.checkpoint import CheckpointInfo, save_checkpoint
    from DiffuX2CTLib.diffusion.config import DiffusionConfig
    from DiffuX2CTLib.network import DiffuX2CTNet, NetworkConfig

    geometry = BiplanarGeometry.preset("clinical", volume_size=16, xray_size=16)  # the films' room
    torch.manual_seed(0)
    config = NetworkConfig.tiny()
    info = CheckpointInfo(network=config, diffusion=DiffusionConfig(), geometry=geometry, trained=False)
    weights, _ = save_checkpoint(tmp_path / "tiny.safetensors", DiffuX2CTNet(config, geometry).state_dict(), info)
    ap = lin_processing("ap", drr["film"][0], tmp_path / "ap")
    lateral = write_dicom(tmp_path / "rl.dcm", raw_counts(drr["rl"][:, ::-1]), "lateral", SOPClassUID=DX_PROCESSING,
                          PresentationIntentType="FOR PROCESSING", PixelIntensityRelationship="LIN",
                          PixelIntensityRelationshipSign=1, ViewPosition="RL", PatientOrientation=["A", "F"])
    out = tmp_path / "ct.nrrd"
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "DiffuX2CTLib.worker", "--ap", str(ap), "--lateral", str(lateral),
                           "--checkpoint", str(weights), "--steps", "2", "--sampler", "ddim", "--device", "cpu",
                           "--output", str(out), "--no-apply-voi", "--xray-encoding", "auto",
                           "--scatter-to-primary", "0"],  # these synthetic films have no scatter
                          capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "ok" and out.is_file()
    assert isinstance(result["warnings"], list)
    assert any(w.startswith("lateral (rl.dcm): PatientOrientation A\\F: flip columns") for w in result["warnings"])
    assert not any(w.startswith("ap ") for w in result["warnings"])  # the raw AP needed no assumption
    xrays = result["details"]["xrays"]
    assert xrays["ap"]["encoding_path"] == "LIN -> -ln(I/I0)" and xrays["lateral"]["orientation_applied"] == ["flip columns"]
    assert xrays["ap"]["scatter_correction"] == "off"  # --scatter-to-primary 0

    # refused input: exit 2, one line, the JSON still has "warnings"
    bad = subprocess.run([sys.executable, "-m", "DiffuX2CTLib.worker", "--ap", str(lateral), "--lateral", str(lateral),
                          "--checkpoint", str(weights), "--steps", "2", "--device", "cpu", "--output", str(out)],
                         capture_output=True, text=True, env=env, timeout=240)
    assert bad.returncode == 2
    failure = json.loads(bad.stdout.strip().splitlines()[-1])
    assert "ViewPosition RL is a lateral view; it cannot be the ap view" in failure["error"]
    assert failure["warnings"] == [] or isinstance(failure["warnings"], list)
