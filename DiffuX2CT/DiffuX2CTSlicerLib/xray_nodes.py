"""Radiographs in the scene: load them, simulate them from a CT, hand them to the worker.

A radiograph is a single-slice scalar volume node (see :mod:`.volumes` for its frame). Bright is
dense, as in DiffuX2CTLib (MONOCHROME1 films are inverted on reading). Attributes on the node:

* ``DiffuX2CT.SourcePath``: the file it was read from; the worker reads that file itself, so no
  DICOM tag is lost on the way;
* ``DiffuX2CT.SpacingKnown``: ``"1"`` when the file gave a pixel spacing (mm), else ``"0"``
  (the node then shows 1 mm pixels, and the worker fits the film to the detector);
* ``DiffuX2CT.IsocenterLPS``: ``"x,y,z"`` mm, set on simulated views: where the CT they came from
  was centred, so the reconstruction lands on it;
* ``DiffuX2CT.ReadingWarnings``: JSON list of what reading the file assumed (encoding, flips, ...).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from .volumes import SOURCE_PATH_ATTRIBUTE, add_volume_node, image_from_node

SPACING_KNOWN_ATTRIBUTE = "DiffuX2CT.SpacingKnown"
ISOCENTER_ATTRIBUTE = "DiffuX2CT.IsocenterLPS"
METADATA_ATTRIBUTE = "DiffuX2CT.XRayMetadata"
VIEW_ATTRIBUTE = "DiffuX2CT.View"
WARNINGS_ATTRIBUTE = "DiffuX2CT.ReadingWarnings"

#: File types "Load X-ray..." offers (DICOM DX/CR, PNG, TIFF, JPEG, NRRD and other ITK 2D images).
XRAY_FILE_FILTER = "Radiographs (*.dcm *.png *.tif *.tiff *.jpg *.jpeg *.nrrd *.nhdr *.mha *.nii *.nii.gz);;All files (*)"


def _image_2d(pixels: Any, spacing_rc: tuple[float, float] | None) -> Any:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(pixels)
    if spacing_rc is not None:
        image.SetSpacing((float(spacing_rc[1]), float(spacing_rc[0])))  # SimpleITK: (x, y) = (col, row)
    return image


def _json_safe(metadata: dict) -> str:
    return json.dumps({k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool, type(None)))})


def load_xray_node(scene: Any, path: str | os.PathLike, view: str, name: str | None = None,
                   options: Any = None) -> Any:
    """Read a radiograph file (DICOM DX/CR, PNG, TIFF, JPEG, NRRD) into a new single-slice node.

    The node shows what the model will be given: the file's line-integral estimate (raw,
    log-encoded and display films all become bright = dense), turned into the model's orientation
    for ``view``, burned-in labels and collimation filled -- the worker's reading chain
    (:func:`DiffuX2CTLib.io.radiograph.load_line_integral` with ``options``, a
    :class:`~DiffuX2CTLib.io.radiograph.RadiographOptions`). The worker itself reads the source
    file, with the options of the run. Raises :class:`DiffuX2CTLib.errors.InputError` (one line
    naming the file) for anything that is not a 2D grey-level radiograph.
    """
    from DiffuX2CTLib.io.radiograph import RadiographOptions, load_line_integral

    xray, warnings = load_line_integral(path, view, options or RadiographOptions())
    node = add_volume_node(scene, _image_2d(xray.pixels, xray.spacing_mm), name or f"X-ray {view}")
    node.SetAttribute(SOURCE_PATH_ATTRIBUTE, os.fspath(path))
    node.SetAttribute(SPACING_KNOWN_ATTRIBUTE, "1" if xray.spacing_mm is not None else "0")
    node.SetAttribute(METADATA_ATTRIBUTE, _json_safe(xray.metadata))
    node.SetAttribute(WARNINGS_ATTRIBUTE, json.dumps([str(w) for w in warnings]))
    node.SetAttribute(VIEW_ATTRIBUTE, view)
    return node


def check_radiograph_node(node: Any, view: str) -> None:
    """Refuse a node that is not a 2D image (one slice), with a sentence naming it."""
    from DiffuX2CTLib.errors import InputError

    if node is None:
        raise InputError(None, f"no {view} radiograph selected")
    data = node.GetImageData()
    if data is None:
        raise InputError(None, f"the {view} radiograph {node.GetName()!r} holds no image")
    dims = data.GetDimensions()
    if sum(1 for d in dims if d > 1) != 2:
        raise InputError(None, f"the {view} radiograph {node.GetName()!r} is not a 2D image (size {dims[0]} x {dims[1]} x {dims[2]})")
    if data.GetNumberOfScalarComponents() != 1:
        raise InputError(None, f"the {view} radiograph {node.GetName()!r} is a colour image; convert it to grey levels")


def xray_file_for_worker(node: Any, folder: str | os.PathLike, view: str) -> str:
    """The file the worker should read for ``node``: its source file if it still exists, else the
    node's pixels written as ``{view}.nrrd`` (spacing in mm, atomic) into ``folder``."""
    from DiffuX2CTLib.io.xray import write_xray_nrrd

    check_radiograph_node(node, view)
    source = node.GetAttribute(SOURCE_PATH_ATTRIBUTE)
    if source and os.path.isfile(source):
        return source
    image = image_from_node(node)
    import SimpleITK as sitk

    pixels = sitk.GetArrayFromImage(image)
    pixels = pixels.reshape([d for d in pixels.shape if d > 1] or pixels.shape[-2:])
    sx, sy = image.GetSpacing()[:2]
    path = os.path.join(os.fspath(folder), f"{view}.nrrd")
    write_xray_nrrd(path, pixels, (sy, sx))
    return path


def isocenter_of(node: Any) -> tuple[float, float, float] | None:
    """The ``DiffuX2CT.IsocenterLPS`` attribute of a (simulated) view, or ``None``."""
    text = node.GetAttribute(ISOCENTER_ATTRIBUTE) if node is not None else None
    if not text:
        return None
    values = tuple(float(v) for v in text.split(","))
    return values if len(values) == 3 else None  # type: ignore[return-value]


@dataclass
class SimulatedViews:
    """The two simulated radiograph nodes and where the CT was centred (LPS mm)."""

    ap: Any
    lateral: Any
    isocenter_lps: tuple[float, float, float]


def simulate_views(scene: Any, ct_node: Any, geometry: Any, xray_size: int | None = 256,
                   volume_size: int | None = 128) -> SimulatedViews:
    """AP and lateral DRRs (line integrals) of a CT node in the checkpoint's physical ``geometry``.

    Uses the shared projector (:func:`DiffuX2CTLib.simulate.simulate_xrays`, which centres the
    grid on the body). The views are rendered at ``xray_size`` pixels from the CT sampled on a
    ``volume_size``^3 grid of the same physical extent (``None``: the model's own sampling), so
    they are worth looking at; their pixel spacing (mm) is kept, and the worker resamples them to
    the model's detector as it does any radiograph.
    """
    from DiffuX2CTLib.simulate import simulate_xrays

    render = geometry.with_sizes(volume_size=max(volume_size or 0, geometry.volume_shape[0]),
                                 xray_size=max(xray_size or 0, geometry.detector_shape[0]))
    result = simulate_xrays(image_from_node(ct_node), render)
    spacing = tuple(render.detector_spacing_mm)
    nodes = []
    for i, view in enumerate(render.views):
        node = add_volume_node(scene, _image_2d(result.line_integrals[i], spacing), f"{ct_node.GetName()} DRR {view}")
        node.SetAttribute(SPACING_KNOWN_ATTRIBUTE, "1")
        node.SetAttribute(ISOCENTER_ATTRIBUTE, ",".join(repr(float(c)) for c in result.ct_center_lps))
        node.SetAttribute(VIEW_ATTRIBUTE, view)
        node.SetAttribute("DiffuX2CT.SimulatedFrom", ct_node.GetID())
        display = node.GetDisplayNode()
        if display is not None:  # a radiograph look: dense is bright
            display.AutoWindowLevelOn()
        nodes.append(node)
    by_view = dict(zip(render.views, nodes))
    return SimulatedViews(by_view["ap"], by_view["lateral"], result.ct_center_lps)


def views_look_swapped(ap_node: Any, lateral_node: Any) -> bool:
    """Heuristic: True when the 'AP' film's body is narrower than the 'lateral' film's.

    A body is wider left-right than front-back (chest about 1.3-1.5x, pelvis more), so on films
    with known spacing the AP's dense extent across the columns exceeds the lateral's. Films
    without spacing are not compared (returns False).
    """
    import numpy as np
    import SimpleITK as sitk

    widths = []
    for node in (ap_node, lateral_node):
        if node.GetAttribute(SPACING_KNOWN_ATTRIBUTE) == "0":
            return False
        image = image_from_node(node)
        pixels = np.asarray(sitk.GetArrayFromImage(image), dtype=np.float32)[0]
        profile = pixels.mean(axis=0)  # mean over rows: one value per column
        lo, hi = float(np.percentile(profile, 5)), float(np.percentile(profile, 95))
        if hi <= lo:
            return False
        dense = profile > lo + 0.25 * (hi - lo)
        widths.append(dense.sum() * image.GetSpacing()[0])
    return widths[0] < 0.9 * widths[1]
