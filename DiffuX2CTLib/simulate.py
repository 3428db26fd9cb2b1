"""Simulate an AP and a lateral radiograph (DRRs) from a CT.

Used by ``diffux2ct simulate``, by the demo, by the training-data builder and by the Slicer
module's "simulate X-rays from a CT". The CT is resampled onto the geometry's model grid centred
on the body (see :func:`DiffuX2CTLib.io.ct.to_model_grid`), projected with the shared
:class:`~DiffuX2CTLib.drr.DRRProjector`, and normalised exactly as real radiographs are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import __version__
from .geometry import BiplanarGeometry
from .io.atomic import staged_directory

SIDECAR_NAME = "geometry.json"


@dataclass
class SimulatedXRays:
    """DRRs of one CT.

    Attributes:
        line_integrals: ``(V, rows, cols)`` float32, dimensionless ``-log(I/I0)``.
        radiographs: ``(V, rows, cols)`` float32 in [-1, 1], the network's input convention.
        geometry: the geometry used; views in channel order.
        ct_center_lps: LPS position (mm) of the isocentre, i.e. of the model volume's centre.
        model_ct: the CT resampled onto the model grid (SimpleITK image, HU, full geometry).
        mu_water_per_mm: water attenuation used for HU -> mu.
    """

    line_integrals: np.ndarray
    radiographs: np.ndarray
    geometry: BiplanarGeometry
    ct_center_lps: tuple[float, float, float]
    model_ct: Any  # SimpleITK.Image
    mu_water_per_mm: float

    def sidecar(self, source: str | None = None) -> dict:
        """JSON-safe description written beside the images."""
        rows, cols = self.geometry.detector_shape
        return {
            "geometry": self.geometry.to_dict(with_hash=True),
            "views": list(self.geometry.views),
            "isocenter_lps_mm": list(self.ct_center_lps),
            "mu_water_per_mm": self.mu_water_per_mm,
            "detector_spacing_mm": list(self.geometry.detector_spacing_mm),
            "image_size": [rows, cols],
            "orientation": {
                "ap": "columns -> patient left, rows -> feet (patient right on image left)",
                "lateral": "columns -> posterior, rows -> feet (anterior on image left)",
            },
            "files": {v: {"png16": f"{v}.png", "nrrd_line_integral": f"{v}.nrrd"} for v in self.geometry.views},
            "source_ct": source,
            "software": f"DiffuX2CTLib {__version__}",
        }


def simulate_xrays(ct_image, geometry: BiplanarGeometry, projector=None) -> SimulatedXRays:
    """DRRs of a CT (SimpleITK image in HU, any orientation and spacing) for ``geometry``."""
    import torch

    from .drr import DRRProjector
    from .io.ct import body_center_lps, model_array, to_model_grid

    projector = projector or DRRProjector(geometry)
    center = body_center_lps(ct_image)
    model_ct = to_model_grid(ct_image, geometry, center_lps=center)
    volume = torch.from_numpy(model_array(model_ct))[None, None]
    with torch.no_grad():
        line = projector(volume)
        radiographs = projector.normalization(line)
    return SimulatedXRays(
        line_integrals=line[0].numpy().astype(np.float32),
        radiographs=radiographs[0].numpy().astype(np.float32),
        geometry=geometry,
        ct_center_lps=tuple(float(c) for c in center),
        model_ct=model_ct,
        mu_water_per_mm=projector.mu_water_per_mm,
    )


def write_simulation(result: SimulatedXRays, out_dir: str | Path, source: str | None = None,
                     write_model_ct: bool = False, progress: Callable[[str], None] | None = None,
                     films: Any = None) -> list[Path]:
    """Write ``{view}.png`` (16-bit), ``{view}.nrrd`` (line integrals, mm spacing) and the sidecar.

    ``films`` (a :class:`~DiffuX2CTLib.radiograph.simulation.SimulatedFilms`) adds
    ``{view}_film.dcm`` (DICOM DX) and ``{view}_film.png`` (8-bit) per view, listed in the
    sidecar's ``files`` and described under its ``film`` key.
    All files appear together or not at all (staged in a temporary folder inside ``out_dir``).
    """
    from .io.ct import write_ct
    from .io.xray import write_png16, write_xray_nrrd

    out_dir = Path(out_dir)
    names: list[str] = []
    with staged_directory(out_dir) as stage:
        for i, view in enumerate(result.geometry.views):
            if progress:
                progress(f"writing {view}")
            write_png16(stage / f"{view}.png", (result.radiographs[i] + 1.0) / 2.0,
                        spacing_mm=result.geometry.detector_spacing_mm)
            write_xray_nrrd(stage / f"{view}.nrrd", result.line_integrals[i], result.geometry.detector_spacing_mm)
            names += [f"{view}.png", f"{view}.nrrd"]
        if write_model_ct:
            write_ct(result.model_ct, stage / "ct_model_grid.nii.gz")
            names.append("ct_model_grid.nii.gz")
        sidecar = result.sidecar(source)
        if films is not None:
            from .radiograph.simulation import write_film_files

            for view, entry in write_film_files(stage, films, source=source, progress=progress).items():
                sidecar["files"][view].update(entry)
                names += list(entry.values())
            sidecar["film"] = films.sidecar()
        (stage / SIDECAR_NAME).write_text(json.dumps(sidecar, indent=2))
        names.append(SIDECAR_NAME)
    return [out_dir / n for n in names]
