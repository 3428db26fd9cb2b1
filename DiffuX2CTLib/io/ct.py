"""Read, write and regrid CT volumes with SimpleITK.

Frames: every physical coordinate here is in the DICOM/ITK **LPS** patient frame in mm (see
:mod:`DiffuX2CTLib.geometry.biplanar`). A SimpleITK image maps index ``(i, j, k)`` to
``origin + direction @ (spacing * (i, j, k))``; its numpy array is ``a[k, j, i]`` (D, H, W).
Intensities are Hounsfield units (HU); images returned by :func:`read_ct` are float32.

Pipeline for the model: ``read_ct`` -> ``to_model_grid`` (one linear resampling onto the
geometry's identity-direction grid, centred on the body) -> ``model_array``; a reconstructed
array gets its physical geometry back with ``array_to_image`` and is saved with ``write_ct``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..geometry.biplanar import BiplanarGeometry
from .atomic import atomic_file
from .files import SINGLE_FILE_IMAGE_SUFFIXES

AIR_HU = -1024.0
#: Suffixes :func:`write_ct` accepts: single-file formats only, so the write can be atomic.
WRITE_SUFFIXES = SINGLE_FILE_IMAGE_SUFFIXES
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

Point = tuple[float, float, float]


@contextlib.contextmanager
def _itk_warnings_off() -> Iterator[None]:
    """Silence ITK's console warnings (e.g. "No Series were found") for a short call."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


#: (substring of an ITK exception, lower case) -> what it means for the user's file.
_ITK_MEANINGS = (
    ("unable to determine imageio reader", "not in an image format SimpleITK can read (use NIfTI, NRRD, "
                                           "MetaImage or a folder holding a DICOM series)"),
    ("could not create io object", "not in an image format SimpleITK can read (use NIfTI, NRRD, MetaImage or a "
                                   "folder holding a DICOM series)"),
    ("fread got only", "the voxel data is truncated (the file ends early)"),
    ("but received", "the compressed voxel data is truncated or corrupt"),
    ("_nrrdencodinggzip_read", "the compressed voxel data is truncated or corrupt"),
    ("data not read completely", "the voxel data is truncated (the file ends early)"),
    ("file cannot be read", "the voxel data cannot be read (truncated or corrupt file)"),
    ("permission denied", "permission denied"),
    ("no space left", "no space left on the device"),
    ("read-only file system", "the file system is read-only"),
    ("does not exist", "does not exist"),
    ("doesn't exist", "does not exist"),
)


def _itk_message(exc: BaseException) -> str:
    """What an ITK exception says about the user's file, in plain words (never a ``.cxx`` source path).

    Known failures are mapped to a description (:data:`_ITK_MEANINGS`); otherwise the last meaningful
    line is kept without ITK's source location, class name and object address.
    """
    import re

    text = str(exc)
    low = text.lower()
    for needle, meaning in _ITK_MEANINGS:
        if needle in low:
            return meaning
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[-1] if lines else type(exc).__name__
    line = re.sub(r"\S*\.(?:cxx|cpp|hxx|txx|h):\d+:?\s*", "", line)
    line = re.sub(r"(?:ITK|itk|sitk)(?:::)?\s*ERROR:\s*", "", line)
    line = re.sub(r"\w+\(0x[0-9a-fA-F]+\):\s*", "", line)
    line = line.replace("Exception thrown in SimpleITK", "").strip(" :")
    return line or "unknown SimpleITK error"


def _check_header(path: Path, dimension: int, components: int, size: Sequence[int],
                  spacing: Sequence[float], direction: Sequence[float]) -> None:
    """Raise InputError unless the header describes a usable scalar 3D volume."""
    if dimension == 2:
        raise InputError(path, f"is a 2D image (size {tuple(size)}), not a CT volume")
    if dimension != 3:
        raise InputError(path, f"is a {dimension}D image (size {tuple(size)}); a 3D CT volume is needed")
    if components != 1:
        raise InputError(path, f"is a multi-component image ({components} values per voxel); a scalar CT is needed")
    if min(size) < 2:
        raise InputError(path, f"has a single slice along one axis (size {tuple(size)}): a 2D image, not a CT volume")
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise InputError(path, f"has zero or negative voxel spacing {tuple(spacing)}")
    matrix = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) < 1e-6:
        raise InputError(path, "has a singular direction matrix")
    if np.abs(matrix.T @ matrix - np.eye(3)).max() > 1e-3:
        raise InputError(path, "has a direction matrix that is not orthonormal (sheared or scaled axes)")


def _check_image(image: sitk.Image, path: str | os.PathLike | None) -> None:
    """Raise InputError unless ``image`` is a finite scalar 3D volume with valid geometry."""
    _check_header(
        Path(path) if path is not None else None,  # type: ignore[arg-type]
        image.GetDimension(), image.GetNumberOfComponentsPerPixel(), image.GetSize(),
        image.GetSpacing(), image.GetDirection(),
    )
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError(path, "has complex voxel values; a real-valued CT is needed")
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        values = sitk.GetArrayViewFromImage(image)
        if not np.all(np.isfinite(values)):
            bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            raise InputError(path, f"has {bad} NaN or infinite voxel values")


def _nifti_data_end(header: bytes) -> int | None:
    """Byte offset where a NIfTI-1 or NIfTI-2 file's voxel data ends (from its header), or None."""
    for order in "<>":
        if len(header) < 4:
            return None
        sizeof_hdr = int(np.frombuffer(header[:4], f"{order}i4")[0])
        if sizeof_hdr == 348 and len(header) >= 348:  # NIfTI-1
            dims = [int(d) for d in np.frombuffer(header[40:56], f"{order}i2")]
            bitpix = int(np.frombuffer(header[72:74], f"{order}i2")[0])
            offset = int(float(np.frombuffer(header[108:112], f"{order}f4")[0]))
        elif sizeof_hdr == 540 and len(header) >= 540:  # NIfTI-2
            dims = [int(d) for d in np.frombuffer(header[16:80], f"{order}i8")]
            bitpix = int(np.frombuffer(header[14:16], f"{order}i2")[0])
            offset = int(np.frombuffer(header[168:176], f"{order}i8")[0])
        else:
            continue
        count = 1
        for d in dims[1:1 + max(0, min(dims[0], 7))]:
            count *= max(1, d)
        return max(offset, sizeof_hdr) + count * max(bitpix, 8) // 8
    return None


def _nrrd_gzip_data_offset(path: Path) -> int | None:
    """Where the gzip-encoded voxel data of an attached-data NRRD starts, or None for other NRRDs."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if not head.startswith(b"NRRD"):
        return None
    end = head.find(b"\n\n")
    if end < 0:
        return None
    fields = {}
    for line in head[:end].decode("latin-1").splitlines()[1:]:
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip("=").strip().lower()
    detached = any(k in fields for k in ("data file", "datafile", "line skip", "lineskip", "byte skip", "byteskip"))
    if detached or fields.get("encoding") not in ("gzip", "gz"):
        return None
    return end + 2


_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


def _metaimage_missing_bytes(path: Path) -> tuple[int, int] | None:
    """``(expected, present)`` voxel-data bytes of a ``.mha`` with LOCAL data, or None when unknown."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    fields, offset = {}, None
    position = 0
    for raw_line in head.split(b"\n"):
        position += len(raw_line) + 1
        key, _, value = raw_line.decode("latin-1").partition("=")
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            offset = position if value.strip() == "LOCAL" else None
            break
    if offset is None:
        return None
    present = path.stat().st_size - offset
    try:
        if fields.get("CompressedData", "False").lower() == "true":
            expected = int(fields["CompressedDataSize"])
        else:
            count = int(np.prod([int(v) for v in fields["DimSize"].split()], dtype=np.float64))
            expected = count * int(fields.get("ElementNumberOfChannels", "1")) * _MET_BYTES[fields["ElementType"]]
    except (KeyError, ValueError):
        return None
    return expected, present


def _read_gzip_stream(path: Path, offset: int = 0, keep: int = 0) -> tuple[int, bytes]:
    """Decompress a gzip stream completely (CRC and length checked); returns (bytes, first ``keep`` bytes)."""
    import gzip
    import zlib

    total, head = 0, b""
    try:
        with open(path, "rb") as raw:
            raw.seek(offset)
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                while block := stream.read(1 << 22):
                    if len(head) < keep:
                        head += block[: keep - len(head)]
                    total += len(block)
    except EOFError as exc:
        raise InputError(path, "is truncated: its compressed data ends before the end of the gzip stream") from exc
    except (gzip.BadGzipFile, zlib.error) as exc:
        text = " ".join(str(exc).split())
        detail = "CRC check failed" if "crc" in text.lower() else (text or type(exc).__name__)
        raise InputError(path, f"has corrupt compressed data ({detail})") from exc
    return total, head


def _is_gzip(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def verify_voxel_data(path: str | os.PathLike) -> None:
    """Raise :class:`InputError` if a CT file's voxel data is truncated or its compression is corrupt.

    SimpleITK reads a NIfTI file (``.nii`` or ``.nii.gz``) that ends early without an error and
    fills the missing voxels with 0 HU. This check decompresses gzip streams completely (so a
    truncated stream or a CRC mismatch is found), compares the NIfTI byte count with the header's
    ``vox_offset + dims x bitpix / 8``, does the same gzip check on gzip-encoded NRRD data, and
    compares a ``.mha`` file's voxel bytes with its header (ITK's own errors for those are vague).
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".gz"):
        if not _is_gzip(path):
            return  # not compressed at all: the image reader says what it is
        total, header = _read_gzip_stream(path, keep=540)
    elif name.endswith(".nii"):
        with open(path, "rb") as f:
            header = f.read(540)
        total = path.stat().st_size
    else:
        offset = _nrrd_gzip_data_offset(path) if name.endswith(".nrrd") else None
        if offset is not None:
            _read_gzip_stream(path, offset)
        sizes = _metaimage_missing_bytes(path) if name.endswith(".mha") else None
        if sizes is not None and sizes[1] < sizes[0]:
            raise InputError(path, f"is truncated: {sizes[1]} bytes of MetaImage voxel data where its header "
                                   f"needs {sizes[0]}")
        return
    if ".nii" in name:
        end = _nifti_data_end(header)
        if end is not None and total < end:
            raise InputError(path, f"is truncated: {total} bytes of NIfTI data where its header needs {end} "
                                   "(the missing voxels would read as 0 HU)")


#: The largest CT :func:`read_ct` accepts, decided from the header before any voxel is read
#: (2**31 voxels are 8 GiB as float32).
MAX_CT_VOXELS = 2**31
#: A CT whose every voxel is at or below this value (HU) holds only air: nothing to project.
AIR_ONLY_MAX_HU = -900.0


def _read_file(path: Path) -> sitk.Image:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with _itk_warnings_off():
            reader.ReadImageInformation()
    except RuntimeError as exc:
        if _is_gzip(path):  # e.g. a truncated stream or a CRC error: say so rather than "not an image"
            try:
                verify_voxel_data(path)
            except OSError:
                pass
        raise InputError(path, f"is not a readable image file: {_itk_message(exc)}") from exc
    _check_header(path, reader.GetDimension(), reader.GetNumberOfComponents(), reader.GetSize(),
                  reader.GetSpacing(), reader.GetDirection())
    voxels = int(np.prod([int(n) for n in reader.GetSize()], dtype=np.float64))
    if voxels > MAX_CT_VOXELS:
        raise InputError(path, f"header declares {tuple(reader.GetSize())} = {voxels} voxels, more than the "
                               f"{MAX_CT_VOXELS} a CT may have here (corrupt header or not a CT)")
    try:
        verify_voxel_data(path)
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from exc
    try:
        with _itk_warnings_off():
            return reader.Execute()
    except RuntimeError as exc:
        raise InputError(path, f"cannot be read: {_itk_message(exc)}") from exc


def _check_slice_positions(path: Path, reader: sitk.ImageSeriesReader, image: sitk.Image) -> None:
    """Raise InputError when the slices of a DICOM series are unevenly spaced or duplicated."""
    normal = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)[:, 2]
    positions = []
    for index in range(image.GetSize()[2]):
        if not reader.HasMetaDataKey(index, "0020|0032"):
            return
        try:
            positions.append([float(v) for v in reader.GetMetaData(index, "0020|0032").split("\\")])
        except ValueError:
            return
    along = np.asarray(positions, dtype=np.float64) @ normal
    gaps = np.diff(along)
    if gaps.size == 0:
        return
    tolerance = max(1e-3, 1e-2 * float(np.median(np.abs(gaps))))
    if np.min(np.abs(gaps)) < 1e-6 or np.ptp(gaps) > tolerance:
        raise InputError(path, f"DICOM slices are not evenly spaced (gaps from {gaps.min():.4g} to "
                               f"{gaps.max():.4g} mm): missing or duplicate slices")


def _describe_series(folder: Path, series: Sequence[str]) -> str:
    """``UID (N files), ...``; GDCM lists files without a SeriesInstanceUID under the empty UID ''."""
    parts = []
    for uid in series:
        with _itk_warnings_off():
            count = len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        files = f"{count} file{'s' if count != 1 else ''}"
        parts.append(f"{uid} ({files})" if uid else f"'' ({files} without a SeriesInstanceUID: --series-uid '')")
    return ", ".join(parts)


def _read_dicom_folder(folder: Path, series_uid: str | None) -> sitk.Image:
    if not any(folder.iterdir()):
        raise InputError(folder, "is an empty folder")
    with _itk_warnings_off():
        series = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if not series:
        raise InputError(folder, "is a folder without any DICOM series")
    if series_uid is None:
        if len(series) > 1:
            raise InputError(folder, f"holds {len(series)} DICOM series; choose one with --series-uid UID "
                                     f"(series_uid= in Python): {_describe_series(folder, series)}")
        series_uid = series[0]
    elif series_uid not in series:
        raise InputError(folder, f"has no DICOM series {series_uid!r} (found: {_describe_series(folder, series)})")
    with _itk_warnings_off():
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        with _itk_warnings_off():
            image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(folder, f"DICOM series cannot be read ({_itk_message(exc)})") from exc
    if image.GetDimension() == 3 and image.GetSize()[2] >= 2:
        _check_slice_positions(folder, reader, image)
    return image


def read_ct(path: str | os.PathLike, series_uid: str | None = None, *, allow_air_only: bool = False) -> sitk.Image:
    """Read a CT volume and return it as a float32 image in HU.

    Args:
        path: a NIfTI (``.nii``/``.nii.gz``), NRRD, MetaImage (``.mha``/``.mhd``) file, or a folder
            holding a DICOM series (rescale slope/intercept applied, so values are HU).
        series_uid: SeriesInstanceUID to read when the folder holds several series (``''`` selects
            the files without one); the CLIs' ``--series-uid``.
        allow_air_only: accept a volume whose every voxel is at or below :data:`AIR_ONLY_MAX_HU`
            (refused by default: such a "CT" holds no patient, e.g. a wrong series or a blank).

    Returns:
        The image cast to float32; spacing (mm), origin (LPS mm) and direction exactly as read
        (no reorientation: use :func:`orient_lps` or :func:`to_model_grid`).

    Raises:
        InputError: naming ``path`` when it is missing, not an image, not a scalar 3D volume,
            truncated or corrupt (:func:`verify_voxel_data`), larger than :data:`MAX_CT_VOXELS`,
            holds NaN/inf values, holds only air, or has non-positive spacing or a singular direction.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.is_dir():
        image = _read_dicom_folder(path, series_uid)
    elif series_uid is not None:
        raise InputError(path, "--series-uid (series_uid) applies only to a folder holding DICOM series")
    else:
        image = _read_file(path)
    _check_image(image, path)
    if not allow_air_only:
        peak = float(np.max(sitk.GetArrayViewFromImage(image)))
        if peak <= AIR_ONLY_MAX_HU:
            raise InputError(path, f"holds only air (every voxel <= {AIR_ONLY_MAX_HU:g} HU, maximum {peak:g}): "
                                   "no patient to project or compare; wrong series or not in HU?")
    if image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    return image


def _write_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in WRITE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    raise InputError(path, f"unsupported output format; use one of {', '.join(WRITE_SUFFIXES)}")


def write_ct(image: sitk.Image, path: str | os.PathLike, dtype: str = "float32", compress: bool = True) -> Path:
    """Write a CT volume atomically (a temporary file renamed into place; nothing partial on failure).

    Args:
        image: scalar 3D image in HU; its spacing, origin and direction are written unchanged.
        path: output file; the format follows the suffix (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``).
        dtype: ``"float32"`` or ``"int16"`` (HU rounded to the nearest integer and clipped to int16).
        compress: compress the voxel data where the format supports it.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    _write_suffix(path)
    if dtype not in ("float32", "int16"):
        raise InputError(path, f"unsupported output dtype {dtype!r}; use 'float32' or 'int16'")
    _check_image(image, path)
    if dtype == "int16":
        values = sitk.GetArrayViewFromImage(image)
        out = sitk.GetImageFromArray(np.rint(np.clip(values, -32768, 32767)).astype(np.int16))
        out.CopyInformation(image)
    else:
        out = image if image.GetPixelID() == sitk.sitkFloat32 else sitk.Cast(image, sitk.sitkFloat32)
    writer = sitk.ImageFileWriter()
    writer.SetUseCompression(bool(compress))
    try:
        with atomic_file(path) as tmp:
            writer.SetFileName(str(tmp))
            try:
                writer.Execute(out)
            except RuntimeError as exc:
                raise InputError(path, f"cannot be written: {_itk_message(exc)}") from exc
    except OSError as exc:  # the folder: missing, read-only, full
        raise InputError(path, f"cannot be written ({exc.strerror or exc})") from exc
    return path


def orient_lps(image: sitk.Image) -> sitk.Image:
    """Permute/flip the axes so the direction is the axis-aligned one closest to the identity.

    Lossless (no interpolation): every voxel keeps its value and physical (LPS) position. For an
    axis-aligned input the result has the identity direction, i.e. index ``i`` -> Left, ``j`` ->
    Posterior, ``k`` -> Superior. ``sitk.DICOMOrient`` takes the DICOM-style code naming where
    the axes *point to*, so ``"LPS"`` gives the identity (checked by a test with SimpleITK 2.5);
    the legacy ITK ``SpatialOrientation`` codes were the opposite ("from"), where ``"RAI"`` meant
    the identity.
    """
    _check_image(image, None)
    return sitk.DICOMOrient(image, "LPS")


def image_center_lps(image: sitk.Image) -> Point:
    """Physical (LPS, mm) position of the centre of the voxel grid."""
    centre = [(n - 1) / 2.0 for n in image.GetSize()]
    return tuple(float(v) for v in image.TransformContinuousIndexToPhysicalPoint(centre))  # type: ignore[return-value]


def _origin_for_center(center: Sequence[float], size: Sequence[int], spacing: Sequence[float],
                       direction: Sequence[float]) -> Point:
    """Origin that puts the centre of a ``size`` grid at ``center`` (LPS mm)."""
    matrix = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    half = (np.asarray(size, dtype=np.float64) - 1.0) / 2.0 * np.asarray(spacing, dtype=np.float64)
    return tuple(float(v) for v in np.asarray(center, dtype=np.float64) - matrix @ half)  # type: ignore[return-value]


def resample_isotropic(image: sitk.Image, spacing_mm: float, interpolator: int = sitk.sitkLinear,
                       default_hu: float = AIR_HU) -> sitk.Image:
    """Resample to ``spacing_mm`` isotropic voxels, keeping the direction and the physical extent.

    The new size along each axis is ``round(size * spacing / spacing_mm)`` (at least 1), and the
    grid centre stays at the same LPS point, so the extent changes by less than one voxel.
    Points outside the input get ``default_hu``. The output is float32.
    """
    spacing_mm = float(spacing_mm)
    if not np.isfinite(spacing_mm) or spacing_mm <= 0:
        raise InputError(None, f"isotropic spacing must be a positive number of mm, got {spacing_mm}")
    _check_image(image, None)
    size = [max(1, int(round(n * s / spacing_mm))) for n, s in zip(image.GetSize(), image.GetSpacing())]
    spacing = (spacing_mm,) * 3
    origin = _origin_for_center(image_center_lps(image), size, spacing, image.GetDirection())
    return sitk.Resample(image, size, sitk.Transform(), interpolator, origin, spacing,
                         image.GetDirection(), float(default_hu), sitk.sitkFloat32)


def body_center_lps(image: sitk.Image, threshold_hu: float = -500.0) -> Point:
    """Centre (LPS mm) of the bounding box of the body.

    The body is the largest face-connected component of voxels above ``threshold_hu``; when no
    voxel exceeds it, the centre of the image grid is returned.
    """
    _check_image(image, None)
    mask = sitk.Cast(image > float(threshold_hu), sitk.sitkUInt8)
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    body = sitk.GetArrayViewFromImage(labels) == 1
    if not body.any():
        return image_center_lps(image)
    bounds = []
    for axis in (2, 1, 0):  # array axes of i, j, k
        others = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(body.any(axis=others))
        bounds.append((hit[0] + hit[-1]) / 2.0)
    return tuple(float(v) for v in image.TransformContinuousIndexToPhysicalPoint(bounds))  # type: ignore[return-value]


def crop_or_pad_cube(image: sitk.Image, size: int | Sequence[int], center_lps: Sequence[float] | None = None,
                     pad_hu: float = AIR_HU) -> sitk.Image:
    """Crop and/or pad by whole voxels to ``size`` (an int for a cube, or (i, j, k) sizes).

    No interpolation: the output grid is the input grid shifted by an integer index offset, so
    spacing and direction are unchanged and the origin moves through the direction matrix. The
    output is centred on the voxel lattice point nearest to ``center_lps`` (default
    :func:`body_center_lps`); voxels outside the input get ``pad_hu``. The pixel type is kept.
    """
    _check_image(image, None)
    sizes = [int(size)] * 3 if np.isscalar(size) else [int(s) for s in size]  # type: ignore[arg-type]
    if len(sizes) != 3 or min(sizes) < 1:
        raise InputError(None, f"cube size must be a positive int or three positive ints, got {size!r}")
    center = body_center_lps(image) if center_lps is None else tuple(float(c) for c in center_lps)
    continuous = np.asarray(image.TransformPhysicalPointToContinuousIndex(center), dtype=np.float64)
    start = np.floor(continuous - (np.asarray(sizes) - 1) / 2.0 + 0.5).astype(np.int64)
    values = sitk.GetArrayViewFromImage(image)
    out = np.full(sizes[::-1], pad_hu, dtype=values.dtype)
    src, dst = [], []
    for axis, n_in in enumerate(image.GetSize()):  # i, j, k
        lo = max(0, int(start[axis]))
        hi = min(n_in, int(start[axis]) + sizes[axis])
        if hi <= lo:
            src, dst = None, None
            break
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(start[axis]), hi - int(start[axis])))
    if src is not None:
        out[tuple(dst[::-1])] = values[tuple(src[::-1])]
    result = sitk.GetImageFromArray(out)
    result.SetSpacing(image.GetSpacing())
    result.SetDirection(image.GetDirection())
    matrix = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    origin = np.asarray(image.GetOrigin()) + matrix @ (start * np.asarray(image.GetSpacing()))
    result.SetOrigin(tuple(float(v) for v in origin))
    return result


def _grid(geometry: BiplanarGeometry, center_lps: Sequence[float]) -> tuple[list[int], tuple[float, ...], Point]:
    size = [int(n) for n in geometry.volume_shape[::-1]]  # (W, H, D) = (i, j, k)
    spacing = tuple(float(s) for s in geometry.volume_spacing_mm[::-1])  # (sx, sy, sz)
    origin = tuple(float(v) for v in geometry.volume_origin_lps(tuple(float(c) for c in center_lps)))
    return size, spacing, origin  # type: ignore[return-value]


def antialias_sigmas_mm(source_spacing: Sequence[float], target_spacing_mm: float) -> tuple[float, ...]:
    """Gaussian sigma (mm) per input axis that band-limits a grid before resampling it coarser.

    The prefilter's FWHM makes up the difference between the target and the source voxel size,
    ``sigma = sqrt(max(t^2 - s^2, 0)) / (2 sqrt(2 ln 2))``; axes that are not made coarser get 0.
    """
    fwhm_to_sigma = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    return tuple(float(np.sqrt(max(target_spacing_mm**2 - s**2, 0.0)) * fwhm_to_sigma) for s in source_spacing)


def antialias_for_spacing(image: sitk.Image, target_spacing_mm: float) -> sitk.Image:
    """``image`` (float32) smoothed with the Gaussian of :func:`antialias_sigmas_mm` before it is
    resampled to ``target_spacing_mm`` voxels; returned unchanged when no axis gets coarser."""
    sigmas = antialias_sigmas_mm(image.GetSpacing(), target_spacing_mm)
    if max(sigmas) <= 0:
        return image
    # variances in mm^2 (image spacing used); a zero variance leaves that axis alone
    return sitk.DiscreteGaussian(sitk.Cast(image, sitk.sitkFloat32), [s * s for s in sigmas], 32, 0.01, True)


def to_model_grid(image: sitk.Image, geometry: BiplanarGeometry, center_lps: Sequence[float] | None = None,
                  default_hu: float = AIR_HU, antialias: bool = True) -> sitk.Image:
    """Resample a CT once (linear) onto the geometry's (D, H, W) identity-direction grid.

    Any input direction is handled by the resampling itself (the output axes are L, P, S), so
    no separate reorientation is needed. The grid is centred on ``center_lps`` (default
    :func:`body_center_lps`): its origin is ``geometry.volume_origin_lps(center)``. Points outside
    the input get ``default_hu`` (air). The output is float32 HU.

    With ``antialias`` (default) input axes finer than the model voxels are first smoothed with
    the Gaussian of :func:`antialias_sigmas_mm`, so that e.g. a 0.7 mm CT resampled to 2.5 mm
    voxels does not alias; the geometry is unaffected.
    """
    _check_image(image, None)
    center = body_center_lps(image) if center_lps is None else tuple(float(c) for c in center_lps)
    size, spacing, origin = _grid(geometry, center)
    if antialias:
        image = antialias_for_spacing(image, min(spacing))
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, origin, spacing, _IDENTITY,
                         float(default_hu), sitk.sitkFloat32)


def model_array(image: sitk.Image) -> np.ndarray:
    """Copy of a model-grid image as a float32 (D, H, W) array (axes S, P, L; see module docstring)."""
    if image.GetDimension() != 3 or not np.allclose(image.GetDirection(), _IDENTITY, atol=1e-6):
        raise InputError(None, "model arrays need a 3D image with identity direction; use to_model_grid first")
    return sitk.GetArrayFromImage(image).astype(np.float32, copy=False)


def array_to_image(array, geometry: BiplanarGeometry, center_lps: Sequence[float]) -> sitk.Image:
    """Give a (D, H, W) model array (numpy or CPU torch tensor) its physical geometry back.

    The result is a float32 image with the geometry's spacing, identity direction and origin
    ``geometry.volume_origin_lps(center_lps)``, i.e. the grid :func:`to_model_grid` produced.
    """
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    values = np.asarray(array, dtype=np.float32)
    if values.shape != tuple(geometry.volume_shape):
        raise InputError(None, f"array shape {values.shape} does not match the geometry volume shape "
                               f"{tuple(geometry.volume_shape)}")
    size, spacing, origin = _grid(geometry, center_lps)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(_IDENTITY)
    return image


__all__ = [
    "AIR_HU", "AIR_ONLY_MAX_HU", "MAX_CT_VOXELS", "WRITE_SUFFIXES", "read_ct", "verify_voxel_data", "write_ct",
    "orient_lps", "image_center_lps", "resample_isotropic",
    "body_center_lps", "crop_or_pad_cube", "antialias_sigmas_mm", "antialias_for_spacing", "to_model_grid", "model_array", "array_to_image",
]
