"""The prepared-data cache: CTs on the model grid, their DRRs and a manifest.

Layout of a cache folder (written by ``python -m training.prepare_data``)::

    CACHE/manifest.json                 CacheManifest: geometry, intensity, cases with their split
    CACHE/report.json                   cases skipped in the last run, with the reason
    CACHE/cases/<case_id>/ct.nii.gz     the CT on the geometry's model grid: HU (int16), LPS,
                                        identity direction, centred on the body (isocentre)
    CACHE/cases/<case_id>/ap.nrrd       line integrals -log(I/I0) (float32, detector spacing in mm)
    CACHE/cases/<case_id>/lateral.nrrd
    CACHE/cases/<case_id>/case.json     the CaseRecord; a case folder exists only when complete

A case folder is assembled under a temporary name and renamed into place, so an interrupted run
never leaves a half-written case; a later run skips every complete case of the same geometry.
The split of each case lives in the manifest (it depends on all cases), not in ``case.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from DiffuX2CTLib.errors import InputError
from DiffuX2CTLib.geometry import BiplanarGeometry
from DiffuX2CTLib.io.atomic import atomic_file
from DiffuX2CTLib.io.intensity import MU_WATER_PER_MM, CTIntensity

CACHE_FORMAT = "diffux2ct-cache"
CACHE_VERSION = 1
MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.json"
CASES_DIR = "cases"
CASE_JSON = "case.json"
CT_NAME = "ct.nii.gz"
SPLITS = ("train", "val", "test")
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def safe_case_id(text: str) -> str:
    """A file-system-safe case id: characters other than ``A-Za-z0-9._-`` become ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._-") or "case"
    return cleaned[:200]


@dataclass
class CaseRecord:
    """One prepared case (``case.json``).

    Attributes:
        case_id: unique id, also the folder name (``[A-Za-z0-9._-]``).
        group: the scan it comes from; all cases of one group share a split (offline
            augmentations of one scan, several series of one patient).
        dataset: ``lidc``, ``ctspine1k``, ``ctpelvic1k`` or ``folder``.
        source: the input file or DICOM folder (as given on the command line).
        series_uid: DICOM SeriesInstanceUID, or ``None`` for a file.
        original_spacing_mm: input voxel size ``(x, y, z)`` (SimpleITK order), mm.
        original_shape: input size ``(i, j, k)`` (SimpleITK order), voxels.
        hu_stats: HU statistics of the input after padding was set to air: ``min``, ``max``,
            ``mean``, ``std``, ``p01``, ``p99``; plus ``padding_fraction`` (voxels below -1024 HU).
        center_lps: LPS position (mm) of the model grid's centre (the isocentre).
        geometry_hash: hash of the geometry the case was prepared for.
        ct_sha256: SHA-256 of ``ct.nii.gz``.
        body_mask: whether voxels outside the body mask (couch, clothes) were set to air.
        body_at_fov_edge: fraction of the body mask's boundary on the input's field-of-view
            edge in axial slices (0 = body fully inside; large = cut-off body).
        xray_supersample: detector supersampling of the cached DRRs (``training.render``).
        augmentation: ``None``, or the parameters of an offline augmentation of ``group``.
        extra: free-form facts (e.g. LIDC study/series names).
    """

    case_id: str
    group: str
    dataset: str
    source: str
    geometry_hash: str
    center_lps: tuple[float, float, float]
    ct_sha256: str = ""
    series_uid: str | None = None
    original_spacing_mm: tuple[float, ...] = ()
    original_shape: tuple[int, ...] = ()
    hu_stats: dict[str, float] = field(default_factory=dict)
    body_mask: bool = False
    body_at_fov_edge: float = 0.0
    xray_supersample: int = 1
    augmentation: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _CASE_ID.match(self.case_id):
            raise InputError(None, f"invalid case id {self.case_id!r} (use letters, digits, '.', '_', '-')")
        self.center_lps = tuple(float(v) for v in self.center_lps)  # type: ignore[assignment]
        self.original_spacing_mm = tuple(float(v) for v in self.original_spacing_mm)
        self.original_shape = tuple(int(v) for v in self.original_shape)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CaseRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(None, f"unknown case fields {sorted(unknown)}")
        return cls(**dict(data))


@dataclass
class CacheManifest:
    """``manifest.json``: the geometry and intensity of the cache and every case with its split.

    Attributes:
        geometry: the biplanar geometry (model grid and detector) all cases were prepared for.
        intensity: the HU window the training maps to [-1, 1].
        mu_water_per_mm: water attenuation used for the DRRs (1/mm).
        cases: the complete cases, in a stable order (sorted by id).
        splits: ``case_id -> "train" | "val" | "test"``.
        xray_supersample: detector supersampling of every case's DRRs (``training.render``).
        split_method: how the splits were made (``x2ct-gan-lidc``, ``seeded``, ``fixed`` ...),
            with its parameters in ``split_params``.
    """

    geometry: BiplanarGeometry
    cases: list[CaseRecord]
    splits: dict[str, str]
    intensity: CTIntensity = field(default_factory=CTIntensity)
    mu_water_per_mm: float = MU_WATER_PER_MM
    xray_supersample: int = 1
    split_method: str = "seeded"
    split_params: dict[str, Any] = field(default_factory=dict)
    software: str = ""

    def __post_init__(self) -> None:
        ids = [c.case_id for c in self.cases]
        if len(set(ids)) != len(ids):
            raise InputError(None, "manifest lists a case id twice")
        missing = set(ids) - set(self.splits)
        if missing:
            raise InputError(None, f"manifest has no split for cases {sorted(missing)[:5]}")
        factors = {c.xray_supersample for c in self.cases}
        if factors - {self.xray_supersample}:
            raise InputError(None, f"cases rendered with DRR supersampling {sorted(factors)} in a cache of "
                                   f"supersampling {self.xray_supersample}")
        bad = {s for s in self.splits.values() if s not in SPLITS}
        if bad:
            raise InputError(None, f"unknown split names {sorted(bad)}; use {list(SPLITS)}")

    def cases_in(self, split: str | Iterable[str]) -> list[CaseRecord]:
        """The cases of one split (or of several), in manifest order."""
        wanted = {split} if isinstance(split, str) else set(split)
        unknown = wanted - set(SPLITS)
        if unknown:
            raise InputError(None, f"unknown split {sorted(unknown)}; use {list(SPLITS)}")
        return [c for c in self.cases if self.splits[c.case_id] in wanted]

    def case(self, case_id: str) -> CaseRecord:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise KeyError(case_id)

    def to_dict(self) -> dict[str, Any]:
        counts = {s: sum(1 for v in self.splits.values() if v == s) for s in SPLITS}
        return {
            "format": CACHE_FORMAT,
            "format_version": CACHE_VERSION,
            "geometry": self.geometry.to_dict(with_hash=True),
            "intensity": self.intensity.to_dict(),
            "mu_water_per_mm": self.mu_water_per_mm,
            "xray_supersample": self.xray_supersample,
            "split_method": self.split_method,
            "split_params": self.split_params,
            "split_counts": counts,
            "software": self.software,
            "cases": [dict(c.to_dict(), split=self.splits[c.case_id]) for c in self.cases],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path | None = None) -> "CacheManifest":
        if data.get("format") != CACHE_FORMAT or data.get("format_version") != CACHE_VERSION:
            raise InputError(path, f"not a DiffuX2CT data cache manifest (format {data.get('format')!r} "
                                   f"version {data.get('format_version')!r}; expected {CACHE_FORMAT!r} {CACHE_VERSION})")
        try:
            cases, splits = [], {}
            for entry in data["cases"]:
                entry = dict(entry)
                split = entry.pop("split")
                record = CaseRecord.from_dict(entry)
                cases.append(record)
                splits[record.case_id] = split
            return cls(
                geometry=BiplanarGeometry.from_dict(data["geometry"]),
                cases=cases,
                splits=splits,
                intensity=CTIntensity.from_dict(data.get("intensity", {})),
                mu_water_per_mm=float(data.get("mu_water_per_mm", MU_WATER_PER_MM)),
                xray_supersample=int(data.get("xray_supersample", 1)),
                split_method=str(data.get("split_method", "")),
                split_params=dict(data.get("split_params", {})),
                software=str(data.get("software", "")),
            )
        except InputError as exc:
            raise InputError(path, exc.problem) from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(path, f"invalid cache manifest ({type(exc).__name__}: {exc})") from exc

    def save(self, cache_dir: str | os.PathLike) -> Path:
        path = Path(cache_dir) / MANIFEST_NAME
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, cache_dir: str | os.PathLike) -> "CacheManifest":
        path = Path(cache_dir) / MANIFEST_NAME
        if not path.is_file():
            raise InputError(path, "cache manifest not found (run python -m training.prepare_data first)")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(path, f"cannot read the cache manifest ({exc})") from exc
        if not isinstance(data, dict):
            raise InputError(path, "cache manifest must be a JSON object")
        return cls.from_dict(data, path)


# --- case folders ---------------------------------------------------------------------------
def case_dir(cache_dir: str | os.PathLike, case_id: str) -> Path:
    return Path(cache_dir) / CASES_DIR / case_id


def xray_name(view: str) -> str:
    return f"{view}.nrrd"


def write_case(cache_dir: str | os.PathLike, record: CaseRecord, model_ct: Any, line_integrals: np.ndarray,
               geometry: BiplanarGeometry) -> Path:
    """Write one case folder atomically: CT (int16 HU), one NRRD per view, then ``case.json``.

    ``model_ct`` is a SimpleITK image on ``geometry``'s model grid; ``line_integrals`` is
    ``(V, rows, cols)`` in ``geometry.views`` order. ``record.ct_sha256`` is filled in here.
    An existing folder of the same id is replaced only once the new one is complete.
    """
    from DiffuX2CTLib.io.ct import write_ct
    from DiffuX2CTLib.io.files import sha256_file
    from DiffuX2CTLib.io.xray import write_xray_nrrd

    if record.geometry_hash != geometry.hash:
        raise InputError(None, f"case {record.case_id}: record geometry hash {record.geometry_hash} != {geometry.hash}")
    if tuple(line_integrals.shape) != (len(geometry.views), *geometry.detector_shape):
        raise InputError(None, f"case {record.case_id}: DRR stack shape {line_integrals.shape} does not fit the geometry")
    root = Path(cache_dir) / CASES_DIR
    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{record.case_id}.", suffix=".tmp", dir=root))
    try:
        write_ct(model_ct, stage / CT_NAME, dtype="int16")
        record.ct_sha256 = sha256_file(stage / CT_NAME)
        for i, view in enumerate(geometry.views):
            write_xray_nrrd(stage / xray_name(view), np.asarray(line_integrals[i], np.float32),
                            geometry.detector_spacing_mm)
        (stage / CASE_JSON).write_text(json.dumps(record.to_dict(), indent=2))
        final = case_dir(cache_dir, record.case_id)
        if final.exists():
            old = final.with_name(f".{record.case_id}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(stage, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, final)
        return final
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def read_case_record(cache_dir: str | os.PathLike, case_id: str) -> CaseRecord | None:
    """The ``case.json`` of a complete case folder, or ``None`` when absent or unreadable."""
    path = case_dir(cache_dir, case_id) / CASE_JSON
    try:
        return CaseRecord.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, InputError):
        return None


def complete_cases(cache_dir: str | os.PathLike, geometry_hash: str,
                   xray_supersample: int | None = None) -> dict[str, CaseRecord]:
    """All complete case folders prepared for ``geometry_hash`` (and, if given, that DRR
    supersampling) -- for resuming -- by id."""
    root = Path(cache_dir) / CASES_DIR
    found: dict[str, CaseRecord] = {}
    if not root.is_dir():
        return found
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        record = read_case_record(cache_dir, folder.name)
        if (record is not None and record.geometry_hash == geometry_hash and record.case_id == folder.name
                and (xray_supersample is None or record.xray_supersample == xray_supersample)):
            found[record.case_id] = record
    return found


def read_case_ct(cache_dir: str | os.PathLike, record: CaseRecord) -> Any:
    """The case's model-grid CT as a float32 SimpleITK image (HU, full LPS geometry)."""
    from DiffuX2CTLib.io.ct import read_ct

    return read_ct(case_dir(cache_dir, record.case_id) / CT_NAME)


def read_case_volume(cache_dir: str | os.PathLike, record: CaseRecord) -> np.ndarray:
    """The case's model-grid CT as a float32 ``(D, H, W)`` HU array (axes S, P, L)."""
    from DiffuX2CTLib.io.ct import model_array

    return model_array(read_case_ct(cache_dir, record))


def read_case_line_integrals(cache_dir: str | os.PathLike, record: CaseRecord,
                             geometry: BiplanarGeometry) -> np.ndarray:
    """The cached DRRs, ``(V, rows, cols)`` float32 line integrals in ``geometry.views`` order."""
    from DiffuX2CTLib.io.xray import read_xray

    views = [read_xray(case_dir(cache_dir, record.case_id) / xray_name(v)).pixels for v in geometry.views]
    stack = np.stack(views).astype(np.float32)
    if stack.shape[1:] != tuple(geometry.detector_shape):
        raise InputError(case_dir(cache_dir, record.case_id), f"DRRs of shape {stack.shape[1:]} do not fit the "
                                                               f"geometry's detector {geometry.detector_shape}")
    return stack


__all__ = [
    "CACHE_FORMAT", "CACHE_VERSION", "SPLITS", "CaseRecord", "CacheManifest", "safe_case_id", "case_dir",
    "write_case", "read_case_record", "complete_cases", "read_case_ct", "read_case_volume",
    "read_case_line_integrals",
]
