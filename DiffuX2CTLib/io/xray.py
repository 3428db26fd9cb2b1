"""Read, normalise, fit and write 2D radiographs (real X-rays and simulated DRRs).

Conventions (see ``geometry/biplanar.py`` for the frames):

* An image is a float32 ``(rows, cols)`` array; **bright = more attenuation** (as a
  MONOCHROME2 radiograph and as a DRR line integral). MONOCHROME1 DICOM and MINISWHITE TIFF are
  inverted on reading.
* ``spacing_mm`` is the pixel pitch ``(row, col)`` in millimetres **on the detector plane**
  (DICOM ImagerPixelSpacing). SimpleITK stores spacing as ``(x, y) = (col, row)``; the readers
  and writers here swap it.
* Pixel values are the stored values after the DICOM modality/VOI LUTs (or the raw PNG/TIFF/JPEG
  values, e.g. 0..65535 for a 16-bit PNG); their scale is removed by :class:`XRayNormalization`,
  the one normalisation shared by loaded radiographs and simulated DRRs.
* Colour (RGB/RGBA/palette) PNG, JPEG, TIFF and SimpleITK vector images are converted to
  luminance (Rec. 601 weights, alpha dropped) and ``metadata["color_conversion"]`` says so.
  Colour DICOM (RGB, PALETTE COLOR, YBR_*) is refused: a radiograph in colour is not trusted.
* A constant image is read (``metadata["constant"] = True``) but cannot be normalised.

:func:`read_xray` only reads. Turning a real radiograph into the line-integral image the network
was trained on (PixelIntensityRelationship, -log of raw data, display gamma, burned-in labels,
collimation, magnification, view orientation) is done by
:func:`DiffuX2CTLib.io.radiograph.prepare_radiograph`; DICOM reading is in ``xray_dicom.py``.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..errors import InputError
from .atomic import atomic_file
from .files import SINGLE_FILE_IMAGE_SUFFIXES

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..geometry.biplanar import BiplanarGeometry

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)
_SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".nii", ".nii.gz", ".hdr", ".img")
#: PNG text chunk with the detector spacing ``"ROW COL"`` in mm (our PNGs: DRRs and simulated films).
PNG_SPACING_KEY = "spacing_mm"
#: PNG text chunk that marks a simulated film (``write_film_png``): read as a film, not as a
#: normalised line-integral image, although it carries ``spacing_mm``.
PNG_KIND_KEY = "diffux2ct_kind"


# ---------------------------------------------------------------------------------------------
# Image container
# ---------------------------------------------------------------------------------------------
@dataclass
class XRayImage:
    """One radiograph.

    Attributes:
        pixels: float32 ``(rows, cols)``, bright = more attenuation.
        spacing_mm: pixel pitch ``(row, col)`` in mm on the detector plane, or ``None`` if unknown.
        path: the file it came from, if any (used in error messages).
        metadata: free-form facts, e.g. ``format``, ``modality``, ``photometric_interpretation``,
            ``view_position``, ``spacing_source``, ``voi_applied``, ``color_conversion``,
            ``constant``, ``full_scale`` (the largest code of the pixel type, for the display
            gamma), ``warnings`` (assumptions made while reading, strings); after
            :func:`~DiffuX2CTLib.io.radiograph.prepare_radiograph` also ``encoding_path``,
            ``overlays``, ``orientation_applied``, ``magnification`` and ``isocenter_spacing_mm``.
        valid_mask: optional bool ``(rows, cols)``; False marks pixels (burned-in labels,
            collimation) left out of the normalisation statistics.
    """

    pixels: np.ndarray
    spacing_mm: tuple[float, float] | None = None
    path: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    valid_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        pixels = np.asarray(self.pixels)
        if pixels.ndim != 2:
            raise InputError(self.path, f"an X-ray must be a 2D image, got an array of shape {pixels.shape}")
        if pixels.size == 0:
            raise InputError(self.path, f"image is empty (shape {pixels.shape})")
        if not (np.issubdtype(pixels.dtype, np.number) or pixels.dtype == bool) or np.iscomplexobj(pixels):
            raise InputError(self.path, f"pixel type {pixels.dtype} is not a real number type")
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        if not np.isfinite(pixels).all():
            raise InputError(self.path, "image contains NaN or infinite values")
        self.pixels = pixels
        if self.spacing_mm is not None:
            self.spacing_mm = _check_spacing(self.spacing_mm, self.path, "spacing")
        self.metadata = dict(self.metadata)
        self.metadata["constant"] = bool(pixels.min() == pixels.max())
        if self.valid_mask is not None:
            mask = np.asarray(self.valid_mask, dtype=bool)
            if mask.shape != pixels.shape:
                raise InputError(self.path, f"valid_mask has shape {mask.shape}, the image {pixels.shape}")
            self.valid_mask = mask

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.pixels.shape)  # type: ignore[return-value]


def _check_spacing(values: Any, path: str | None, what: str) -> tuple[float, float]:
    try:
        spacing = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"{what} must be two numbers, got {values!r}") from exc
    if len(spacing) != 2:
        raise InputError(path, f"{what} must be two numbers (row, col), got {len(spacing)}")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(path, f"{what} must be positive and finite, got {spacing}")
    return spacing  # type: ignore[return-value]


def _full_scale(arr: np.ndarray, mode: str | None = None) -> float:
    """The code of full brightness: the pixel type's maximum for integers (255 for 8-bit and
    colour Pillow modes, 65535 for 16-bit), the image maximum for floats and 32-bit integers."""
    if mode is not None:
        if mode == "1":
            return 1.0
        if mode.startswith("I;16"):
            return 65535.0
        if mode not in ("I", "F"):
            return 255.0
    elif np.issubdtype(arr.dtype, np.integer) and np.iinfo(arr.dtype).bits <= 16:
        return float(np.iinfo(arr.dtype).max)
    peak = float(np.max(arr)) if arr.size else 0.0
    return peak if math.isfinite(peak) and peak > 0 else 1.0


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luminance of ``(rows, cols, 3|4)`` (alpha ignored), float64."""
    return rgb[..., :3].astype(np.float64) @ _LUMA


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def read_xray(path: str | os.PathLike, *, apply_voi: bool = True, voi_on_linear_data: bool = True) -> XRayImage:
    """Read a 2D radiograph from DICOM, PNG (8/16-bit), TIFF, JPEG, NRRD, MHA or NIfTI.

    The format is detected from the file's content (DICOM preamble, PNG/JPEG/TIFF/NRRD magic
    numbers), then from the extension.

    Args:
        path: the image file.
        apply_voi: DICOM only; apply the VOI LUT or window centre/width when present.
        voi_on_linear_data: DICOM only; False leaves the VOI out of an image whose
            PixelIntensityRelationship is LIN (as the reconstruction does).

    Raises:
        InputError: missing/unreadable/malformed file, a DICOM object that is not a projection
            radiograph (e.g. CT, MR), unsupported format or photometric interpretation,
            multi-frame or 3D data, empty image, NaN/inf values, non-positive spacing.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "file does not exist")
    if p.is_dir():
        raise InputError(p, "is a folder, not an image file")
    if p.stat().st_size == 0:
        raise InputError(p, "file is empty")
    kind = _sniff(p)
    from .limits import check_xray_header

    check_xray_header(p, kind)  # too many pixels is refused from the header, before decoding
    if kind in ("dicom", "raw-dicom"):
        from .xray_dicom import read_dicom_xray

        return read_dicom_xray(p, apply_voi, preamble=kind == "dicom", voi_on_linear_data=voi_on_linear_data)
    if kind == "tiff":
        return _read_tiff(p)
    if kind in ("png", "jpeg"):
        return _read_pillow(p, kind)
    return _read_sitk(p)


def _sniff(p: Path) -> str:
    try:
        with open(p, "rb") as f:
            head = f.read(132)
    except OSError as exc:
        raise InputError(p, f"cannot be read ({exc.strerror or exc})") from exc
    name = p.name.lower()
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"NRRD") or name.endswith(_SITK_SUFFIXES):
        return "sitk"
    if name.endswith((".dcm", ".dicom")) or "." not in name:
        return "raw-dicom"  # may be a DICOM file without preamble
    raise InputError(p, "is not a supported image (expected DICOM, PNG, TIFF, JPEG, NRRD, MHA or NIfTI)")


def _read_tiff(p: Path) -> XRayImage:
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            n_pages = len(tif.pages)
            page = tif.pages[0]
            photometric = int(page.photometric) if page.photometric is not None else 1
            arr = tif.asarray(key=0) if n_pages else None
    except Exception as exc:  # tifffile raises many types on corrupt files
        raise InputError(p, f"is not a readable TIFF file ({type(exc).__name__}: {exc})") from exc
    if n_pages > 1:
        raise InputError(p, f"TIFF has {n_pages} pages (multi-frame or 3D); give a single radiograph")
    if arr is None or arr.size == 0:
        raise InputError(p, "image is empty")
    metadata: dict[str, Any] = {"format": "tiff", "dtype": str(arr.dtype), "spacing_source": None,
                                "full_scale": _full_scale(arr)}
    if photometric == 3:  # PALETTE
        raise InputError(p, "palette-colour TIFF is not supported; save it as grayscale")
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and photometric == 2:
        arr = _luminance(arr)
        metadata["color_conversion"] = "RGB(A) -> Rec.601 luminance"
    elif arr.ndim == 3 and arr.shape[-1] == 2:  # gray + alpha
        arr = arr[..., 0]
        metadata["color_conversion"] = "alpha dropped"
    elif arr.ndim != 2:
        raise InputError(p, f"TIFF image has shape {arr.shape}; an X-ray must be one 2D grayscale image")
    if photometric == 0:  # MINISWHITE: low values white = dense
        info = np.iinfo(arr.dtype) if np.issubdtype(arr.dtype, np.integer) else None
        arr = (float(info.max) + float(info.min) - arr.astype(np.float64)) if info else -arr.astype(np.float64)
        metadata["inverted"] = True
    return XRayImage(arr, None, str(p), metadata)


def _read_pillow(p: Path, kind: str) -> XRayImage:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(p) as img:
            n_frames = getattr(img, "n_frames", 1)
            if n_frames > 1:
                raise InputError(p, f"image has {n_frames} frames; give a single radiograph")
            img.load()
            transposed = kind == "jpeg" and img.getexif().get(0x0112, 1) not in (0, 1)
            oriented = ImageOps.exif_transpose(img) if transposed else img
            mode, info = oriented.mode, dict(oriented.info)
            text = dict(getattr(oriented, "text", {}) or {})
            if mode in ("P", "PA", "CMYK", "YCbCr"):
                oriented = oriented.convert("RGBA" if mode in ("P", "PA") else "RGB")
            arr = np.asarray(oriented)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(p, f"is not a readable {kind.upper()} image ({type(exc).__name__}: {exc})") from exc
    metadata: dict[str, Any] = {"format": kind, "mode": mode, "spacing_source": None,
                                "full_scale": _full_scale(arr, mode)}
    if transposed:
        metadata["exif_orientation_applied"] = True
    if "dpi" in info:
        metadata["dpi"] = tuple(float(v) for v in info["dpi"])  # not trusted as detector spacing
    if mode in ("RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr"):
        arr = _luminance(arr)
        metadata["color_conversion"] = f"{mode} -> Rec.601 luminance"
    elif mode == "LA" or (arr.ndim == 3 and arr.shape[-1] == 2):
        arr = arr[..., 0]
        metadata["color_conversion"] = "alpha dropped"
    elif mode == "1":
        arr = arr.astype(np.float32)
    spacing = None
    if PNG_SPACING_KEY in text:  # written by write_png16 or write_film_png
        try:
            spacing = tuple(float(v) for v in text[PNG_SPACING_KEY].split())
        except ValueError as exc:
            raise InputError(p, f"invalid {PNG_SPACING_KEY} text chunk {text[PNG_SPACING_KEY]!r}") from exc
        metadata["spacing_source"] = f"PNG text chunk {PNG_SPACING_KEY}"
        if text.get(PNG_KIND_KEY) == "film":
            metadata["simulated_film"] = True
        else:
            metadata["written_by_diffux2ct"] = True  # write_png16: a normalised line-integral image
    return XRayImage(arr, spacing, str(p), metadata)


def _read_sitk(p: Path) -> XRayImage:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        from .ct import _itk_message  # a plain description, not ITK's .cxx source location

        raise InputError(p, f"cannot be read as an image ({_itk_message(exc)[:200]})") from exc
    size, dim = image.GetSize(), image.GetDimension()
    if dim == 3:
        if size[2] != 1:
            raise InputError(p, f"is a 3D volume with {size[2]} slices (size {size}), not a radiograph")
    elif dim != 2:
        raise InputError(p, f"is a {dim}D image (size {size}), not a 2D radiograph")
    spacing_xy = image.GetSpacing()[:2]
    # Checked here (not only in XRayImage) so the message names the tag.
    spacing = _check_spacing((spacing_xy[1], spacing_xy[0]), str(p), "image spacing")
    arr = sitk.GetArrayFromImage(image)  # (1, rows, cols[, comp]) or (rows, cols[, comp])
    if dim == 3:
        arr = arr[0]
    metadata: dict[str, Any] = {
        "format": "sitk",
        "pixel_type": image.GetPixelIDTypeAsString(),
        "direction": tuple(float(d) for d in image.GetDirection()),
        "spacing_source": "image spacing",
        "full_scale": _full_scale(np.asarray(arr, dtype=np.float64)),
    }
    if image.GetNumberOfComponentsPerPixel() > 1:
        if arr.shape[-1] not in (3, 4):
            raise InputError(p, f"image has {arr.shape[-1]} components per pixel; need 1 (gray) or 3/4 (RGB[A])")
        arr = _luminance(arr)
        metadata["color_conversion"] = "RGB(A) -> Rec.601 luminance"
    return XRayImage(arr, spacing, str(p), metadata)


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class XRayNormalization:
    """Robust per-image min-max to ``[-1, 1]``, shared by radiographs and simulated DRRs.

    ``y = 2 * clip((x - P_low) / (P_high - P_low), 0, 1) - 1`` where ``P_q`` is the q-th
    percentile of the image (linear interpolation between order statistics, numpy's default).
    Input must be bright = dense. Works on numpy ``(..., rows, cols)`` (returns float32) and on
    torch ``(..., rows, cols)`` tensors (percentiles per image over the last two dims, via sort;
    differentiable almost everywhere). A constant image raises :class:`InputError` for numpy;
    the torch path does not synchronise with the device and maps a constant image to ``-1``.

    The numpy path takes an optional validity mask (True = use the pixel): the percentiles are
    then taken over the valid pixels only (burned-in labels and collimation borders are left
    out), and every pixel, valid or not, is mapped with them.
    """

    low_percentile: float = 0.5
    high_percentile: float = 99.5

    METHOD = "percentile_minmax"

    def __post_init__(self) -> None:
        lo, hi = float(self.low_percentile), float(self.high_percentile)
        if not (0.0 <= lo < hi <= 100.0):
            raise InputError(None, f"normalisation needs 0 <= low_percentile < high_percentile <= 100, got {lo}, {hi}")
        object.__setattr__(self, "low_percentile", lo)
        object.__setattr__(self, "high_percentile", hi)

    def __call__(self, image: Any, path: str | os.PathLike | None = None) -> Any:
        if isinstance(image, XRayImage):
            return self.normalize_numpy(image.pixels, image.path, mask=image.valid_mask)
        if type(image).__module__.startswith("torch"):
            return self.normalize_torch(image)
        return self.normalize_numpy(image, path)

    def normalize_numpy(self, image: np.ndarray, path: str | os.PathLike | None = None,
                        mask: np.ndarray | None = None) -> np.ndarray:
        """Normalise a ``(..., rows, cols)`` array per image; returns float32 in ``[-1, 1]``.

        ``mask`` (bool, broadcastable to the image; True = valid) restricts the statistics.
        """
        x = np.asarray(image, dtype=np.float64)
        if x.ndim < 2 or x.shape[-1] == 0 or x.shape[-2] == 0:
            raise InputError(path, f"normalisation needs a non-empty (..., rows, cols) image, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise InputError(path, "image contains NaN or infinite values")
        if mask is None:
            q = np.percentile(x, [self.low_percentile, self.high_percentile], axis=(-2, -1), keepdims=True)
        else:
            try:
                valid = np.broadcast_to(np.asarray(mask, dtype=bool), x.shape)
            except ValueError as exc:
                raise InputError(path, f"validity mask of shape {np.shape(mask)} does not fit the image {x.shape}") from exc
            flat_x, flat_v = x.reshape(-1, *x.shape[-2:]), valid.reshape(-1, *x.shape[-2:])
            q = np.empty((2, flat_x.shape[0]), dtype=np.float64)
            for i, (xi, vi) in enumerate(zip(flat_x, flat_v)):
                if vi.sum() < max(2, 0.01 * vi.size):
                    raise InputError(path, f"only {int(vi.sum())} of {vi.size} pixels are valid (the rest are "
                                           "labels or collimation); cannot normalise")
                q[:, i] = np.percentile(xi[vi], [self.low_percentile, self.high_percentile])
            q = q.reshape(2, *x.shape[:-2], 1, 1)
        lo, hi = q[0], q[1]
        if not np.all(hi > lo):
            raise InputError(path, "image is constant (or nearly so) and cannot be normalised")
        y = np.clip((x - lo) / (hi - lo), 0.0, 1.0) * 2.0 - 1.0
        return y.astype(np.float32)

    def normalize_torch(self, image: "torch.Tensor") -> "torch.Tensor":
        """Normalise a ``(..., rows, cols)`` tensor per image (float dtype kept, ints -> float32)."""
        import torch

        x = image if image.is_floating_point() else image.to(torch.float32)
        if x.dim() < 2 or x.shape[-1] == 0 or x.shape[-2] == 0:
            raise InputError(None, f"normalisation needs a non-empty (..., rows, cols) tensor, got {tuple(x.shape)}")
        flat = x.reshape(*x.shape[:-2], -1)
        ordered, _ = torch.sort(flat, dim=-1)
        n = flat.shape[-1]

        def percentile(q: float) -> "torch.Tensor":
            pos = q / 100.0 * (n - 1)
            i0 = int(math.floor(pos))
            i1 = min(i0 + 1, n - 1)
            frac = pos - i0
            v0 = ordered[..., i0]
            return v0 if frac == 0.0 else v0 + (ordered[..., i1] - v0) * frac

        lo = percentile(self.low_percentile)[..., None, None]
        hi = percentile(self.high_percentile)[..., None, None]
        span = hi - lo
        span = torch.where(span > 0, span, torch.ones_like(span))
        return torch.clamp((x - lo) / span, 0.0, 1.0) * 2.0 - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.METHOD,
            "low_percentile": self.low_percentile,
            "high_percentile": self.high_percentile,
            "output_range": [-1.0, 1.0],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "XRayNormalization":
        data = dict(data)
        method = data.pop("method", cls.METHOD)
        if method != cls.METHOD:
            raise InputError(None, f"unknown X-ray normalisation method {method!r} (expected {cls.METHOD!r})")
        if list(data.pop("output_range", [-1.0, 1.0])) != [-1.0, 1.0]:
            raise InputError(None, "X-ray normalisation output_range must be [-1, 1]")
        unknown = set(data) - {"low_percentile", "high_percentile"}
        if unknown:
            raise InputError(None, f"unknown X-ray normalisation fields {sorted(unknown)}")
        return cls(**data)


# ---------------------------------------------------------------------------------------------
# Fitting a radiograph onto the model's detector grid
# ---------------------------------------------------------------------------------------------
@dataclass
class DetectorImage:
    """A radiograph resampled onto a geometry's detector grid.

    Attributes:
        pixels: float32 ``geometry.detector_shape`` image.
        spacing_mm: its pixel pitch ``(row, col)`` in mm = the geometry's detector pitch.
        source_spacing_mm: the input's detector-plane spacing used (assumed, square, when unknown).
        mm_scale_known: False when the input had no spacing and was scaled to fill the detector.
        view: the view name it was fitted for.
        valid_mask: the input's validity mask resampled the same way (a detector pixel is valid
            when at least half of its footprint was; padding is valid), or ``None``.
    """

    pixels: np.ndarray
    spacing_mm: tuple[float, float]
    source_spacing_mm: tuple[float, float]
    mm_scale_known: bool
    view: str
    valid_mask: np.ndarray | None = None


def fit_xray_to_detector(xray: XRayImage, geometry: "BiplanarGeometry", view: str = "ap") -> DetectorImage:
    """Resample ``xray`` onto ``geometry``'s detector grid, centre on centre.

    Known spacing: each detector pixel samples the radiograph at the same millimetre offset from
    the image centre, so the mm scale is kept and the image is centre-cropped or padded (with
    its minimum, the background of a bright = dense image). Unknown spacing: square input pixels
    are assumed and scaled so the whole image fits the detector, the short side padded.

    Resampling: a Gaussian prefilter of sigma ``(f - 1) / 2`` input pixels along each axis that is
    downsampled by ``f > 1`` (antialiasing, as scikit-image), then bilinear interpolation
    (``scipy.ndimage.map_coordinates``, order 1). Assumes the radiograph was taken with the
    geometry's magnification (its detector-plane spacing is used as is).
    """
    from scipy import ndimage

    if view not in geometry.views:
        raise InputError(xray.path, f"view {view!r} is not part of geometry {geometry.name!r} (views {geometry.views})")
    rows, cols = xray.pixels.shape
    out_rows, out_cols = geometry.detector_shape
    pitch = geometry.detector_spacing_mm
    known = xray.spacing_mm is not None
    if known:
        src = xray.spacing_mm
    else:
        side = min(out_rows * pitch[0] / rows, out_cols * pitch[1] / cols)
        src = (side, side)
    step = (pitch[0] / src[0], pitch[1] / src[1])  # input pixels per output pixel

    image = xray.pixels.astype(np.float64)
    sigma = [max(0.0, (s - 1.0) / 2.0) for s in step]
    if max(sigma) > 0:
        image = ndimage.gaussian_filter(image, sigma=sigma, mode="nearest")
    r = (np.arange(out_rows) - (out_rows - 1) / 2.0) * step[0] + (rows - 1) / 2.0
    c = (np.arange(out_cols) - (out_cols - 1) / 2.0) * step[1] + (cols - 1) / 2.0
    rr, cc = np.meshgrid(r, c, indexing="ij")
    out = ndimage.map_coordinates(image, [rr, cc], order=1, mode="nearest")
    inside = ((r >= -0.5) & (r <= rows - 0.5))[:, None] & ((c >= -0.5) & (c <= cols - 0.5))[None, :]
    out[~inside] = float(xray.pixels.min())
    valid = None
    if xray.valid_mask is not None:
        weight = xray.valid_mask.astype(np.float64)
        if max(sigma) > 0:
            weight = ndimage.gaussian_filter(weight, sigma=sigma, mode="nearest")
        valid = ndimage.map_coordinates(weight, [rr, cc], order=1, mode="nearest") >= 0.5
        valid[~inside] = True
    return DetectorImage(out.astype(np.float32), tuple(pitch), tuple(src), known, view, valid)


def fit_to_detector(xray: XRayImage, geometry: "BiplanarGeometry", view: str = "ap") -> np.ndarray:
    """:func:`fit_xray_to_detector`'s pixels (float32 ``detector_shape``); warns if mm scale is unknown."""
    fitted = fit_xray_to_detector(xray, geometry, view)
    if not fitted.mm_scale_known:
        warnings.warn(
            f"{xray.path or 'X-ray'}: pixel spacing unknown; image scaled to fill the detector, mm scale not kept",
            UserWarning,
            stacklevel=2,
        )
    return fitted.pixels


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _check_2d_finite(path: str | os.PathLike, pixels: Any) -> np.ndarray:
    arr = np.asarray(pixels, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(path, f"can only write a non-empty 2D image, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(path, "image to write contains NaN or infinite values")
    return arr


def write_png16(
    path: str | os.PathLike, image01: np.ndarray, *, spacing_mm: tuple[float, float] | None = None
) -> None:
    """Write values in ``[0, 1]`` as a 16-bit grayscale PNG (``round(v * 65535)``), atomically.

    ``spacing_mm`` (row, col), if given, is stored exactly in a ``spacing_mm`` text chunk (read
    back by :func:`read_xray`) and approximately as pHYs for other viewers.
    """
    from PIL import Image, PngImagePlugin

    arr = _check_2d_finite(path, image01)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-6 or hi > 1.0 + 1e-6:
        raise InputError(path, f"16-bit PNG values must lie in [0, 1], got [{lo:.6g}, {hi:.6g}]")
    data = np.round(np.clip(arr, 0.0, 1.0) * 65535.0).astype(np.uint16)
    info = PngImagePlugin.PngInfo()
    kwargs: dict[str, Any] = {}
    if spacing_mm is not None:
        sr, sc = _check_spacing(spacing_mm, os.fspath(path), "spacing")
        info.add_text(PNG_SPACING_KEY, f"{sr!r} {sc!r}")
        kwargs["dpi"] = (25.4 / sc, 25.4 / sr)  # (x, y) dots per inch
    with atomic_file(path) as tmp:
        Image.fromarray(data).save(tmp, format="PNG", pnginfo=info, **kwargs)


def write_xray_nrrd(path: str | os.PathLike, pixels: np.ndarray, spacing_mm: tuple[float, float]) -> None:
    """Write a float32 2D image with detector spacing ``(row, col)`` mm, atomically.

    Format from the suffix: ``.nrrd`` (compressed; intended) or ``.mha``/``.nii``/``.nii.gz``.
    SimpleITK's spacing is set to ``(col, row)`` = ``(x, y)``; origin 0, identity direction.
    """
    import SimpleITK as sitk

    name = os.fspath(path).lower()
    if not name.endswith(SINGLE_FILE_IMAGE_SUFFIXES):
        raise InputError(path, f"unsupported output suffix; use one of {', '.join(SINGLE_FILE_IMAGE_SUFFIXES)}")
    arr = _check_2d_finite(path, pixels).astype(np.float32)
    sr, sc = _check_spacing(spacing_mm, os.fspath(path), "spacing")
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((sc, sr))
    with atomic_file(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)


__all__ = [
    "PNG_KIND_KEY",
    "PNG_SPACING_KEY",
    "DetectorImage",
    "XRayImage",
    "XRayNormalization",
    "fit_to_detector",
    "fit_xray_to_detector",
    "read_xray",
    "write_png16",
    "write_xray_nrrd",
]
