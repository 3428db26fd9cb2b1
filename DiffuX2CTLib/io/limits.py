"""Size limits of radiographs, decided from the file's header before any pixel is decoded.

A file whose header claims e.g. 100000 x 100000 pixels is corrupt or not a radiograph, and
decoding it would exhaust memory (or trip Pillow's decompression-bomb guard with a traceback).
:func:`check_xray_header` reads only the header: Pillow's lazy ``Image.open`` for PNG and JPEG
(``DecompressionBombError`` is reported as too large), tifffile's page header for TIFF, pydicom
without pixel data (``Rows``/``Columns``) for DICOM, and SimpleITK's ``ReadImageInformation``
for NRRD/MHA/NIfTI. A header that cannot be parsed is left to the decoder to report. For the
SimpleITK formats the voxel data is also checked to be complete
(:func:`DiffuX2CTLib.io.ct.verify_voxel_data`): SimpleITK reads a truncated ``.nii``/``.nii.gz``
without an error, with the missing pixels as 0.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..errors import InputError

#: Most pixels on one side of a radiograph (a 43 cm panel at 0.026 mm would need 16384).
MAX_XRAY_SIDE = 16384
#: Most pixels in all (2**28 = 16384**2). Pillow formats are further capped by Pillow's own
#: ``Image.MAX_IMAGE_PIXELS`` (about 89 M pixels by default), above which it refuses to decode.
MAX_XRAY_PIXELS = 2**28


def _too_large(path: Path, rows: int, cols: int, limit: int) -> InputError:
    return InputError(path, f"header declares {cols} x {rows} pixels (columns x rows); a radiograph may have at "
                            f"most {MAX_XRAY_SIDE} pixels on a side and {limit} in all: corrupt header or not a "
                            "radiograph")


def _pillow_size(path: Path) -> tuple[int, int, int] | None:
    from PIL import Image

    limit = MAX_XRAY_PIXELS if Image.MAX_IMAGE_PIXELS is None else min(MAX_XRAY_PIXELS, int(Image.MAX_IMAGE_PIXELS))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # lazy: reads the header only
                cols, rows = img.size
    except Image.DecompressionBombError as exc:
        raise InputError(path, f"declares too many pixels to be a radiograph ({' '.join(str(exc).split())[:160]})") from None
    except Exception:  # noqa: BLE001 - unreadable header: the decoder reports it
        return None
    return rows, cols, limit


def _tiff_size(path: Path) -> tuple[int, int] | None:
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            return int(page.imagelength), int(page.imagewidth)
    except Exception:  # noqa: BLE001
        return None


def _dicom_size(path: Path, force: bool) -> tuple[int, int] | None:
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, force=force)
        return int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except Exception:  # noqa: BLE001
        return None


def _itk_size(path: Path) -> tuple[int, int] | None:
    try:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        previous = sitk.ProcessObject.GetGlobalWarningDisplay()
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
        try:
            reader.ReadImageInformation()
        finally:
            sitk.ProcessObject.SetGlobalWarningDisplay(previous)
        size = reader.GetSize()
    except Exception:  # noqa: BLE001
        return None
    if len(size) < 2:
        return None
    extra = 1
    for n in size[2:]:
        extra *= max(1, int(n))
    return int(size[1]) * extra, int(size[0])  # slices counted as rows: a stack is as large as its pixels


def check_xray_header(path: str | os.PathLike, kind: str) -> None:
    """Raise :class:`InputError` when the header of radiograph ``path`` declares too many pixels.

    Args:
        path: the image file.
        kind: the format as sniffed by :func:`DiffuX2CTLib.io.xray.read_xray`: ``"png"``,
            ``"jpeg"``, ``"tiff"``, ``"dicom"``, ``"raw-dicom"`` or ``"sitk"``.
    """
    p = Path(path)
    limit = MAX_XRAY_PIXELS
    size: tuple[int, int] | None
    if kind in ("png", "jpeg"):
        found = _pillow_size(p)
        size, limit = (found[:2], found[2]) if found else (None, limit)
    elif kind == "tiff":
        size = _tiff_size(p)
    elif kind in ("dicom", "raw-dicom"):
        size = _dicom_size(p, force=kind == "raw-dicom")
    else:
        size = _itk_size(p)
    if size is not None:
        rows, cols = size
        if rows > MAX_XRAY_SIDE or cols > MAX_XRAY_SIDE or rows * cols > limit:
            raise _too_large(p, rows, cols, limit)
    if kind == "sitk":
        from .ct import verify_voxel_data

        try:
            verify_voxel_data(p)
        except OSError as exc:
            raise InputError(p, f"cannot be read ({exc.strerror or exc})") from None


__all__ = ["MAX_XRAY_PIXELS", "MAX_XRAY_SIDE", "check_xray_header"]
