"""Tests of DiffuX2CTLib.io.xray: reading, normalising, fitting and writing radiographs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image

from DiffuX2CTLib.errors import InputError
from DiffuX2CTLib.geometry.biplanar import BiplanarGeometry
from DiffuX2CTLib.io.xray import (
    XRayImage,
    XRayNormalization,
    fit_to_detector,
    fit_xray_to_detector,
    read_xray,
    write_png16,
    write_xray_nrrd,
)

# ---------------------------------------------------------------------------------------------
# fixtures / helpers
# ---------------------------------------------------------------------------------------------
ROWS, COLS = 8, 10  # non-square so a transpose is caught
SQUARE = (slice(2, 5), slice(5, 9))  # the "dense" square: rows 2..4, cols 5..8


def make_dicom(path: Path, stored: np.ndarray, **tags) -> Path:
    """Write a single-frame uncompressed DICOM (DX) with ``stored`` uint16/int16 pixels."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.ViewPosition = "AP"
    stored = np.asarray(stored)
    frames = stored.shape[0] if stored.ndim == 3 and tags.get("SamplesPerPixel", 1) == 1 else 1
    rows, cols = (stored.shape[1:3] if frames > 1 else stored.shape[:2])
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = stored.dtype.itemsize * 8
    ds.BitsStored = 12 if stored.dtype.itemsize == 2 else 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if stored.dtype.kind == "i" else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for key, value in tags.items():
        setattr(ds, key, value)
    if ds.SamplesPerPixel > 1:
        ds.PlanarConfiguration = 0
    if "PixelData" not in tags:
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def base_image(bg: int, square: int, mid: int) -> np.ndarray:
    a = np.full((ROWS, COLS), bg, dtype=np.uint16)
    a[SQUARE] = square
    a[0, 0] = mid
    return a


def dicom_linear_window(x, center, width, y_min, y_max):
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window, written out for the test."""
    x = np.asarray(x, dtype=np.float64)
    c, w = center - 0.5, width - 1.0
    y = ((x - c) / w + 0.5) * (y_max - y_min) + y_min
    y = np.where(x <= c - w / 2, y_min, y)
    return np.where(x > c + w / 2, y_max, y)


def small_geometry(shape=(120, 100), pitch=(2.0, 2.5)) -> BiplanarGeometry:
    return BiplanarGeometry(
        name="test",
        source_to_isocenter_mm=1000.0,
        source_to_detector_mm=1500.0,
        detector_shape=shape,
        detector_spacing_mm=pitch,
        volume_shape=(8, 8, 8),
        volume_spacing_mm=(1.0, 1.0, 1.0),
    )


def assert_square_is_brightest(pixels: np.ndarray) -> None:
    assert pixels.shape == (ROWS, COLS)
    mask = np.zeros_like(pixels, dtype=bool)
    mask[SQUARE] = True
    assert pixels[mask].min() > pixels[~mask].max()


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------
SLOPE, INTERCEPT = 2.0, -100.0
Y_MIN, Y_MAX = 0 * SLOPE + INTERCEPT, 4095 * SLOPE + INTERCEPT  # 12-bit unsigned, rescaled
WC, WW = 3000.0, 4000.0


def test_dicom_monochrome2_rescale_and_window(tmp_path):
    stored = base_image(bg=100, square=3000, mid=1500)
    path = make_dicom(tmp_path / "m2.dcm", stored, RescaleSlope=SLOPE, RescaleIntercept=INTERCEPT,
                      WindowCenter=WC, WindowWidth=WW)
    modality = stored * SLOPE + INTERCEPT

    raw = read_xray(path, apply_voi=False)
    np.testing.assert_array_equal(raw.pixels, modality.astype(np.float32))
    assert raw.metadata["voi_applied"] is None

    img = read_xray(path)
    expected = dicom_linear_window(modality, WC, WW, Y_MIN, Y_MAX)
    np.testing.assert_allclose(img.pixels, expected, rtol=1e-6)
    assert img.pixels[0, 0] not in (Y_MIN, Y_MAX)  # the mid value lies inside the window
    assert img.metadata["voi_applied"] == "window"
    assert img.metadata["photometric_interpretation"] == "MONOCHROME2"
    assert img.metadata["view_position"] == "AP" and img.metadata["modality"] == "DX"
    assert img.pixels.dtype == np.float32
    assert_square_is_brightest(img.pixels)


def test_dicom_monochrome1_is_inverted_so_dense_is_bright(tmp_path):
    # In MONOCHROME1 low values display white: the dense square has the LOW stored value.
    stored = base_image(bg=3000, square=100, mid=1500)
    path = make_dicom(tmp_path / "m1.dcm", stored, PhotometricInterpretation="MONOCHROME1",
                      RescaleSlope=SLOPE, RescaleIntercept=INTERCEPT, WindowCenter=WC, WindowWidth=WW)
    modality = stored * SLOPE + INTERCEPT

    raw = read_xray(path, apply_voi=False)
    np.testing.assert_allclose(raw.pixels, (Y_MIN + Y_MAX) - modality)
    assert_square_is_brightest(raw.pixels)
    assert raw.metadata["inverted"] is True

    img = read_xray(path)
    expected = (Y_MIN + Y_MAX) - dicom_linear_window(modality, WC, WW, Y_MIN, Y_MAX)
    np.testing.assert_allclose(img.pixels, expected, rtol=1e-6)
    assert_square_is_brightest(img.pixels)


def test_dicom_without_preamble_extension_is_read(tmp_path):
    stored = base_image(bg=10, square=900, mid=50)
    path = make_dicom(tmp_path / "plain.dcm", stored)
    no_ext = tmp_path / "IM0001"
    no_ext.write_bytes(path.read_bytes())
    img = read_xray(no_ext)
    np.testing.assert_array_equal(img.pixels, stored.astype(np.float32))


@pytest.mark.parametrize(
    "tags, spacing, source",
    [
        ({"ImagerPixelSpacing": [0.2, 0.3]}, (0.2, 0.3), "ImagerPixelSpacing"),
        ({"ImagerPixelSpacing": [0.2, 0.3], "PixelSpacing": [0.1, 0.1]}, (0.2, 0.3), "ImagerPixelSpacing"),
        ({"PixelSpacing": [0.15, 0.25], "EstimatedRadiographicMagnificationFactor": 1.2},
         (0.18, 0.3), "PixelSpacing*EstimatedRadiographicMagnificationFactor"),
        ({"PixelSpacing": [0.15, 0.25]}, (0.15, 0.25), "PixelSpacing (assumed detector plane)"),
        ({}, None, None),
    ],
)
def test_dicom_spacing_sources(tmp_path, tags, spacing, source):
    path = make_dicom(tmp_path / "s.dcm", base_image(0, 100, 50), **tags)
    img = read_xray(path)
    if spacing is None:
        assert img.spacing_mm is None
    else:
        assert img.spacing_mm == pytest.approx(spacing, rel=1e-9)
    assert img.metadata["spacing_source"] == source


# ---------------------------------------------------------------------------------------------
# PNG / TIFF / JPEG
# ---------------------------------------------------------------------------------------------
def test_png16_round_trip_full_precision_and_spacing(tmp_path):
    rng = np.random.default_rng(0)
    image01 = rng.random((17, 23))
    image01[0, :] = np.arange(23) / 65535.0  # adjacent 16-bit codes must stay distinct
    path = tmp_path / "drr.png"
    write_png16(path, image01, spacing_mm=(0.15, 0.25))
    img = read_xray(path)
    assert img.pixels.shape == (17, 23)
    np.testing.assert_allclose(img.pixels / 65535.0, image01, atol=0.5 / 65535 + 1e-9)
    np.testing.assert_array_equal(img.pixels[0], np.arange(23, dtype=np.float32))
    assert len(np.unique(img.pixels)) > 256  # not squeezed to 8 bits
    assert img.spacing_mm == (0.15, 0.25)
    assert [p.name for p in tmp_path.iterdir()] == ["drr.png"]  # no temporary left behind


def test_png8_gray_and_rgb(tmp_path):
    gray = (np.arange(12 * 7).reshape(12, 7) * 3 % 256).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    img = read_xray(tmp_path / "g.png")
    np.testing.assert_array_equal(img.pixels, gray.astype(np.float32))
    assert img.spacing_mm is None and img.metadata["format"] == "png"

    rgb = np.zeros((5, 6, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    Image.fromarray(rgb).save(tmp_path / "c.png")
    img = read_xray(tmp_path / "c.png")
    np.testing.assert_allclose(img.pixels, 0.299 * 200 + 0.587 * 100 + 0.114 * 50, rtol=1e-6)
    assert "luminance" in img.metadata["color_conversion"]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_grayscale(tmp_path, dtype):
    rng = np.random.default_rng(1)
    data = (rng.random((9, 13)) * (200 if dtype == np.uint8 else 60000)).astype(dtype)
    tifffile.imwrite(tmp_path / "x.tif", data)
    img = read_xray(tmp_path / "x.tif")
    np.testing.assert_array_equal(img.pixels, data.astype(np.float32))
    assert img.metadata["format"] == "tiff"


def test_tiff_miniswhite_is_inverted(tmp_path):
    data = base_image(200, 10, 100).astype(np.uint8)  # dense square stored dark
    tifffile.imwrite(tmp_path / "w.tif", data, photometric="miniswhite")
    img = read_xray(tmp_path / "w.tif")
    np.testing.assert_array_equal(img.pixels, 255.0 - data)
    assert_square_is_brightest(img.pixels)


def test_jpeg_approximate(tmp_path):
    yy, xx = np.mgrid[0:32, 0:48]
    data = (100 + 80 * np.sin(xx / 8.0) * np.cos(yy / 10.0)).astype(np.uint8)
    Image.fromarray(data).save(tmp_path / "x.jpg", quality=95)
    img = read_xray(tmp_path / "x.jpg")
    assert img.pixels.shape == (32, 48)
    assert np.abs(img.pixels - data).mean() < 2.0
    assert img.metadata["format"] == "jpeg"


# ---------------------------------------------------------------------------------------------
# NRRD / MHA / NIfTI
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz"])
def test_sitk_round_trip_anisotropic_spacing(tmp_path, suffix):
    rng = np.random.default_rng(2)
    pixels = rng.normal(size=(6, 9)).astype(np.float32)
    path = tmp_path / f"drr{suffix}"
    write_xray_nrrd(path, pixels, (0.5, 1.25))
    raw = sitk.ReadImage(str(path))
    assert raw.GetSize() == (9, 6) and raw.GetSpacing() == pytest.approx((1.25, 0.5))  # (x=col, y=row)
    img = read_xray(path)
    np.testing.assert_array_equal(img.pixels, pixels)
    assert img.spacing_mm == pytest.approx((0.5, 1.25))


def test_sitk_single_slice_3d_is_accepted(tmp_path):
    vol = np.arange(1 * 4 * 5, dtype=np.float32).reshape(1, 4, 5)
    image = sitk.GetImageFromArray(vol)
    image.SetSpacing((0.3, 0.7, 1.0))
    sitk.WriteImage(image, str(tmp_path / "one.mha"))
    img = read_xray(tmp_path / "one.mha")
    np.testing.assert_array_equal(img.pixels, vol[0])
    assert img.spacing_mm == pytest.approx((0.7, 0.3))


# ---------------------------------------------------------------------------------------------
# normalisation
# ---------------------------------------------------------------------------------------------
def test_normalization_numpy_and_torch_agree():
    import torch

    rng = np.random.default_rng(3)
    norm = XRayNormalization()
    batch = rng.gamma(2.0, 3.0, size=(2, 3, 64, 64)).astype(np.float32)
    out_np = norm(batch)
    out_t = norm(torch.from_numpy(batch))
    assert out_np.dtype == np.float32 and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.numpy(), out_np, atol=1e-5)
    # per image, not over the batch
    np.testing.assert_allclose(out_np[1, 2], norm(batch[1, 2]), atol=1e-6)
    for img in out_np.reshape(-1, 64, 64):
        assert img.min() == -1.0 and img.max() == 1.0
    # scale and offset invariant (a DRR and a radiograph differ by an affine map)
    np.testing.assert_allclose(norm(batch[0, 0] * 7.0 + 3.0), out_np[0, 0], atol=1e-5)


@pytest.mark.parametrize("size", [256, 512])
def test_normalization_torch_large_and_differentiable(size):
    import torch

    x = torch.rand(2, 1, size, size, dtype=torch.float32, requires_grad=True)
    y = XRayNormalization(1.0, 99.0)(x)
    assert y.shape == x.shape
    assert float(y.detach().min()) == -1.0 and float(y.detach().max()) == 1.0
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    np.testing.assert_allclose(y.detach().numpy(), XRayNormalization(1.0, 99.0)(x.detach().numpy()), atol=1e-5)


def test_normalization_serialisation_and_errors():
    norm = XRayNormalization(1.0, 98.0)
    again = XRayNormalization.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert again == norm
    with pytest.raises(InputError, match="method"):
        XRayNormalization.from_dict({"method": "zscore"})
    with pytest.raises(InputError, match="unknown"):
        XRayNormalization.from_dict({"low_percentile": 1, "extra": 2})
    with pytest.raises(InputError):
        XRayNormalization(50.0, 10.0)
    with pytest.raises(InputError, match="constant"):
        XRayNormalization()(np.full((8, 8), 3.0))


def test_normalization_constant_image_names_file(tmp_path):
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, np.full((6, 6), 7, np.uint16))
    img = read_xray(path)
    assert img.metadata["constant"] is True
    with pytest.raises(InputError, match="flat.tif"):
        XRayNormalization()(img)


# ---------------------------------------------------------------------------------------------
# fitting to the detector
# ---------------------------------------------------------------------------------------------
def test_fit_to_detector_keeps_mm_scale_and_centres():
    # 0.5 mm pixels, 260 x 300 mm image; a 100 mm x 100 mm square centred at (+20, -30) mm
    spacing = (0.5, 0.5)
    rows, cols = 520, 600
    pixels = np.zeros((rows, cols), np.float32)
    r0 = (rows - 1) / 2 + 20 / spacing[0]
    c0 = (cols - 1) / 2 - 30 / spacing[1]
    rr, cc = np.mgrid[0:rows, 0:cols]
    pixels[(np.abs(rr - r0) < 100) & (np.abs(cc - c0) < 100)] = 1.0
    xray = XRayImage(pixels, spacing)
    geometry = small_geometry(shape=(180, 150), pitch=(2.0, 2.5))  # 360 x 375 mm detector: pad

    fitted = fit_xray_to_detector(xray, geometry, "ap")
    out = fitted.pixels
    assert out.shape == (180, 150) and out.dtype == np.float32
    assert fitted.mm_scale_known and fitted.spacing_mm == (2.0, 2.5)
    # size in mm: integrated profile through the square
    prow = out[:, out.sum(0).argmax()]
    pcol = out[out.sum(1).argmax(), :]
    assert prow.sum() * 2.0 == pytest.approx(100.0, rel=0.02)
    assert pcol.sum() * 2.5 == pytest.approx(100.0, rel=0.02)
    # position: centroid offset from the detector centre in mm
    rc, cc_ = np.mgrid[0:180, 0:150]
    mass = out.sum()
    assert ((rc * out).sum() / mass - 179 / 2) * 2.0 == pytest.approx(20.0, abs=0.3)
    assert ((cc_ * out).sum() / mass - 149 / 2) * 2.5 == pytest.approx(-30.0, abs=0.3)
    # padding outside the 260 x 300 mm image: the background (minimum)
    assert out[0, 0] == 0.0 and out[-1, -1] == 0.0
    np.testing.assert_array_equal(fit_to_detector(xray, geometry, "lateral"), out)


def test_fit_to_detector_crops_large_image():
    geometry = small_geometry(shape=(20, 20), pitch=(1.0, 1.0))  # 20 mm detector
    pixels = np.zeros((200, 200), np.float32)  # 100 mm at 0.5 mm
    pixels[90:110, 90:110] = 1.0  # central 10 mm square
    pixels[0, 0] = -5.0  # outside the detector: must be cropped away
    out = fit_to_detector(XRayImage(pixels, (0.5, 0.5)), geometry)
    assert out.shape == (20, 20)
    assert out.min() > -0.5
    assert out[5:15, 5:15].mean() > 0.8 and out[:3].max() < 0.05


def test_fit_to_detector_unknown_spacing_fills_detector_and_warns():
    geometry = small_geometry(shape=(64, 64), pitch=(3.0, 3.0))
    pixels = np.ones((200, 100), np.float32)
    pixels[0, 0] = 0.0  # background / minimum
    xray = XRayImage(pixels, None, path="nospacing.png")
    with pytest.warns(UserWarning, match="nospacing.png"):
        out = fit_to_detector(xray, geometry)
    fitted = fit_xray_to_detector(xray, geometry)
    assert not fitted.mm_scale_known
    assert fitted.source_spacing_mm == pytest.approx((192 / 200, 192 / 200))
    inside = out > 0.5
    assert inside[:, 32].sum() == 64  # fills the rows
    assert inside[32].sum() == 32 and inside[32, 16:48].all()  # half the columns, centred
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_to_detector(XRayImage(pixels, (1.0, 1.0)), geometry)  # known spacing: no warning


def test_fit_to_detector_rejects_unknown_view():
    geometry = small_geometry()
    with pytest.raises(InputError, match="oblique"):
        fit_to_detector(XRayImage(np.eye(4), (1.0, 1.0)), geometry, "oblique")


# ---------------------------------------------------------------------------------------------
# bad input: every one raises InputError naming the file
# ---------------------------------------------------------------------------------------------
def _bad_missing(d: Path) -> Path:
    return d / "missing.dcm"


def _bad_empty_file(d: Path) -> Path:
    (d / "empty.png").write_bytes(b"")
    return d / "empty.png"


def _bad_text(d: Path) -> Path:
    (d / "notes.txt").write_text("not an image")
    return d / "notes.txt"


def _bad_garbage_png(d: Path) -> Path:
    (d / "fake.png").write_bytes(b"hello, I am not a png")
    return d / "fake.png"


def _bad_truncated_png(d: Path) -> Path:
    Image.fromarray(np.zeros((50, 50), np.uint8) + 7).save(d / "trunc.png")
    data = (d / "trunc.png").read_bytes()
    (d / "trunc.png").write_bytes(data[:40])
    return d / "trunc.png"


def _bad_garbage_nrrd(d: Path) -> Path:
    (d / "broken.nrrd").write_bytes(b"NRRD0004\ntype: float\ndimension: banana\n\n")
    return d / "broken.nrrd"


def _bad_palette_dicom(d: Path) -> Path:
    return make_dicom(d / "palette.dcm", base_image(0, 9, 3).astype(np.uint8),
                      PhotometricInterpretation="PALETTE COLOR")


def _bad_ybr_dicom(d: Path) -> Path:
    rgb = np.zeros((ROWS, COLS, 3), np.uint8)
    return make_dicom(d / "ybr.dcm", rgb, PhotometricInterpretation="YBR_FULL", SamplesPerPixel=3,
                      BitsAllocated=8, BitsStored=8, HighBit=7)


def _bad_multiframe_dicom(d: Path) -> Path:
    return make_dicom(d / "multi.dcm", np.zeros((3, ROWS, COLS), np.uint16))


def _bad_no_pixels_dicom(d: Path) -> Path:
    path = make_dicom(d / "nopix.dcm", base_image(0, 1, 0))
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    return path


def _bad_zero_spacing_dicom(d: Path) -> Path:
    return make_dicom(d / "zerosp.dcm", base_image(0, 1, 0), ImagerPixelSpacing=[0.0, 0.2])


def _bad_negative_spacing_dicom(d: Path) -> Path:
    return make_dicom(d / "negsp.dcm", base_image(0, 1, 0), PixelSpacing=[-0.1, 0.2])


def _bad_volume_nrrd(d: Path) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32)), str(d / "volume.nrrd"))
    return d / "volume.nrrd"


def _bad_multipage_tiff(d: Path) -> Path:
    tifffile.imwrite(d / "stack.tif", np.zeros((3, 5, 6), np.uint16), photometric="minisblack")
    return d / "stack.tif"


def _bad_nan_tiff(d: Path) -> Path:
    a = np.ones((5, 6), np.float32)
    a[2, 3] = np.nan
    tifffile.imwrite(d / "nan.tif", a)
    return d / "nan.tif"


def _bad_inf_nrrd(d: Path) -> Path:
    a = np.ones((5, 6), np.float32)
    a[1, 1] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(a), str(d / "inf.nrrd"))
    return d / "inf.nrrd"


def _bad_empty_tiff(d: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tifffile.imwrite(d / "void.tif", np.zeros((0, 5), np.float32))
    return d / "void.tif"


BAD_INPUTS = {
    "missing": (_bad_missing, "does not exist"),
    "empty file": (_bad_empty_file, "empty"),
    "text file": (_bad_text, "not a supported image"),
    "garbage png": (_bad_garbage_png, "not a supported image"),
    "truncated png": (_bad_truncated_png, "PNG"),
    "broken nrrd": (_bad_garbage_nrrd, "cannot be read"),
    "palette dicom": (_bad_palette_dicom, "PALETTE COLOR"),
    "ybr dicom": (_bad_ybr_dicom, "YBR_FULL"),
    "multi-frame dicom": (_bad_multiframe_dicom, "multi-frame"),
    "dicom without pixels": (_bad_no_pixels_dicom, "no pixel data"),
    "zero spacing": (_bad_zero_spacing_dicom, "positive"),
    "negative spacing": (_bad_negative_spacing_dicom, "positive"),
    "3d volume": (_bad_volume_nrrd, "3D volume"),
    "multi-page tiff": (_bad_multipage_tiff, "3 pages"),
    "nan": (_bad_nan_tiff, "NaN"),
    "inf": (_bad_inf_nrrd, "infinite"),
    "empty image": (_bad_empty_tiff, "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_input_error_naming_file(tmp_path, case):
    make, problem = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(InputError) as info:
        read_xray(path)
    message = str(info.value)
    assert path.name in message and problem in message
    assert "\n" not in message


def test_writers_reject_bad_values_and_leave_nothing(tmp_path):
    with pytest.raises(InputError, match="out.png"):
        write_png16(tmp_path / "out.png", np.full((4, 4), 1.5))
    with pytest.raises(InputError, match="out.nrrd"):
        write_xray_nrrd(tmp_path / "out.nrrd", np.full((4, 4), np.nan), (1.0, 1.0))
    with pytest.raises(InputError, match="out.nrrd"):
        write_xray_nrrd(tmp_path / "out.nrrd", np.ones((4, 4)), (0.0, 1.0))
    with pytest.raises(InputError, match="out.png"):
        write_png16(tmp_path / "out.png", np.ones((2, 3, 4)) * 0.5)
    assert list(tmp_path.iterdir()) == []
