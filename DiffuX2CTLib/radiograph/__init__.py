"""Realistic radiographs ("films") from DRR line integrals, and their DICOM DX / PNG files.

* :mod:`.film`: the physics (exposure, heel, collimation, focal-spot blur, scatter, markers,
  Poisson-Gaussian noise, detector blur) and the stored-value encodings.
* :mod:`.presets`: named settings and :func:`random_film_config` for training augmentation.
* :mod:`.dicom_writer`: DICOM Digital X-Ray (For Presentation / For Processing) and 8-bit PNG.
* :mod:`.simulation`: films of every view of a CT simulation (``diffux2ct simulate --style radiograph``).

Imports numpy only; pydicom and Pillow are imported when writing.
"""

from .dicom_writer import DXAcquisition, DXStudy, build_dx_dataset, write_dx_dicom, write_film_png
from .film import (
    CollimationConfig,
    DetectorBlurConfig,
    EncodingConfig,
    ExposureConfig,
    FilmConfig,
    FilmEncoding,
    FilmImage,
    FocalSpotConfig,
    HeelConfig,
    LabelConfig,
    NoiseConfig,
    ScatterConfig,
    film_from_line_integrals,
)
from .presets import FILM_PRESETS, PRESET_NAMES, FilmRandomRanges, film_preset, random_film_config
from .simulation import SimulatedFilms, simulate_films, write_film_files

__all__ = [
    "CollimationConfig",
    "DXAcquisition",
    "DXStudy",
    "DetectorBlurConfig",
    "EncodingConfig",
    "ExposureConfig",
    "FILM_PRESETS",
    "FilmConfig",
    "FilmEncoding",
    "FilmImage",
    "FilmRandomRanges",
    "FocalSpotConfig",
    "HeelConfig",
    "LabelConfig",
    "NoiseConfig",
    "PRESET_NAMES",
    "ScatterConfig",
    "SimulatedFilms",
    "build_dx_dataset",
    "film_from_line_integrals",
    "film_preset",
    "random_film_config",
    "simulate_films",
    "write_dx_dicom",
    "write_film_png",
    "write_film_files",
]
