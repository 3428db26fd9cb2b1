"""Biplanar cone-beam geometry: where the two X-ray sources and detectors sit around the volume.

Frames (the one place they are defined; see also ``docs/CONVENTIONS.md``):

* **Patient frame** is DICOM/ITK **LPS**: +x towards the patient's Left, +y Posterior, +z
  Superior, in millimetres. SimpleITK and DICOM use it; 3D Slicer shows RAS (x and y negated),
  and its readers convert.
* **Volume array** is a SimpleITK-style ``(D, H, W)`` array ``a[k, j, i]`` of a CT whose direction
  matrix is the identity after reorientation: ``i`` (W) grows to patient left, ``j`` (H) grows
  posterior, ``k`` (D) grows superior (slice 0 is the most inferior).
* **Geometry frame** is the patient frame translated so that the volume centre, the isocentre,
  is at the origin. Voxel ``(k, j, i)`` has its centre at
  ``((i - (W-1)/2) * sx, (j - (H-1)/2) * sy, (k - (D-1)/2) * sz)``.
* **AP view**: source anterior at ``(0, -SAD, 0)``, detector behind the patient at
  ``y = SDD - SAD``. Image columns grow towards patient left (+x), rows grow towards the feet
  (-z): the usual display, patient's right on the viewer's left, head at the top.
* **Lateral view**: source on the patient's right at ``(-SAD, 0, 0)``, detector on the left at
  ``x = SDD - SAD`` (a left lateral). Image columns grow posterior (+y), rows towards the feet:
  anterior on the viewer's left, head at the top, as a left lateral is displayed.

Detector images are ``(rows, cols)`` arrays; pixel ``(r, c)`` has its centre at
``detector_centre + (c - (cols-1)/2) * pitch_col * u + (r - (rows-1)/2) * pitch_row * v``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import InputError

SCHEMA_VERSION = 1
VIEW_NAMES = ("ap", "lateral")


@dataclass(frozen=True)
class ViewGeometry:
    """One X-ray view in the geometry frame (mm).

    Attributes:
        name: ``"ap"`` or ``"lateral"``.
        source: (3,) source position.
        detector_center: (3,) centre of the detector plane.
        u: (3,) unit vector along increasing image columns.
        v: (3,) unit vector along increasing image rows.
    """

    name: str
    source: np.ndarray
    detector_center: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @property
    def axis(self) -> np.ndarray:
        """Unit vector from the source through the isocentre to the detector."""
        d = self.detector_center - self.source
        return d / np.linalg.norm(d)


# name -> (unit vector from isocentre to source, u, v), all in the geometry (LPS) frame
_VIEW_AXES: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]] = {
    "ap": ((0.0, -1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "lateral": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}


def _as_tuple(value: Any, n: int, kind: type, field: str) -> tuple:
    try:
        items = tuple(kind(x) for x in value)
    except (TypeError, ValueError) as exc:
        raise InputError(None, f"geometry field {field!r} must be {n} numbers, got {value!r}") from exc
    if len(items) != n:
        raise InputError(None, f"geometry field {field!r} must have {n} entries, got {len(items)}")
    return items


@dataclass(frozen=True)
class BiplanarGeometry:
    """Two orthogonal cone-beam views around a CT cube centred at the isocentre.

    Attributes:
        name: preset or user label (part of the hash).
        source_to_isocenter_mm: SAD, distance from each source to the isocentre.
        source_to_detector_mm: SDD, distance from each source to its detector plane.
        detector_shape: detector pixels ``(rows, cols)``.
        detector_spacing_mm: pixel pitch ``(row, col)`` on the detector plane.
        volume_shape: CT array shape ``(D, H, W)`` (axes S, P, L; see the module docstring).
        volume_spacing_mm: voxel size ``(sz, sy, sx)`` matching ``volume_shape``.
        views: the views in output channel order.
    """

    name: str
    source_to_isocenter_mm: float
    source_to_detector_mm: float
    detector_shape: tuple[int, int]
    detector_spacing_mm: tuple[float, float]
    volume_shape: tuple[int, int, int]
    volume_spacing_mm: tuple[float, float, float]
    views: tuple[str, ...] = VIEW_NAMES

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "source_to_isocenter_mm", float(self.source_to_isocenter_mm))
        set_(self, "source_to_detector_mm", float(self.source_to_detector_mm))
        set_(self, "detector_shape", _as_tuple(self.detector_shape, 2, int, "detector_shape"))
        set_(self, "detector_spacing_mm", _as_tuple(self.detector_spacing_mm, 2, float, "detector_spacing_mm"))
        set_(self, "volume_shape", _as_tuple(self.volume_shape, 3, int, "volume_shape"))
        set_(self, "volume_spacing_mm", _as_tuple(self.volume_spacing_mm, 3, float, "volume_spacing_mm"))
        set_(self, "views", tuple(str(v) for v in self.views))
        if not 0 < self.source_to_isocenter_mm < self.source_to_detector_mm:
            raise InputError(None, "geometry needs 0 < source_to_isocenter_mm < source_to_detector_mm")
        if min(self.detector_shape) < 1 or min(self.volume_shape) < 1:
            raise InputError(None, "geometry shapes must be positive")
        if min(self.detector_spacing_mm) <= 0 or min(self.volume_spacing_mm) <= 0:
            raise InputError(None, "geometry spacings must be positive")
        if not self.views or any(v not in _VIEW_AXES for v in self.views) or len(set(self.views)) != len(self.views):
            raise InputError(None, f"geometry views must be distinct names from {VIEW_NAMES}, got {self.views}")
        half_extent = 0.5 * np.asarray(self.volume_extent_mm)
        if self.source_to_isocenter_mm <= float(np.linalg.norm(half_extent)):
            raise InputError(None, "geometry source lies inside or on the volume's bounding sphere")

    # --- derived quantities -------------------------------------------------------------
    @property
    def magnification(self) -> float:
        """Detector-plane scale of an object at the isocentre, SDD / SAD."""
        return self.source_to_detector_mm / self.source_to_isocenter_mm

    @property
    def volume_extent_mm(self) -> tuple[float, float, float]:
        """Physical size ``(z, y, x)`` of the volume box in mm."""
        return tuple(n * s for n, s in zip(self.volume_shape, self.volume_spacing_mm))

    @property
    def num_rays(self) -> int:
        return len(self.views) * self.detector_shape[0] * self.detector_shape[1]

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.volume_shape))

    def view(self, name: str) -> ViewGeometry:
        """The source, detector centre and image axes of one view (geometry frame, mm)."""
        if name not in self.views:
            raise KeyError(f"view {name!r} is not part of geometry {self.name!r} (views {self.views})")
        to_source, u, v = (np.asarray(a, dtype=np.float64) for a in _VIEW_AXES[name])
        source = self.source_to_isocenter_mm * to_source
        detector_center = -(self.source_to_detector_mm - self.source_to_isocenter_mm) * to_source
        return ViewGeometry(name, source, detector_center, u, v)

    def pixel_centers(self, name: str) -> np.ndarray:
        """Detector pixel centres of one view, ``(rows, cols, 3)`` float64 in the geometry frame."""
        view = self.view(name)
        rows, cols = self.detector_shape
        pr, pc = self.detector_spacing_mm
        r = (np.arange(rows, dtype=np.float64) - (rows - 1) / 2.0) * pr
        c = (np.arange(cols, dtype=np.float64) - (cols - 1) / 2.0) * pc
        return view.detector_center + r[:, None, None] * view.v + c[None, :, None] * view.u

    def voxel_centers_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """1D coordinates of voxel centres along (z, y, x) in the geometry frame."""
        return tuple(
            (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * s
            for n, s in zip(self.volume_shape, self.volume_spacing_mm)
        )

    def project_points(self, name: str, points: np.ndarray) -> np.ndarray:
        """Detector ``(row, col)`` coordinates (fractional pixels) of geometry-frame points ``(..., 3)``."""
        view = self.view(name)
        pts = np.asarray(points, dtype=np.float64)
        d = pts - view.source
        depth = d @ view.axis
        scale = self.source_to_detector_mm / depth
        on_detector = d * scale[..., None] + view.source - view.detector_center
        rows, cols = self.detector_shape
        pr, pc = self.detector_spacing_mm
        row = on_detector @ view.v / pr + (rows - 1) / 2.0
        col = on_detector @ view.u / pc + (cols - 1) / 2.0
        return np.stack([row, col], axis=-1)

    def volume_origin_lps(self, center_lps: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> tuple[float, float, float]:
        """SimpleITK origin (x, y, z) of the first voxel when the volume centre sits at ``center_lps``."""
        sz, sy, sx = self.volume_spacing_mm
        d, h, w = self.volume_shape
        cx, cy, cz = center_lps
        return (cx - (w - 1) / 2.0 * sx, cy - (h - 1) / 2.0 * sy, cz - (d - 1) / 2.0 * sz)

    # --- serialisation ------------------------------------------------------------------
    def to_dict(self, with_hash: bool = False) -> dict[str, Any]:
        """JSON-safe fields (tuples as lists) and the schema version; ``with_hash`` adds
        :attr:`hash`, which :meth:`from_dict` then verifies."""
        d = dataclasses.asdict(self)
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
        d["schema_version"] = SCHEMA_VERSION
        if with_hash:
            d["hash"] = self.hash
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BiplanarGeometry":
        """Inverse of :meth:`to_dict`; a recorded ``hash`` must match the fields."""
        data = dict(data)
        version = data.pop("schema_version", SCHEMA_VERSION)
        recorded_hash = data.pop("hash", None)
        if version != SCHEMA_VERSION:
            raise InputError(None, f"geometry schema version {version} is not supported (expected {SCHEMA_VERSION})")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise InputError(None, f"unknown geometry fields {sorted(unknown)}")
        missing = fields - set(data) - {"views"}
        if missing:
            raise InputError(None, f"missing geometry fields {sorted(missing)}")
        geometry = cls(**data)
        if recorded_hash is not None and recorded_hash != geometry.hash:
            raise InputError(None, "geometry hash does not match its fields (edited or corrupted)")
        return geometry

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(with_hash=True), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "BiplanarGeometry":
        return cls.from_dict(json.loads(text))

    @property
    def hash(self) -> str:
        """Short SHA-256 of the canonical JSON of all fields; identifies cached data and models."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def same_setup(self, other: "BiplanarGeometry", rtol: float = 1e-6) -> bool:
        """Whether ``other`` is the same physical set-up, possibly sampled on other grids.

        True for an equal :attr:`hash`, or for equal views, source distances, volume extent and
        detector area (relative tolerance ``rtol``): e.g. :meth:`with_sizes` of this geometry.
        """
        if self.hash == other.hash:
            return True
        if self.views != other.views:
            return False

        def physical(g: "BiplanarGeometry") -> list[float]:
            area = [n * p for n, p in zip(g.detector_shape, g.detector_spacing_mm)]
            return [g.source_to_isocenter_mm, g.source_to_detector_mm, *g.volume_extent_mm, *area]

        return bool(np.allclose(physical(self), physical(other), rtol=rtol, atol=0.0))

    def with_sizes(self, volume_size: int | None = None, xray_size: int | None = None) -> "BiplanarGeometry":
        """Same physical set-up sampled on an ``N^3`` volume and/or ``M x M`` detector.

        The physical volume extent and detector area are kept; only the sampling changes.
        """
        g = self
        if volume_size is not None:
            extent = self.volume_extent_mm
            g = dataclasses.replace(
                g,
                volume_shape=(volume_size,) * 3,
                volume_spacing_mm=tuple(e / volume_size for e in extent),
            )
        if xray_size is not None:
            area = [n * p for n, p in zip(self.detector_shape, self.detector_spacing_mm)]
            g = dataclasses.replace(
                g,
                detector_shape=(xray_size, xray_size),
                detector_spacing_mm=tuple(a / xray_size for a in area),
            )
        return g

    # --- presets ------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, volume_size: int = 128, xray_size: int | None = None) -> "BiplanarGeometry":
        """A named set-up sampled on a ``volume_size^3`` cube and ``xray_size^2`` detector.

        * ``x2ct``: the LIDC protocol of X2CT-GAN, SAD 541 mm, SDD 949 mm, a 500 mm square
          detector (320 x 320 pixels in the original, resampled to ``xray_size``), CT cube of
          320 mm (1 mm CT cropped to 320^3, resampled to ``volume_size``^3).
        * ``clinical``: an upright chest radiograph room, SID (SDD) 1800 mm, SAD 1650 mm
          (patient centre ~150 mm in front of the detector), a 430 mm (17 in) flat panel, the
          same 320 mm cube.
        """
        xray_size = volume_size if xray_size is None else xray_size
        if name not in PRESETS:
            raise InputError(None, f"unknown geometry preset {name!r}; choose one of {sorted(PRESETS)}")
        sad, sdd, detector_mm, cube_mm = PRESETS[name]
        return cls(
            name=name,
            source_to_isocenter_mm=sad,
            source_to_detector_mm=sdd,
            detector_shape=(xray_size, xray_size),
            detector_spacing_mm=(detector_mm / xray_size,) * 2,
            volume_shape=(volume_size,) * 3,
            volume_spacing_mm=(cube_mm / volume_size,) * 3,
        )


# name -> (SAD mm, SDD mm, square detector side mm, CT cube side mm)
PRESETS: dict[str, tuple[float, float, float, float]] = {
    "x2ct": (541.0, 949.0, 500.0, 320.0),
    "clinical": (1650.0, 1800.0, 430.0, 320.0),
}
