"""CT reading, writing and regridding (DiffuX2CTLib.io.ct)."""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DiffuX2CTLib.errors import InputError
from DiffuX2CTLib.geometry.biplanar import BiplanarGeometry
from DiffuX2CTLib.io import ct as ct_module
from DiffuX2CTLib.io.ct import (
    array_to_image,
    body_center_lps,
    crop_or_pad_cube,
    image_center_lps,
    model_array,
    orient_lps,
    read_ct,
    resample_isotropic,
    antialias_sigmas_mm,
    to_model_grid,
    write_ct,
)

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def rotation(axis: str, degrees: float) -> tuple[float, ...]:
    """Row-major direction matrix of a rotation by ``degrees`` about ``axis``."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    m = {"x": [[1, 0, 0], [0, c, -s], [0, s, c]], "y": [[c, 0, s], [0, 1, 0], [-s, 0, c]],
         "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]]}[axis]
    return tuple(float(v) for row in m for v in row)


OBLIQUE = rotation("x", 15.0)


def write_dicom_series(image: sitk.Image, folder: Path, series_uid: str = "1.2.826.0.1.3680043.2.1125.7.1",
                       prefix: str = "slice") -> list[Path]:
    """Write a float HU image as a CT series, one file per slice, stored unsigned with intercept -1024."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = "1.2.826.0.1.3680043.2.1125.7"
    d = image.GetDirection()
    iop = "\\".join(f"{v:.12g}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    sx, sy, sz = image.GetSpacing()
    stored = sitk.Cast(image, sitk.sitkFloat32)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    for k in range(image.GetSize()[2]):
        sl = stored[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT", "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": study_uid, "0020|000e": series_uid, "0020|0013": str(k + 1),
            "0010|0010": "Phantom^Test", "0010|0020": "PHANTOM",
            "0020|0037": iop, "0020|0032": "\\".join(f"{v:.12g}" for v in position),
            "0028|0030": f"{sy:.12g}\\{sx:.12g}", "0018|0050": f"{sz:.12g}", "0018|0088": f"{sz:.12g}",
            "0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "0",
            "0028|1052": "-1024", "0028|1053": "1", "0028|1054": "HU",
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        path = folder / f"{prefix}{k:03d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(sl)
        paths.append(path)
    return paths


def assert_same_geometry(a: sitk.Image, b: sitk.Image, atol: float = 0.0) -> None:
    assert a.GetSize() == b.GetSize()
    if atol == 0.0:
        assert a.GetSpacing() == b.GetSpacing()
        assert a.GetOrigin() == b.GetOrigin()
        assert a.GetDirection() == b.GetDirection()
    else:
        np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=atol)
        np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=atol)
        np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=atol)


def small_geometry(shape=(10, 12, 14), spacing=(2.0, 1.5, 1.0)) -> BiplanarGeometry:
    return BiplanarGeometry(name="test", source_to_isocenter_mm=500.0, source_to_detector_mm=900.0,
                            detector_shape=(8, 8), detector_spacing_mm=(2.0, 2.0),
                            volume_shape=shape, volume_spacing_mm=spacing)


# --- file round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("direction", [IDENTITY, OBLIQUE], ids=["axial", "oblique15"])
def test_file_round_trip_keeps_geometry_and_values(tmp_path, make_ct, suffix, direction):
    image = make_ct(direction=direction)
    path = write_ct(image, tmp_path / f"ct{suffix}")
    back = read_ct(path)
    assert back.GetPixelID() == sitk.sitkFloat32
    # NIfTI stores the direction as float32: exact up to float32 rounding; the others exactly.
    if suffix.startswith(".nii") and direction is OBLIQUE:
        assert back.GetSpacing() == image.GetSpacing() and back.GetOrigin() == image.GetOrigin()
        np.testing.assert_allclose(back.GetDirection(), direction, rtol=0, atol=1e-7)
    else:
        assert_same_geometry(back, image)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
    assert os.listdir(tmp_path) == [path.name]


def test_write_int16_rounds_and_clips(tmp_path, make_ct):
    image = make_ct()
    values = sitk.GetArrayFromImage(image)
    values[0, 0, :3] = (40000.0, -40000.0, 12.6)
    noisy = sitk.GetImageFromArray(values)
    noisy.CopyInformation(image)
    path = write_ct(noisy, tmp_path / "ct.nrrd", dtype="int16")
    raw = sitk.ReadImage(str(path))
    assert raw.GetPixelID() == sitk.sitkInt16
    assert_same_geometry(raw, image)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(raw)[0, 0, :3], [32767, -32768, 13])
    back = read_ct(path)
    assert back.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back)[1:], np.rint(values[1:]))


@pytest.mark.parametrize("direction", [IDENTITY, OBLIQUE], ids=["axial", "oblique15"])
def test_dicom_series_round_trip(tmp_path, make_ct, direction):
    image = make_ct(size=(12, 10, 6), direction=direction)
    hu = np.rint(sitk.GetArrayFromImage(image))
    image = sitk.GetImageFromArray(hu.astype(np.float32))
    image.SetSpacing((1.5, 1.25, 2.0))
    image.SetOrigin((-20.25, 10.5, -100.125))
    image.SetDirection(direction)
    write_dicom_series(image, tmp_path / "series")
    back = read_ct(tmp_path / "series")
    assert back.GetPixelID() == sitk.sitkFloat32
    assert_same_geometry(back, image, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), hu)  # rescale intercept applied


def test_dicom_folder_with_two_series_needs_series_uid(tmp_path, make_ct):
    a = make_ct(size=(8, 8, 4))
    b = make_ct(size=(8, 8, 5), seed=1)
    write_dicom_series(a, tmp_path, series_uid="1.2.3.4.1", prefix="a")
    write_dicom_series(b, tmp_path, series_uid="1.2.3.4.2", prefix="b")
    with pytest.raises(InputError, match="2 DICOM series") as info:
        read_ct(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert read_ct(tmp_path, series_uid="1.2.3.4.1").GetSize() == (8, 8, 4)
    assert read_ct(tmp_path, series_uid="1.2.3.4.2").GetSize() == (8, 8, 5)
    with pytest.raises(InputError, match="no DICOM series '9.9'"):
        read_ct(tmp_path, series_uid="9.9")


def test_dicom_series_with_missing_slice_is_rejected(tmp_path, make_ct):
    files = write_dicom_series(make_ct(size=(8, 8, 6)), tmp_path / "gap")
    files[3].unlink()
    with pytest.raises(InputError, match="not evenly spaced") as info:
        read_ct(tmp_path / "gap")
    assert "gap" in str(info.value)


# --- real data -----------------------------------------------------------------------------


def test_real_abdomen_nifti(shared_data_dir):
    image = read_ct(shared_data_dir / "abdomen_ct.nii.gz")
    assert image.GetSize() == (122, 101, 112)
    assert image.GetSpacing() == (3.0, 3.0, 3.0)
    assert image.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(image.GetDirection(), (-1, 0, 0, 0, -1, 0, 0, 0, 1), atol=1e-6)
    values = sitk.GetArrayViewFromImage(image)
    assert values.min() <= -1000 and values.max() > 500  # air and bone in HU
    oriented = orient_lps(image)
    assert oriented.GetDirection() == IDENTITY


def test_real_dicom_series(shared_data_dir):
    image = read_ct(shared_data_dir / "abdomen_ct_dicom")
    assert image.GetSize() == (512, 512, 20)
    np.testing.assert_allclose(image.GetSpacing(), (0.9765625, 0.9765625, 2.0), atol=1e-6)
    assert image.GetDirection() == IDENTITY
    assert sitk.GetArrayViewFromImage(image).min() == -1024.0  # rescale intercept -1024 applied


# --- bad inputs ----------------------------------------------------------------------------


def _metaimage(path: Path, spacing: str = "1 1 1", matrix: str = "1 0 0 0 1 0 0 0 1") -> None:
    header = ("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
              f"CompressedData = False\nTransformMatrix = {matrix}\nOffset = 0 0 0\nElementSpacing = {spacing}\n"
              "DimSize = 4 4 4\nElementType = MET_SHORT\nElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + np.zeros(64, np.int16).tobytes())


def _with_value(value: float) -> sitk.Image:
    a = np.zeros((4, 4, 4), np.float32)
    a[1, 2, 3] = value
    return sitk.GetImageFromArray(a)


BAD_INPUTS = {
    "missing.nii.gz": (None, "does not exist"),
    "text.nii.gz": (lambda p: p.write_text("not an image"), "not a readable image"),
    "slice2d.nrrd": (lambda p: sitk.WriteImage(sitk.Image([5, 6], sitk.sitkFloat32), str(p)), "2D"),
    "single_slice.nrrd": (lambda p: sitk.WriteImage(sitk.Image([5, 6, 1], sitk.sitkFloat32), str(p)), "single slice"),
    "series4d.nii.gz": (lambda p: sitk.WriteImage(sitk.Image([4, 4, 4, 2], sitk.sitkFloat32), str(p)), "4D"),
    "vector.nrrd": (lambda p: sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3), str(p)),
                    "multi-component"),
    "nan.nrrd": (lambda p: sitk.WriteImage(_with_value(float("nan")), str(p)), "NaN or infinite"),
    "inf.mha": (lambda p: sitk.WriteImage(_with_value(float("inf")), str(p)), "NaN or infinite"),
    "zero_spacing.mha": (lambda p: _metaimage(p, spacing="0 1 1"), "zero or negative voxel spacing"),
    "negative_spacing.mha": (lambda p: _metaimage(p, spacing="-1 1 1"), "zero or negative voxel spacing"),
    "singular.mha": (lambda p: _metaimage(p, matrix="1 0 0 1 0 0 0 0 1"), "singular direction"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_names_file_and_problem(tmp_path, name):
    make, problem = BAD_INPUTS[name]
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(InputError) as info:
        read_ct(path)
    message = str(info.value)
    assert name in message and problem in message
    assert "\n" not in message


def test_empty_and_non_dicom_folders(tmp_path):
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(InputError, match="empty folder") as info:
        read_ct(empty)
    assert "empty_folder" in str(info.value)
    other = tmp_path / "no_dicom_here"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkFloat32), str(other / "ct.nrrd"))
    with pytest.raises(InputError, match="without any DICOM series") as info:
        read_ct(other)
    assert "no_dicom_here" in str(info.value)


# --- atomic writes -------------------------------------------------------------------------


def test_write_unsupported_extension_leaves_nothing(tmp_path, ct_image):
    for name in ("ct.png", "ct.mhd", "ct.nhdr", "ct"):
        with pytest.raises(InputError, match="unsupported output format") as info:
            write_ct(ct_image, tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(InputError, match="dtype"):
        write_ct(ct_image, tmp_path / "ct.nrrd", dtype="uint8")
    with pytest.raises(InputError, match="NaN") as info:
        write_ct(_with_value(float("nan")), tmp_path / "nan_out.nrrd")
    assert "nan_out.nrrd" in str(info.value)
    assert os.listdir(tmp_path) == []


def test_write_failure_midway_leaves_no_temp_and_keeps_old_file(tmp_path, ct_image, monkeypatch):
    target = tmp_path / "ct.nii.gz"
    target.write_bytes(b"previous")

    def fail(self, image):  # write part of the file, then fail like a full disk
        Path(self.GetFileName()).write_bytes(b"partial")
        raise RuntimeError("ITK ERROR: disk full")

    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", fail)
    with pytest.raises(InputError, match="cannot be written") as info:
        write_ct(ct_image, target)
    assert "ct.nii.gz" in str(info.value)
    assert os.listdir(tmp_path) == ["ct.nii.gz"]
    assert target.read_bytes() == b"previous"


# --- reorientation -------------------------------------------------------------------------


def test_dicomorient_code_lps_gives_identity():
    """SimpleITK's DICOMOrient takes "to" codes: "LPS" (not the legacy "RAI") yields the identity."""
    image = sitk.Image([3, 4, 5], sitk.sitkFloat32)
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert sitk.DICOMOrient(image, "LPS").GetDirection() == IDENTITY
    assert sitk.DICOMOrient(image, "RAI").GetDirection() != IDENTITY


@pytest.mark.parametrize("direction", [
    (-1, 0, 0, 0, -1, 0, 0, 0, 1),          # RAS-like flip, as NIfTI files from RAS tools
    (0, 0, -1, 1, 0, 0, 0, -1, 0),          # permuted and flipped
    (0, 1, 0, 0, 0, 1, 1, 0, 0),            # pure permutation
], ids=["flip", "permute_flip", "permute"])
def test_orient_lps_is_lossless_and_gives_identity(make_ct, direction):
    image = make_ct(size=(6, 5, 4), direction=direction, origin=(3.5, -7.25, 11.0))
    out = orient_lps(image)
    assert out.GetDirection() == IDENTITY
    assert sorted(out.GetSize()) == sorted(image.GetSize())
    src = sitk.GetArrayViewFromImage(image)
    dst = sitk.GetArrayViewFromImage(out)
    for index in itertools.product(*(range(n) for n in out.GetSize())):
        point = out.TransformIndexToPhysicalPoint(index)
        i, j, k = image.TransformPhysicalPointToIndex(point)
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((i, j, k)), point, atol=1e-9)
        assert dst[index[2], index[1], index[0]] == src[k, j, i]


def test_orient_lps_oblique_is_closest_axis_aligned(make_ct):
    permuted_oblique = np.asarray(OBLIQUE).reshape(3, 3)[:, [2, 0, 1]] * np.array([1, -1, 1])
    image = make_ct(size=(6, 5, 4), direction=tuple(permuted_oblique.ravel()))
    out = orient_lps(image)
    np.testing.assert_allclose(out.GetDirection(), OBLIQUE, atol=1e-12)
    for corner in itertools.product((0, 1), repeat=3):
        index = [c * (n - 1) for c, n in zip(corner, out.GetSize())]
        point = out.TransformIndexToPhysicalPoint(index)
        back = image.TransformPhysicalPointToContinuousIndex(point)
        np.testing.assert_allclose(back, np.round(back), atol=1e-9)


# --- resampling, body centre, crop/pad ------------------------------------------------------


@pytest.mark.parametrize("direction", [IDENTITY, OBLIQUE], ids=["axial", "oblique15"])
def test_resample_isotropic_keeps_centre_extent_and_direction(make_ct, direction):
    image = make_ct(size=(24, 20, 16), spacing=(1.5, 1.25, 2.0), direction=direction)
    out = resample_isotropic(image, 1.0)
    assert out.GetSpacing() == (1.0, 1.0, 1.0)
    assert out.GetSize() == (36, 25, 32)
    assert out.GetDirection() == image.GetDirection()
    assert out.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(image_center_lps(out), image_center_lps(image), atol=1e-9)
    extent_in = np.multiply(image.GetSize(), image.GetSpacing())
    extent_out = np.multiply(out.GetSize(), out.GetSpacing())
    assert np.all(np.abs(extent_out - extent_in) <= 1.0)
    coarse = resample_isotropic(image, 4.0, interpolator=sitk.sitkNearestNeighbor)
    assert coarse.GetSize() == (9, 6, 8)
    with pytest.raises(InputError):
        resample_isotropic(image, 0.0)


def test_body_center_uses_largest_component(make_ct):
    a = np.full((20, 18, 16), -1024.0, np.float32)
    a[4:15, 3:12, 2:9] = 50.0         # body: k 4..14, j 3..11, i 2..8
    a[17:19, 15:17, 13:15] = 1000.0   # small separate object (table, marker)
    image = sitk.GetImageFromArray(a)
    image.SetSpacing((1.5, 1.25, 2.0))
    image.SetOrigin((5.0, -3.0, 40.0))
    image.SetDirection(OBLIQUE)
    expected = image.TransformContinuousIndexToPhysicalPoint((5.0, 7.0, 9.0))
    np.testing.assert_allclose(body_center_lps(image), expected, atol=1e-9)
    air = sitk.GetImageFromArray(np.full((4, 5, 6), -1024.0, np.float32))
    np.testing.assert_allclose(body_center_lps(air), image_center_lps(air), atol=1e-12)


@pytest.mark.parametrize("direction", [IDENTITY, OBLIQUE, (0, 0, -1, 1, 0, 0, 0, -1, 0)],
                         ids=["axial", "oblique15", "permute_flip"])
def test_crop_or_pad_cube_is_an_index_shift(make_ct, direction):
    image = make_ct(size=(12, 9, 7), direction=direction)
    center = image.TransformContinuousIndexToPhysicalPoint((3.2, 6.9, 3.0))
    out = crop_or_pad_cube(image, 8, center_lps=center, pad_hu=-2000.0)
    assert out.GetSize() == (8, 8, 8)
    assert out.GetSpacing() == image.GetSpacing() and out.GetDirection() == image.GetDirection()
    start = np.array([0, 3, 0])  # floor(c - 3.5 + 0.5) per axis for c = (3.2, 6.9, 3.0)
    np.testing.assert_allclose(out.GetOrigin(), image.TransformIndexToPhysicalPoint(start.tolist()), atol=1e-9)
    src = sitk.GetArrayViewFromImage(image)
    dst = sitk.GetArrayViewFromImage(out)
    for index in itertools.product(range(8), repeat=3):
        i, j, k = np.add(index, start)
        inside = 0 <= i < 12 and 0 <= j < 9 and 0 <= k < 7
        expected = src[k, j, i] if inside else -2000.0
        assert dst[index[2], index[1], index[0]] == expected
    odd = crop_or_pad_cube(image, 5, center_lps=image.TransformIndexToPhysicalPoint((4, 4, 3)))
    np.testing.assert_allclose(odd.TransformIndexToPhysicalPoint((2, 2, 2)),
                               image.TransformIndexToPhysicalPoint((4, 4, 3)), atol=1e-9)
    far = crop_or_pad_cube(image, 4, center_lps=(1e4, 1e4, 1e4))
    assert np.all(sitk.GetArrayViewFromImage(far) == -1024.0)


def test_crop_or_pad_default_centre_is_body_centre(make_ct):
    image = make_ct()
    out = crop_or_pad_cube(image, 9)
    np.testing.assert_allclose(image_center_lps(out), body_center_lps(image), atol=0.5 * max(image.GetSpacing()) * 3**0.5)


# --- model grid ----------------------------------------------------------------------------


def test_to_model_grid_places_marker_at_expected_index():
    geometry = small_geometry()
    d, h, w = geometry.volume_shape
    sz, sy, sx = geometry.volume_spacing_mm
    center = (12.5, -30.0, 100.0)
    origin = np.asarray(geometry.volume_origin_lps(center))
    # input on the same lattice but flipped in x and y (as a RAS-oriented NIfTI) and larger
    a = np.zeros((d + 4, h + 6, w + 8), np.float32)
    flip = (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)
    image = sitk.GetImageFromArray(a)
    image.SetSpacing((sx, sy, sz))
    image.SetDirection(flip)
    image.SetOrigin(tuple(origin + np.array([(w + 3) * sx, (h + 3) * sy, -2 * sz])))
    target = (3, 5, 9)  # (k, j, i) in the model array
    marker = origin + np.array([target[2] * sx, target[1] * sy, target[0] * sz])
    ii, jj, kk = image.TransformPhysicalPointToIndex(tuple(marker))
    np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((ii, jj, kk)), marker, atol=1e-9)
    a[kk, jj, ii] = 1000.0
    image = sitk.GetImageFromArray(a)
    image.SetSpacing((sx, sy, sz))
    image.SetDirection(flip)
    image.SetOrigin(tuple(origin + np.array([(w + 3) * sx, (h + 3) * sy, -2 * sz])))

    out = to_model_grid(image, geometry, center_lps=center)
    assert out.GetSize() == (w, h, d)
    assert out.GetSpacing() == (sx, sy, sz)
    assert out.GetDirection() == IDENTITY
    assert out.GetOrigin() == geometry.volume_origin_lps(center)
    volume = model_array(out)
    assert volume.shape == geometry.volume_shape and volume.dtype == np.float32
    assert np.unravel_index(np.argmax(volume), volume.shape) == target
    assert volume[target] == pytest.approx(1000.0, abs=1e-3)
    assert np.count_nonzero(np.abs(volume) > 1e-3) == 1

    # the same marker seen through an oblique grid (10 degrees about x, centred on the marker)
    tilt = rotation("x", 10.0)
    size = np.array([w + 9, h + 9, d + 9])
    spacing = np.array([sx, sy, sz])
    tilted_origin = marker - np.asarray(tilt).reshape(3, 3) @ ((size - 1) / 2.0 * spacing)
    tilted = sitk.Resample(image, size.tolist(), sitk.Transform(), sitk.sitkLinear, tuple(tilted_origin),
                           tuple(spacing), tilt, 0.0)
    back = model_array(to_model_grid(tilted, geometry, center_lps=center))
    assert np.unravel_index(np.argmax(back), back.shape) == target
    assert back[target] == pytest.approx(1000.0, abs=1e-2)


def test_to_model_grid_defaults_to_body_centre_and_air_outside(make_ct):
    image = make_ct(direction=OBLIQUE)
    geometry = small_geometry(shape=(16, 16, 16), spacing=(3.0, 3.0, 3.0))
    out = to_model_grid(image, geometry)
    np.testing.assert_allclose(out.GetOrigin(), geometry.volume_origin_lps(body_center_lps(image)), atol=1e-9)
    volume = model_array(out)
    assert volume[0, 0, 0] == -1024.0 and volume[-1, -1, -1] == -1024.0
    assert volume.max() > 0


def test_array_to_image_restores_model_grid(make_ct):
    geometry = small_geometry()
    center = (1.0, 2.0, 3.0)
    out = to_model_grid(make_ct(), geometry, center_lps=center)
    volume = model_array(out)
    restored = array_to_image(volume, geometry, center)
    assert_same_geometry(restored, out)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(restored), volume)
    torch = pytest.importorskip("torch")
    restored_t = array_to_image(torch.from_numpy(volume), geometry, center)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(restored_t), volume)
    with pytest.raises(InputError, match="does not match"):
        array_to_image(volume[:-1], geometry, center)
    with pytest.raises(InputError, match="identity direction"):
        model_array(make_ct(direction=OBLIQUE))


def test_real_abdomen_to_model_grid(shared_data_dir):
    image = read_ct(shared_data_dir / "abdomen_ct.nii.gz")
    geometry = BiplanarGeometry.preset("x2ct", volume_size=32)
    center = body_center_lps(image)
    out = to_model_grid(image, geometry)
    assert out.GetOrigin() == geometry.volume_origin_lps(center)
    volume = model_array(out)
    assert volume.shape == (32, 32, 32)
    assert volume.min() >= -1024.5 and volume.max() > 300


def test_module_exports():
    assert set(ct_module.__all__) >= {"read_ct", "write_ct", "orient_lps", "resample_isotropic", "body_center_lps",
                                      "crop_or_pad_cube", "to_model_grid", "model_array", "array_to_image"}


def test_model_grid_antialiasing_suppresses_aliasing():
    """Stripes of 1.5 mm period (above the 2 mm grid's Nyquist limit) must not alias into the
    model grid; without the prefilter they do. Geometry is the same either way."""
    n = 64
    k, j, i = np.mgrid[:n, :n, :n]
    pattern = (400.0 * np.cos(2 * np.pi * (i * 0.5) / 1.5)).astype(np.float32)
    image = sitk.GetImageFromArray(pattern)
    image.SetSpacing((0.5, 0.5, 0.5))
    geometry = small_geometry(shape=(12, 12, 12), spacing=(2.0, 2.0, 2.0))
    center = (15.75, 15.75, 15.75)
    smooth = to_model_grid(image, geometry, center_lps=center)
    aliased = to_model_grid(image, geometry, center_lps=center, antialias=False)
    assert_same_geometry(smooth, aliased)
    assert model_array(smooth).std() < 0.1 * model_array(aliased).std()
    assert antialias_sigmas_mm((0.5, 2.0, 3.0), 2.0) == pytest.approx((np.sqrt(3.75) / 2.3548, 0.0, 0.0), rel=1e-3)
