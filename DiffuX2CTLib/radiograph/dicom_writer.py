"""Write simulated films as DICOM Digital X-Ray (DX) Part-10 files and 8-bit PNGs, atomically.

The DICOM files follow the DX IOD (PS3.3 A.26): DX Series (Modality ``DX``, Presentation Intent
Type), DX Image (Pixel Intensity Relationship and Sign, identity Rescale, Presentation LUT
Shape, VOI window for presentation data), DX Detector (Imager Pixel Spacing at the detector),
DX Positioning (SID, SOD = source-to-isocentre distance, magnification, View Position) and DX
Anatomy Imaged. Patient and study identities are synthetic and say "SIMULATED" everywhere.

Orientation letters come from the geometry (see :mod:`DiffuX2CTLib.geometry.biplanar`): the AP
view's columns run to the patient's left and rows to the feet (PatientOrientation ``L\\F``); the
lateral is a left lateral (source on the right, ViewPosition ``LL``) with columns running
posterior (``P\\F``).
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..errors import InputError
from ..io.atomic import atomic_file
from ..io.xray import PNG_KIND_KEY, PNG_SPACING_KEY
from .film import FilmImage

if TYPE_CHECKING:  # pragma: no cover
    from ..geometry.biplanar import BiplanarGeometry


DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
SIMULATED_NOTE = "SIMULATED from a CT by DiffuX2CTLib; not an acquired radiograph, not for diagnosis"

# LPS unit axis -> (letter for +, letter for -)
_AXIS_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))


def orientation_letters(direction: np.ndarray) -> str:
    """DICOM patient-orientation letters of an LPS direction (major component first)."""
    d = np.asarray(direction, dtype=np.float64)
    order = np.argsort(-np.abs(d))
    return "".join(_AXIS_LETTERS[i][0 if d[i] > 0 else 1] for i in order if abs(d[i]) > 1e-6)


def view_position(geometry: "BiplanarGeometry", view: str) -> str:
    """DICOM ViewPosition from the beam direction: AP, PA, LL (beam right to left), RL, or ''."""
    axis = geometry.view(view).axis  # source -> detector, LPS
    names = {(1, +1): "AP", (1, -1): "PA", (0, +1): "LL", (0, -1): "RL"}
    i = int(np.argmax(np.abs(axis)))
    if abs(axis[i]) < 1.0 - 1e-6:
        return ""
    return names.get((i, 1 if axis[i] > 0 else -1), "")


@dataclass(frozen=True)
class DXAcquisition:
    """Acquisition facts of one view.

    Attributes:
        view: the geometry's view name (``"ap"`` or ``"lateral"``).
        view_position: DICOM ViewPosition (``AP``, ``LL`` ...).
        patient_orientation: (row direction, column direction) letters, e.g. ``("L", "F")``.
        source_to_detector_mm: SID.
        source_to_isocenter_mm: SOD (DICOM DistanceSourceToPatient: source to isocentre).
        body_part: BodyPartExamined (``CHEST`` ...).
    """

    view: str
    view_position: str
    patient_orientation: tuple[str, str]
    source_to_detector_mm: float
    source_to_isocenter_mm: float
    body_part: str = "CHEST"

    @property
    def magnification(self) -> float:
        """EstimatedRadiographicMagnificationFactor, SID / SOD."""
        return self.source_to_detector_mm / self.source_to_isocenter_mm

    @classmethod
    def from_geometry(cls, geometry: "BiplanarGeometry", view: str, body_part: str = "CHEST") -> "DXAcquisition":
        v = geometry.view(view)
        return cls(
            view=view,
            view_position=view_position(geometry, view),
            patient_orientation=(orientation_letters(v.u), orientation_letters(v.v)),
            source_to_detector_mm=geometry.source_to_detector_mm,
            source_to_isocenter_mm=geometry.source_to_isocenter_mm,
            body_part=body_part,
        )


def _new_uid() -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=None))  # 2.25.<UUID>: unique without an organisation root


@dataclass(frozen=True)
class DXStudy:
    """Synthetic patient and study shared by the views of one simulation (all marked SIMULATED)."""

    study_instance_uid: str = field(default_factory=_new_uid)
    series_instance_uid: str = field(default_factory=_new_uid)
    patient_id: str = field(default_factory=lambda: "SIM-" + _new_uid()[-8:])
    patient_name: str = "SIMULATED^RADIOGRAPH"
    study_description: str = "SIMULATED radiograph from CT (DiffuX2CT)"
    created: _dt.datetime = field(default_factory=lambda: _dt.datetime.now().replace(microsecond=0))


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    text = f"{float(value):.10g}"
    return text if len(text) <= 16 else f"{float(value):.6g}"


def _code_item(code: Any):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _sct(name: str):
    """A SNOMED CT code from pydicom's DICOM code dictionary, or None."""
    from pydicom.sr.codedict import codes

    try:
        return getattr(codes.SCT, name)
    except AttributeError:
        return None


def build_dx_dataset(
    film: FilmImage,
    acquisition: DXAcquisition,
    study: DXStudy | None = None,
    *,
    instance_number: int = 1,
    derivation: str | None = None,
):
    """The DX DICOM data set (with file meta) of a film; see the module docstring."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    study = study or DXStudy()
    enc = film.encoding
    processing = enc.intent == "FOR PROCESSING"
    sop_class = DX_FOR_PROCESSING if processing else DX_FOR_PRESENTATION
    sop_instance = _new_uid()
    rows, cols = film.shape
    bits_allocated = 8 if enc.bits_stored <= 8 else 16
    when = study.created
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"DIFFUX2CT_{__version__}"[:16]

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    # SOP common
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    # patient (synthetic)
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientComments = SIMULATED_NOTE
    # general study
    ds.StudyInstanceUID = study.study_instance_uid
    ds.StudyDate, ds.StudyTime = date, time
    ds.ReferringPhysicianName = ""
    ds.StudyID = "SIM"
    ds.AccessionNumber = ""
    ds.StudyDescription = study.study_description
    # general series + DX series
    ds.Modality = "DX"
    ds.SeriesInstanceUID = study.series_instance_uid
    ds.SeriesNumber = 1
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = f"SIMULATED {acquisition.view_position or acquisition.view.upper()} {enc.intent}"
    ds.BodyPartExamined = acquisition.body_part
    ds.PresentationIntentType = enc.intent
    # general equipment
    ds.Manufacturer = "DiffuX2CT (simulated)"
    ds.ManufacturerModelName = "DiffuX2CTLib film simulator"
    ds.SoftwareVersions = __version__
    # general image + DX image
    ds.InstanceNumber = int(instance_number)
    ds.ContentDate, ds.ContentTime = date, time
    ds.AcquisitionDateTime = date + time
    ds.ImageType = ["DERIVED", "PRIMARY", ""]
    ds.DerivationDescription = (derivation or "Simulated radiograph from CT line integrals")[:1024]
    ds.ImageComments = SIMULATED_NOTE
    ds.PatientOrientation = list(acquisition.patient_orientation)
    ds.ImageLaterality = "U"
    ds.BurnedInAnnotation = "YES" if film.annotation_mask.any() else "NO"
    ds.LossyImageCompression = "00"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = enc.photometric
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = enc.bits_stored
    ds.HighBit = enc.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = enc.relationship
    ds.PixelIntensityRelationshipSign = int(enc.sign)
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY" if enc.photometric == "MONOCHROME2" else "INVERSE"
    if not processing:
        ds.WindowCenter = _ds(enc.window_center)
        ds.WindowWidth = _ds(enc.window_width)
        ds.WindowCenterWidthExplanation = "SIMULATED AUTO WINDOW"
        cfg = film.config.encoding
        ds.AcquisitionDeviceProcessingDescription = (
            f"SIMULATED -LOG, RANGE {cfg.display_percentiles[0]:g}-{cfg.display_percentiles[1]:g} PCT, "
            f"GAMMA {cfg.gamma:.3g}"
        )[:64]
    # DX anatomy imaged
    region = _sct(acquisition.body_part.title())
    if region is not None:
        ds.AnatomicRegionSequence = Sequence([_code_item(region)])
    # DX detector
    ds.DetectorType = "SCINTILLATOR"
    ds.DetectorConfiguration = "AREA"
    ds.ImagerPixelSpacing = [_ds(film.spacing_mm[0]), _ds(film.spacing_mm[1])]
    ds.ExposureIndex = _ds(round(film.exposure_index, 1))
    # DX positioning
    ds.ViewPosition = acquisition.view_position
    view_code = {"AP": "AnteroPosterior", "PA": "PosteroAnterior", "LL": "LeftLateral", "RL": "RightLateral"}
    code = _sct(view_code.get(acquisition.view_position, ""))
    if code is not None:
        ds.ViewCodeSequence = Sequence([_code_item(code)])
    ds.DistanceSourceToDetector = _ds(acquisition.source_to_detector_mm)
    ds.DistanceSourceToPatient = _ds(acquisition.source_to_isocenter_mm)
    ds.EstimatedRadiographicMagnificationFactor = _ds(acquisition.magnification)
    if film.config.focal_spot is not None:
        ds.FocalSpots = _ds(film.config.focal_spot.size_mm)
    # acquisition context (type 2, empty)
    ds.AcquisitionContextSequence = Sequence([])
    # pixel data
    dtype = "<u2" if bits_allocated == 16 else "u1"
    data = np.ascontiguousarray(film.stored.astype(dtype)).tobytes()
    if len(data) % 2:
        data += b"\0"
    ds.add_new(0x7FE00010, "OW" if bits_allocated == 16 else "OB", data)
    return ds


def write_dx_dicom(path: str | os.PathLike, film: FilmImage, acquisition: DXAcquisition,
                   study: DXStudy | None = None, *, instance_number: int = 1, derivation: str | None = None) -> None:
    """Write the film as a DICOM Part-10 DX file (explicit VR little endian), atomically."""
    import pydicom

    ds = build_dx_dataset(film, acquisition, study, instance_number=instance_number, derivation=derivation)
    major = int(str(pydicom.__version__).split(".")[0])
    with atomic_file(path) as tmp:
        if major >= 3:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
        else:  # pragma: no cover - pydicom 2.4
            ds.is_little_endian, ds.is_implicit_VR = True, False
            pydicom.dcmwrite(tmp, ds, write_like_original=False)


def write_film_png(path: str | os.PathLike, film: FilmImage) -> None:
    """Write the display-processed film (bright = dense) as an 8-bit grayscale PNG, atomically.

    The detector spacing ``(row, col)`` mm goes into the ``spacing_mm`` text chunk read by
    :func:`DiffuX2CTLib.io.xray.read_xray`, and approximately into pHYs; a ``diffux2ct_kind``
    chunk says it is a film (so the reader treats it as one: labels, scatter).
    """
    from PIL import Image, PngImagePlugin

    display = np.asarray(film.display, dtype=np.float64)
    if display.ndim != 2 or not np.isfinite(display).all():
        raise InputError(path, "film display image must be a finite 2D array")
    data = np.rint(np.clip(display, 0.0, 1.0) * 255.0).astype(np.uint8)
    sr, sc = film.spacing_mm
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_SPACING_KEY, f"{sr!r} {sc!r}")
    info.add_text("Description", SIMULATED_NOTE)
    info.add_text(PNG_KIND_KEY, "film")  # read back as a film, not as a DiffuX2CT line-integral PNG
    with atomic_file(path) as tmp:
        Image.fromarray(data).save(tmp, format="PNG", pnginfo=info, dpi=(25.4 / sc, 25.4 / sr))


__all__ = [
    "DXAcquisition",
    "DXStudy",
    "DX_FOR_PRESENTATION",
    "DX_FOR_PROCESSING",
    "PNG_SPACING_KEY",
    "build_dx_dataset",
    "orientation_letters",
    "view_position",
    "write_dx_dicom",
    "write_film_png",
]
