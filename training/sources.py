"""Find the CT scans to prepare: NIfTI/NRRD/MHA files and DICOM series, per dataset layout.

``discover(inputs, dataset)`` returns the candidate cases (:class:`SourceCase`) and the inputs
it passed over with the reason (:class:`Skipped`): non-CT DICOM series (DX/CR/MR ...), localizer
(scout) series, series with fewer than :data:`MIN_SLICES` slices, label maps, and for LIDC every
CT series of a patient but the one with the most slices. Only headers are read here.

Datasets:

* ``folder``: any tree of image files and DICOM series (each series is a candidate);
* ``lidc``: the TCIA tree ``LIDC-IDRI-NNNN/<study>/<series>/*.dcm``; one CT series per patient,
  named as X2CT-GAN names LIDC cases (see :func:`training.splits.x2ct_gan_case_id`);
* ``ctspine1k`` / ``ctpelvic1k``: NIfTI volumes, the label maps beside them left out.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from DiffuX2CTLib.errors import InputError

from .cache import safe_case_id

DATASETS = ("folder", "lidc", "ctspine1k", "ctpelvic1k")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
MIN_SLICES = 8
_LABEL_NAME = re.compile(r"(_seg|seg_|label|mask)", re.IGNORECASE)
_LIDC_PATIENT = re.compile(r"^LIDC-IDRI-\d{4}$")
_GENERIC_PATIENT_IDS = {"", "anonymous", "anon", "unknown", "none", "0", "patient"}


@dataclass(frozen=True)
class SourceCase:
    """One scan to prepare.

    Attributes:
        case_id: cache case id (``[A-Za-z0-9._-]``).
        group: the unit that stays within one split (patient for DICOM/LIDC, the file otherwise).
        dataset: one of :data:`DATASETS`.
        path: an image file, or the folder holding the DICOM series.
        series_uid: SeriesInstanceUID within ``path`` (DICOM), else ``None``.
        extra: header facts kept in the case record (modality, series number, study date ...).
    """

    case_id: str
    group: str
    dataset: str
    path: str
    series_uid: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    """An input passed over during discovery, with a one-line reason."""

    source: str
    reason: str
    case_id: str = ""


@dataclass
class Discovery:
    cases: list[SourceCase]
    skipped: list[Skipped]


@dataclass(frozen=True)
class SeriesInfo:
    """Header facts of one DICOM series (first file's header, file count)."""

    folder: Path
    uid: str
    num_slices: int
    modality: str
    image_type: tuple[str, ...]
    patient_id: str
    study_uid: str
    study_date: str
    series_number: str
    description: str

    @property
    def source(self) -> str:
        return f"{self.folder} (series {self.uid})"

    def facts(self) -> dict[str, Any]:
        return {"modality": self.modality, "num_slices": self.num_slices, "patient_id": self.patient_id,
                "study_date": self.study_date, "series_number": self.series_number,
                "series_description": self.description, "study_uid": self.study_uid}


# --- file helpers --------------------------------------------------------------------------
def image_suffix(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def _stem(path: Path) -> str:
    suffix = image_suffix(path) or path.suffix
    return path.name[: len(path.name) - len(suffix)]


def is_label_name(path: Path) -> bool:
    """True for file names that mark a segmentation (``_seg``, ``label``, ``mask``)."""
    return bool(_LABEL_NAME.search(_stem(path)))


def _walk_dirs(root: Path) -> Iterator[tuple[Path, list[str]]]:
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):  # symlinked folders count (guarded)
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        yield Path(folder), sorted(f for f in files if not f.startswith("."))


# --- DICOM ---------------------------------------------------------------------------------
def _header(path: str) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 -- any unreadable header means "not usable DICOM"
        return None


def _text(ds: Any, keyword: str) -> str:
    value = getattr(ds, keyword, "") if ds is not None else ""
    return "" if value is None else str(value).strip()


def _image_type(ds: Any) -> tuple[str, ...]:
    raw = getattr(ds, "ImageType", None) if ds is not None else None
    if raw is None:
        return ()
    values = str(raw).split("\\") if isinstance(raw, str) else list(raw)
    return tuple(str(v).strip().upper() for v in values)


def dicom_series_in(folder: Path) -> list[SeriesInfo]:
    """The DICOM series stored directly in ``folder`` (not its sub-folders), by GDCM."""
    import SimpleITK as sitk

    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
        found = []
        for uid in uids:
            files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
            if not files:
                continue
            ds = _header(files[0])
            frames = _text(ds, "NumberOfFrames")
            found.append(SeriesInfo(
                folder=folder, uid=uid, num_slices=max(len(files), int(frames) if frames.isdigit() else 1),
                modality=_text(ds, "Modality").upper(), image_type=_image_type(ds),
                patient_id=_text(ds, "PatientID"), study_uid=_text(ds, "StudyInstanceUID"),
                study_date=_text(ds, "StudyDate"), series_number=_text(ds, "SeriesNumber"),
                description=_text(ds, "SeriesDescription")))
        return found
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def series_problem(series: SeriesInfo) -> str | None:
    """Why a DICOM series is not a usable CT volume, or ``None``."""
    if series.modality != "CT":
        return f"not a CT series (Modality {series.modality or 'missing'})"
    if "LOCALIZER" in series.image_type:
        return "localizer (scout) series"
    if series.num_slices < MIN_SLICES:
        return f"only {series.num_slices} slice(s); at least {MIN_SLICES} are needed"
    return None


def _dicom_group(series: SeriesInfo) -> str:
    pid = series.patient_id
    if pid.lower() not in _GENERIC_PATIENT_IDS:
        return safe_case_id(pid)
    return safe_case_id(series.study_uid or series.uid)


# --- discovery per dataset -----------------------------------------------------------------
def _unique(cases: list[SourceCase]) -> list[SourceCase]:
    """Make case ids unique by suffixing ``_2``, ``_3`` ... (in discovery order)."""
    seen: dict[str, int] = {}
    out = []
    for case in cases:
        n = seen.get(case.case_id, 0) + 1
        seen[case.case_id] = n
        if n > 1:
            case = SourceCase(f"{case.case_id}_{n}", case.group if case.group != case.case_id else f"{case.case_id}_{n}",
                              case.dataset, case.path, case.series_uid, case.extra)
        out.append(case)
    return out


def _image_files(root: Path, dataset: str, skipped: list[Skipped], nifti_only: bool) -> list[SourceCase]:
    paths = [root] if root.is_file() else [d / f for d, files in _walk_dirs(root) for f in files]
    cases = []
    for path in paths:
        suffix = image_suffix(path)
        if suffix is None or (nifti_only and suffix not in NIFTI_SUFFIXES):
            continue
        if is_label_name(path):
            skipped.append(Skipped(str(path), "label map (file name marks a segmentation)"))
            continue
        case_id = safe_case_id(_stem(path))
        cases.append(SourceCase(case_id, case_id, dataset, str(path), None, {"format": suffix.lstrip(".")}))
    return cases


def _folder_dicom(root: Path, dataset: str, skipped: list[Skipped]) -> list[SourceCase]:
    if root.is_file():
        return []
    cases = []
    for folder, files in _walk_dirs(root):
        if not any(image_suffix(folder / f) is None for f in files):
            continue
        series = dicom_series_in(folder)
        name = safe_case_id(folder.name if folder != root or folder.name else "dicom")
        for info in series:
            problem = series_problem(info)
            if problem:
                skipped.append(Skipped(info.source, problem))
                continue
            case_id = name if len(series) == 1 else safe_case_id(f"{name}_{info.series_number or info.uid[-8:]}")
            cases.append(SourceCase(case_id, _dicom_group(info), dataset, str(folder), info.uid, info.facts()))
    return cases


def _lidc_patients(root: Path) -> list[Path]:
    if _LIDC_PATIENT.match(root.name) and root.is_dir():
        return [root]
    return [Path(d) for d, _ in _walk_dirs(root) if _LIDC_PATIENT.match(Path(d).name)]


def _lidc(root: Path, skipped: list[Skipped]) -> list[SourceCase]:
    from .splits import x2ct_gan_case_id

    patients = _lidc_patients(root)
    if not patients:
        raise InputError(root, "holds no LIDC-IDRI-NNNN patient folder")
    cases = []
    for patient_dir in patients:
        usable = []
        for folder, _files in _walk_dirs(patient_dir):
            for info in dicom_series_in(folder):
                problem = series_problem(info)
                if problem:
                    skipped.append(Skipped(info.source, problem))
                else:
                    usable.append(info)
        if not usable:
            skipped.append(Skipped(str(patient_dir), "no CT series with enough slices"))
            continue
        usable.sort(key=lambda s: (-s.num_slices, str(s.folder), s.uid))
        best = usable[0]
        for other in usable[1:]:
            skipped.append(Skipped(other.source, f"patient {patient_dir.name} has a CT series with more slices "
                                                 f"({best.num_slices} > {other.num_slices})"))
        case_id, how = x2ct_gan_case_id(patient_dir.name, best.study_date, best.series_number)
        extra = dict(best.facts(), patient=patient_dir.name, x2ct_gan_id_match=how)
        cases.append(SourceCase(case_id, patient_dir.name, "lidc", str(best.folder), best.uid, extra))
    return cases


def discover(inputs: Iterable[str | os.PathLike], dataset: str = "folder") -> Discovery:
    """All candidate cases under ``inputs`` (files or folders) for ``dataset``.

    Raises:
        InputError: an input does not exist, or ``dataset`` is unknown.
    """
    if dataset not in DATASETS:
        raise InputError(None, f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    cases: list[SourceCase] = []
    skipped: list[Skipped] = []
    for item in inputs:
        root = Path(item)
        if not root.exists():
            raise InputError(root, "does not exist")
        if dataset == "lidc":
            cases += _lidc(root, skipped)
        elif dataset in ("ctspine1k", "ctpelvic1k"):
            cases += _image_files(root, dataset, skipped, nifti_only=True)
        else:
            cases += _image_files(root, dataset, skipped, nifti_only=False)
            cases += _folder_dicom(root, dataset, skipped)
    return Discovery(_unique(cases), skipped)


__all__ = ["DATASETS", "MIN_SLICES", "SourceCase", "Skipped", "Discovery", "SeriesInfo", "discover",
           "dicom_series_in", "series_problem", "is_label_name", "image_suffix"]
