"""Films of every view of a CT simulation, their files, and the ``simulate --style radiograph`` options.

Used by :func:`DiffuX2CTLib.simulate.write_simulation` and ``diffux2ct simulate``. Each view gets
its own random stream spawned from one seed (``numpy.random.SeedSequence(seed).spawn``), so a
seed reproduces every film, and its own side marker: ``R`` on the patient's right for the AP
view, ``L`` for the left lateral.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .dicom_writer import DXAcquisition, DXStudy, write_dx_dicom, write_film_png
from .film import FilmConfig, FilmImage, LabelConfig, film_from_line_integrals
from .presets import DEFAULT_PRESET, FILM_PRESETS, PRESET_NAMES, RANDOM_PRESET, customise, film_preset

if TYPE_CHECKING:  # pragma: no cover
    from ..simulate import SimulatedXRays

STYLES = ("drr", "radiograph")


def view_labels(labels: LabelConfig, acquisition: DXAcquisition) -> LabelConfig:
    """``labels`` with the view's lead marker and its ViewPosition added to the burned-in text.

    Lateral views get the letter of the side against the detector (``LL`` -> ``L``) at the top
    right; other views an ``R`` at the top corner on the patient's right.
    """
    position = acquisition.view_position
    if position in ("LL", "RL"):
        marker, corner = position[0], "top-right"
    else:
        row_direction = acquisition.patient_orientation[0]
        marker, corner = "R", ("top-left" if row_direction.startswith("L") else "top-right")
    text = (*labels.text, position) if labels.text and position else labels.text
    return dataclasses.replace(labels, marker=marker, marker_corner=corner, text=text)


@dataclass
class SimulatedFilms:
    """Films of all views of one simulation.

    Attributes:
        films: view name -> film, in the geometry's view order.
        acquisitions: view name -> DICOM acquisition facts.
        config: the settings before per-view labels.
        seed: the seed that reproduces them.
        preset: the preset name, if one was used.
        study: the synthetic DICOM patient/study shared by the views.
    """

    films: dict[str, FilmImage]
    acquisitions: dict[str, DXAcquisition]
    config: FilmConfig
    seed: int
    preset: str | None = None
    study: DXStudy = field(default_factory=DXStudy)

    def sidecar(self) -> dict[str, Any]:
        """JSON-safe description for ``geometry.json``."""
        return {
            "style": "radiograph",
            "preset": self.preset,
            "seed": self.seed,
            "config": self.config.to_dict(),
            "study_instance_uid": self.study.study_instance_uid,
            "views": {
                view: {
                    **film.summary(),
                    "view_position": self.acquisitions[view].view_position,
                    "patient_orientation": list(self.acquisitions[view].patient_orientation),
                    "marker": film.config.labels.marker if film.config.labels else "",
                }
                for view, film in self.films.items()
            },
        }


def simulate_films(
    result: "SimulatedXRays",
    config: FilmConfig | str = DEFAULT_PRESET,
    *,
    seed: int | None = None,
    body_part: str = "CHEST",
    labels: bool | None = None,
    collimation: bool | None = None,
    monochrome: int | None = None,
    intent: str | None = None,
) -> SimulatedFilms:
    """Films of every view of ``result`` with ``config`` (or a preset name) and the CLI switches.

    ``seed=None`` draws a fresh seed, recorded in the result. The ``random`` preset draws its
    settings from the same seed.
    """
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))
    geometry = result.geometry
    config_stream, *view_streams = np.random.SeedSequence(seed).spawn(1 + len(geometry.views))
    preset = config if isinstance(config, str) else None
    if isinstance(config, str):
        config = film_preset(config, np.random.default_rng(config_stream))
    config = customise(config, labels=labels, collimation=collimation, monochrome=monochrome, intent=intent)
    films: dict[str, FilmImage] = {}
    acquisitions: dict[str, DXAcquisition] = {}
    for i, (view, stream) in enumerate(zip(geometry.views, view_streams)):
        acquisition = DXAcquisition.from_geometry(geometry, view, body_part=body_part)
        view_config = config.replace(labels=view_labels(config.labels, acquisition)) if config.labels else config
        films[view] = film_from_line_integrals(
            result.line_integrals[i], geometry.detector_spacing_mm, view_config, np.random.default_rng(stream),
            magnification=geometry.magnification,
        )
        acquisitions[view] = acquisition
    return SimulatedFilms(films, acquisitions, config, seed, preset)


def film_file_names(view: str) -> dict[str, str]:
    """Sidecar ``files`` entries of one view's film."""
    return {"dicom_dx_film": f"{view}_film.dcm", "png8_film": f"{view}_film.png"}


def write_film_files(folder: str | Path, films: SimulatedFilms, source: str | None = None,
                     progress: Callable[[str], None] | None = None) -> dict[str, dict[str, str]]:
    """Write ``{view}_film.dcm`` (DX) and ``{view}_film.png`` (8-bit) into ``folder``, each atomically.

    Returns view -> sidecar ``files`` entries. Call inside a staged folder so that all files
    appear together.
    """
    folder = Path(folder)
    derivation = "Simulated radiograph: film physics applied to DRR line integrals of a CT"
    if source:
        derivation += f" ({Path(source).name})"
    names: dict[str, dict[str, str]] = {}
    for number, (view, film) in enumerate(films.films.items(), start=1):
        if progress:
            progress(f"writing {view} film")
        entry = film_file_names(view)
        write_dx_dicom(folder / entry["dicom_dx_film"], film, films.acquisitions[view], films.study,
                       instance_number=number, derivation=derivation)
        write_film_png(folder / entry["png8_film"], film)
        names[view] = entry
    return names


# ---------------------------------------------------------------------------------------------
# Command-line options of ``diffux2ct simulate``
# ---------------------------------------------------------------------------------------------
_FILM_FLAGS = ("film_preset", "seed", "labels", "collimation", "monochrome", "intent")


def add_film_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--style`` and the film options to the ``simulate`` sub-parser."""
    presets = "; ".join(f"{name}: {desc}" for name, (_, desc) in FILM_PRESETS.items())
    group = parser.add_argument_group(
        "realistic films (--style radiograph)",
        "Besides the DRRs, write {view}_film.dcm (DICOM DX) and {view}_film.png (8-bit, display-processed) "
        "with exposure (Poisson + electronic noise), scatter, heel effect, focal-spot and detector blur, "
        "collimation and burned-in labels.",
    )
    group.add_argument("--style", choices=STYLES, default="drr",
                       help="drr: only the DRRs (default); radiograph: also realistic films of the same views")
    group.add_argument("--film-preset", choices=PRESET_NAMES, default=None,
                       help=f"film settings (default {DEFAULT_PRESET}). {presets}; "
                            f"{RANDOM_PRESET}: settings drawn from --seed in realistic ranges")
    group.add_argument("--seed", type=int, default=None, help="random seed of the films (default: fresh, recorded in geometry.json)")
    group.add_argument("--labels", action=argparse.BooleanOptionalAction, default=None,
                       help="burn in the R/L lead marker and a SIMULATED text block (default: per preset)")
    group.add_argument("--collimation", action=argparse.BooleanOptionalAction, default=None,
                       help="unexposed border band outside a collimated field (default: per preset)")
    group.add_argument("--monochrome", type=int, choices=(1, 2), default=None,
                       help="DICOM PhotometricInterpretation MONOCHROME1 or MONOCHROME2 (default: per preset)")
    group.add_argument("--intent", choices=("processing", "presentation"), default=None,
                       help="DICOM PresentationIntentType FOR PROCESSING (raw) or FOR PRESENTATION (default: per preset)")


def film_request_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """Keyword arguments of :func:`simulate_films` from parsed options, or None for ``--style drr``.

    Raises:
        InputError: film options given with ``--style drr``.
    """
    from ..errors import InputError

    if getattr(args, "style", "drr") != "radiograph":
        given = [f"--{name.replace('_', '-')}" for name in _FILM_FLAGS if getattr(args, name, None) is not None]
        if given:
            raise InputError(None, f"{', '.join(given)} only apply with --style radiograph")
        return None
    return {
        "config": args.film_preset or DEFAULT_PRESET,
        "seed": args.seed,
        "labels": args.labels,
        "collimation": args.collimation,
        "monochrome": args.monochrome,
        "intent": args.intent,
    }


__all__ = [
    "STYLES",
    "SimulatedFilms",
    "add_film_arguments",
    "film_file_names",
    "film_request_from_args",
    "simulate_films",
    "view_labels",
    "write_film_files",
]
