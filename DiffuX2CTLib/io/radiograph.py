"""From a radiograph file to the network's input for one view: the whole reading chain.

1. :func:`~DiffuX2CTLib.io.xray.read_xray` (DICOM checks and tags, PNG/TIFF/JPEG/NRRD);
2. :func:`~DiffuX2CTLib.io.xray_encoding.estimate_line_integral` (LIN/LOG/DISP, -ln, gamma);
3. :func:`~DiffuX2CTLib.io.xray_overlays.mask_overlays` (burned-in labels, collimation; films only);
   :func:`~DiffuX2CTLib.io.xray_scatter.correct_scatter` (films only; the scale of log films estimated);
4. :func:`~DiffuX2CTLib.io.xray_geometry.orient_to_view` (PatientOrientation, ViewPosition);
5. :func:`~DiffuX2CTLib.io.xray_geometry.film_scale` (pixel size at the isocentre);
6. :func:`~DiffuX2CTLib.io.xray.fit_xray_to_detector` onto the model's detector grid;
7. :class:`~DiffuX2CTLib.io.xray.XRayNormalization` over the valid pixels.

Every assumption is returned as a warning string, prefixed with the view and the file name.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Union

import numpy as np

from ..errors import InputError
from ..geometry.biplanar import VIEW_NAMES
from .intensity import MU_WATER_PER_MM
from .xray import XRayImage, XRayNormalization, fit_xray_to_detector, read_xray
from .xray_encoding import DEFAULT_DISPLAY_GAMMA, ENCODINGS, estimate_line_integral
from .xray_geometry import film_scale, orient_to_view
from .xray_overlays import mask_overlays
from .xray_scatter import DEFAULT_SCATTER_FWHM_MM, DEFAULT_SCATTER_TO_PRIMARY, check_scatter_settings, correct_scatter

if TYPE_CHECKING:  # pragma: no cover
    from ..geometry.biplanar import BiplanarGeometry

RadiographInput = Union[str, os.PathLike, XRayImage]
#: Formats in which burned-in labels and collimation are looked for (films, not computed DRRs).
FILM_FORMATS = ("dicom", "png", "tiff", "jpeg")


def _check_encoding(value: Any) -> None:
    if value not in (None, "auto", *ENCODINGS):
        raise InputError(None, f"unknown X-ray encoding {value!r}; choose auto, {', '.join(ENCODINGS)}")


@dataclass(frozen=True)
class RadiographOptions:
    """How real radiographs are read (the worker's and ``diffux2ct reconstruct``'s options).

    Attributes:
        xray_encoding: ``None``/``"auto"`` (DICOM tags; NRRD, PNG, TIFF, JPEG: line integrals),
            ``"line-integral"``, ``"intensity"`` or ``"display"``; see ``xray_encoding.py``. Or
            one per view, ``{"lateral": "display"}`` (views left out: ``auto``), for a pair of
            films stored differently; kept as sorted ``(view, encoding)`` pairs.
        apply_voi: apply a DICOM VOI LUT/window before reading (default False: a VOI is a
            display choice and a narrow window clips anatomy; never applied to LIN data).
        display_gamma: the gamma inverted by the ``display`` encoding (default 1: grey levels
            linear in the processed film, as viewers export them).
        pixel_spacing_mm: ``(row, col)`` detector pixel pitch, mm, for films without spacing.
        field_of_view_mm: ``(width,)`` or ``(width, height)`` of the whole image at the detector,
            mm, for films without spacing (square pixels when the height is left out).
        detect_overlays: look for burned-in labels and collimation in films (default True).
        scatter_to_primary: scatter assumed in films and removed (default 0.3, a chest film
            with a grid; 0 = off); see ``xray_scatter.py``.
        scatter_fwhm_mm: FWHM of the scatter kernel at the detector, mm (default 60).
        log_units_per_decade: the stored units per factor 10 of exposure of ``LOG`` data, when the
            system's value is known (e.g. 1000); default ``None``: estimated from a body prior.
    """

    xray_encoding: str | Mapping[str, str] | tuple[tuple[str, str], ...] | None = None
    apply_voi: bool = False
    display_gamma: float = DEFAULT_DISPLAY_GAMMA
    pixel_spacing_mm: tuple[float, float] | None = None
    field_of_view_mm: tuple[float, ...] | None = None
    detect_overlays: bool = True
    scatter_to_primary: float = DEFAULT_SCATTER_TO_PRIMARY
    scatter_fwhm_mm: float = DEFAULT_SCATTER_FWHM_MM
    log_units_per_decade: float | None = None

    def __post_init__(self) -> None:
        check_scatter_settings(self.scatter_to_primary, self.scatter_fwhm_mm)
        if self.log_units_per_decade is not None:
            value = self.log_units_per_decade
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise InputError(None, f"log units per decade must be a positive number, got {value!r}")
            object.__setattr__(self, "log_units_per_decade", float(value))
        encodings = self.xray_encoding
        if isinstance(encodings, (Mapping, tuple)):
            pairs = tuple(sorted((str(k), v) for k, v in dict(encodings).items()))
            for view, value in pairs:
                if view not in VIEW_NAMES:
                    raise InputError(None, f"unknown view {view!r} in the X-ray encoding; views: {', '.join(VIEW_NAMES)}")
                _check_encoding(value)
            object.__setattr__(self, "xray_encoding", pairs)
        else:
            _check_encoding(encodings)
        if not (math.isfinite(self.display_gamma) and self.display_gamma > 0):
            raise InputError(None, f"display gamma must be a positive number, got {self.display_gamma}")
        for name, value, sizes in (("pixel spacing", self.pixel_spacing_mm, (2,)),
                                   ("field of view", self.field_of_view_mm, (1, 2))):
            if value is None:
                continue
            numbers = tuple(float(v) for v in value)
            if len(numbers) not in sizes or not all(math.isfinite(v) and v > 0 for v in numbers):
                raise InputError(None, f"{name} must be {' or '.join(map(str, sizes))} positive numbers (mm), "
                                       f"got {value!r}")
            object.__setattr__(self, "pixel_spacing_mm" if name == "pixel spacing" else "field_of_view_mm", numbers)

    def encoding_for(self, view: str) -> str | None:
        """The encoding asked for ``view`` (``None``: auto)."""
        if isinstance(self.xray_encoding, tuple):
            return dict(self.xray_encoding).get(view)
        return self.xray_encoding

    def to_dict(self) -> dict[str, Any]:
        encoding = dict(self.xray_encoding) if isinstance(self.xray_encoding, tuple) else (self.xray_encoding or "auto")
        return {"xray_encoding": encoding, "apply_voi": self.apply_voi,
                "display_gamma": self.display_gamma,
                "pixel_spacing_mm": list(self.pixel_spacing_mm) if self.pixel_spacing_mm else None,
                "field_of_view_mm": list(self.field_of_view_mm) if self.field_of_view_mm else None,
                "detect_overlays": self.detect_overlays, "scatter_to_primary": self.scatter_to_primary,
                "scatter_fwhm_mm": self.scatter_fwhm_mm, "log_units_per_decade": self.log_units_per_decade}


@dataclass
class PreparedRadiograph:
    """One view ready for the network.

    Attributes:
        pixels: float32 ``geometry.detector_shape`` in ``[-1, 1]``.
        warnings: assumptions made, ``"VIEW (FILE): ..."`` strings.
        summary: JSON-safe facts (file, format, encoding path, orientation, scale, masked pixels).
        image: the line-integral estimate before resampling (film pixels, model orientation).
    """

    pixels: np.ndarray
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    image: XRayImage | None = None


def load_line_integral(item: RadiographInput, view: str, options: RadiographOptions | None = None,
                       mu_water_per_mm: float = MU_WATER_PER_MM) -> tuple[XRayImage, list[str]]:
    """Steps 1-4: the film as a line-integral estimate in the model's ``view`` orientation.

    ``mu_water_per_mm`` is the model's (its DRR energy); it sets the scale prior of log films.
    """
    options = options or RadiographOptions()
    if isinstance(item, XRayImage):
        xray = item
    else:
        xray = read_xray(item, apply_voi=options.apply_voi, voi_on_linear_data=False)
    warnings = [str(w) for w in xray.metadata.get("warnings", [])]
    if xray.metadata.get("warnings"):
        xray = replace(xray, metadata={**xray.metadata, "warnings": []})  # reported once, here
    xray, more = estimate_line_integral(xray, options.encoding_for(view), options.display_gamma)
    warnings += more
    is_film = xray.metadata.get("format") in FILM_FORMATS and not xray.metadata.get("written_by_diffux2ct")
    if options.detect_overlays and xray.metadata.get("format") in FILM_FORMATS:
        xray, more = mask_overlays(xray)
        warnings += more
    if is_film:
        xray, more = correct_scatter(xray, options.scatter_to_primary, options.scatter_fwhm_mm, view,
                                      mu_water_per_mm, options.log_units_per_decade)
        warnings += more
    xray, more = orient_to_view(xray, view)
    return xray, warnings + more


def prepare_radiograph(item: RadiographInput, view: str, geometry: "BiplanarGeometry",
                       normalization: XRayNormalization | None = None,
                       options: RadiographOptions | None = None,
                       mu_water_per_mm: float = MU_WATER_PER_MM) -> PreparedRadiograph:
    """The network input for ``view`` from a file or :class:`XRayImage` (module docstring).

    Raises :class:`InputError` (one line naming the file) for anything that cannot be used:
    not a radiograph, the wrong view, no pixel spacing, a constant image, ...
    """
    options = options or RadiographOptions()
    normalization = normalization or XRayNormalization()
    if view not in geometry.views:
        raise InputError(getattr(item, "path", item), f"view {view!r} is not part of geometry {geometry.name!r}")
    xray, warnings = load_line_integral(item, view, options, mu_water_per_mm)
    scale, more = film_scale(xray, geometry, options.pixel_spacing_mm, options.field_of_view_mm)
    warnings += more
    fitted = fit_xray_to_detector(replace(xray, spacing_mm=scale.model_detector_spacing_mm), geometry, view)
    pixels = normalization.normalize_numpy(fitted.pixels, path=xray.path, mask=fitted.valid_mask)
    md = xray.metadata
    name = Path(xray.path).name if xray.path else "image"
    summary = {
        "file": xray.path,
        "format": md.get("format"),
        "encoding_path": md.get("encoding_path"),
        "orientation_applied": list(md.get("orientation_applied", [])),
        "magnification": scale.magnification,
        "spacing_source": scale.source,
        "isocenter_spacing_mm": list(scale.isocenter_spacing_mm),
        "model_detector_spacing_mm": list(scale.model_detector_spacing_mm),
        "scatter_correction": md.get("scatter_correction", "not applied (not a film)"),
        "masked_fraction": 0.0 if fitted.valid_mask is None else float(1.0 - fitted.valid_mask.mean()),
    }
    md["magnification"] = scale.magnification
    md["isocenter_spacing_mm"] = list(scale.isocenter_spacing_mm)
    return PreparedRadiograph(pixels.astype(np.float32), [f"{view} ({name}): {w}" for w in warnings], summary, xray)


__all__ = ["FILM_FORMATS", "PreparedRadiograph", "RadiographOptions", "load_line_integral", "prepare_radiograph"]
