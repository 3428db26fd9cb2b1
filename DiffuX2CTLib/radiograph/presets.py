"""Named film settings and randomised settings for training augmentation.

Presets (all share one realistic chest DR chain unless noted: 10 µGy unattenuated detector
kerma, quantum efficiency 0.6, SPR 0.4 with a 60 mm FWHM scatter kernel, 8 % heel effect with
the anode at the top, 1.2 mm focal spot, 0.2 mm detector blur, Poisson + 2 ADU electronic noise,
15 mm collimation borders with a 3 mm penumbra, a lead side marker and "SIMULATED" burned in):

``presentation``   FOR PRESENTATION, MONOCHROME2, 12 bits: -log, windowed to the field's
                   0.1-99.9 % range, VOI window at the 1-99 % range (as a processed DR image).
``film-mono1``     as ``presentation`` but MONOCHROME1 (stored values inverted), as many CR/DR
                   systems store it.
``processing-raw`` FOR PROCESSING, LIN (sign +1), MONOCHROME2, 14 bits, 800 ADU/µGy: the raw
                   detector signal as systems archive it (looks negative when shown as is);
                   marker only, no burned-in text.
``processing-log`` FOR PROCESSING, LOG (1000 per decade of kerma, sign +1), MONOCHROME1, 12
                   bits, as CR readers store "for processing" data; marker only.
``ideal``          FOR PROCESSING LIN 16 bits with every effect off: ``-ln((I - offset) / G)``
                   returns the DRR line integrals up to quantisation.
``random``         :func:`random_film_config` at full strength (drawn from the seed).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import InputError
from .film import (
    CollimationConfig,
    DetectorBlurConfig,
    EncodingConfig,
    ExposureConfig,
    FilmConfig,
    FocalSpotConfig,
    HeelConfig,
    LabelConfig,
    NoiseConfig,
    ScatterConfig,
)


def _presentation() -> FilmConfig:
    return FilmConfig()


def _film_mono1() -> FilmConfig:
    return FilmConfig(encoding=EncodingConfig(photometric="MONOCHROME1"))


def _processing_raw() -> FilmConfig:
    return FilmConfig(
        exposure=ExposureConfig(adu_per_uGy=800.0),
        labels=LabelConfig(text=()),
        encoding=EncodingConfig(intent="processing", relationship="LIN", photometric="MONOCHROME2", bits_stored=14),
    )


def _processing_log() -> FilmConfig:
    return FilmConfig(
        labels=LabelConfig(text=()),
        encoding=EncodingConfig(intent="processing", relationship="LOG", photometric="MONOCHROME1", bits_stored=12,
                                log_counts_per_decade=1000.0),
    )


def _ideal() -> FilmConfig:
    return FilmConfig(
        heel=None, collimation=None, focal_spot=None, scatter=None, detector_blur=None, noise=None, labels=None,
        encoding=EncodingConfig(intent="processing", relationship="LIN", bits_stored=16),
    )


#: name -> (factory, one-line description); ``random`` is handled by :func:`film_preset`.
FILM_PRESETS: dict[str, tuple[Callable[[], FilmConfig], str]] = {
    "presentation": (_presentation, "FOR PRESENTATION MONOCHROME2 12-bit, display-processed, VOI window"),
    "film-mono1": (_film_mono1, "FOR PRESENTATION MONOCHROME1 12-bit (stored values inverted)"),
    "processing-raw": (_processing_raw, "FOR PROCESSING linear raw (LIN, sign +1) MONOCHROME2 14-bit"),
    "processing-log": (_processing_log, "FOR PROCESSING log-encoded (LOG, 1000/decade) MONOCHROME1 12-bit"),
    "ideal": (_ideal, "FOR PROCESSING LIN 16-bit, no scatter/blur/noise/heel/labels/collimation"),
}
RANDOM_PRESET = "random"
PRESET_NAMES: tuple[str, ...] = (*FILM_PRESETS, RANDOM_PRESET)
DEFAULT_PRESET = "presentation"


def film_preset(name: str, rng: np.random.Generator | None = None) -> FilmConfig:
    """The settings of a named preset (``random`` draws them from ``rng``)."""
    if name == RANDOM_PRESET:
        return random_film_config(rng if rng is not None else np.random.default_rng(), 1.0)
    if name not in FILM_PRESETS:
        raise InputError(None, f"unknown film preset {name!r}; choose one of {list(PRESET_NAMES)}")
    return FILM_PRESETS[name][0]()


# ---------------------------------------------------------------------------------------------
# Randomised settings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FilmRandomRanges:
    """Ranges drawn by :func:`random_film_config` at full strength (uniform unless noted).

    Attributes:
        detector_air_kerma_uGy: log-uniform; unattenuated detector kerma, low-dose bedside to
            over-exposed CR.
        quantum_efficiency: GOS screens (~0.35) to CsI flat panels (~0.75).
        adu_per_uGy: log-uniform detector gain.
        dark_offset_adu: dark offset.
        electronic_adu: electronic noise standard deviation.
        scatter_to_primary: SPR, chest with grid (0.1) to without grid (1.5).
        scatter_fwhm_mm: scatter kernel FWHM.
        heel_percent: heel effect at the detector edges; axis vertical with ``heel_rows_probability``.
        focal_spot_mm: small to large focal spots.
        detector_blur_mm: CsI to powder-phosphor / CR line-spread FWHM.
        collimation_probability, collimation_border_mm, collimation_edge_mm: field borders per side.
        marker_probability, text_probability: burned-in labels.
        intent_probabilities: (presentation, processing LIN, processing LOG).
        monochrome1_probability: MONOCHROME1 instead of MONOCHROME2.
        bits_choices: bits stored (LIN raw uses at least 14).
        gamma: presentation gamma.
        display_low_percentile, display_high_percentile: presentation display range.
    """

    detector_air_kerma_uGy: tuple[float, float] = (1.0, 30.0)
    quantum_efficiency: tuple[float, float] = (0.35, 0.75)
    adu_per_uGy: tuple[float, float] = (50.0, 800.0)
    dark_offset_adu: tuple[float, float] = (0.0, 200.0)
    electronic_adu: tuple[float, float] = (0.5, 8.0)
    scatter_to_primary: tuple[float, float] = (0.1, 1.5)
    scatter_fwhm_mm: tuple[float, float] = (30.0, 150.0)
    heel_percent: tuple[float, float] = (0.0, 15.0)
    heel_rows_probability: float = 0.8
    focal_spot_mm: tuple[float, float] = (0.3, 1.5)
    detector_blur_mm: tuple[float, float] = (0.1, 0.6)
    collimation_probability: float = 0.7
    collimation_border_mm: tuple[float, float] = (0.0, 40.0)
    collimation_edge_mm: tuple[float, float] = (1.0, 6.0)
    marker_probability: float = 0.8
    text_probability: float = 0.5
    intent_probabilities: tuple[float, float, float] = (0.6, 0.2, 0.2)
    monochrome1_probability: float = 0.3
    bits_choices: tuple[int, ...] = (10, 12, 14, 16)
    gamma: tuple[float, float] = (0.7, 1.4)
    display_low_percentile: tuple[float, float] = (0.0, 2.0)
    display_high_percentile: tuple[float, float] = (98.0, 100.0)


DEFAULT_RANDOM_RANGES = FilmRandomRanges()
_TEXT_CHOICES = ("SIMULATED", "PORTABLE", "UPRIGHT", "SUPINE", "AP", "ERECT", "INSP", "2024-01-01", "120 KV")


def random_film_config(
    rng: np.random.Generator,
    strength: float = 1.0,
    *,
    ranges: FilmRandomRanges = DEFAULT_RANDOM_RANGES,
    base: FilmConfig | None = None,
) -> FilmConfig:
    """Settings drawn in realistic ranges (:class:`FilmRandomRanges`) for training augmentation.

    ``strength`` in [0, 1] blends each continuous setting from ``base`` (default: the
    ``presentation`` preset) towards its random draw, ``base + strength * (draw - base)``
    (log-scale for log-uniform ones); each discrete choice (stage on/off, labels, intent,
    photometric, bits, heel direction) takes its random value with probability ``strength``.
    ``strength = 0`` returns ``base`` unchanged. The number of draws is the same for any strength.
    """
    if not (math.isfinite(strength) and 0.0 <= strength <= 1.0):
        raise InputError(None, f"augmentation strength must be in [0, 1], got {strength!r}")
    base = base or _presentation()
    r = ranges
    s = float(strength)

    def lin(base_value: float, lo_hi: tuple[float, float]) -> float:
        draw = float(rng.uniform(*lo_hi))
        return base_value + s * (draw - base_value)

    def log(base_value: float, lo_hi: tuple[float, float]) -> float:
        draw = float(np.exp(rng.uniform(math.log(lo_hi[0]), math.log(lo_hi[1]))))
        return float(np.exp(math.log(base_value) + s * (math.log(draw) - math.log(base_value))))

    def pick(base_value, draw):
        return draw if rng.random() < s else base_value

    def flag(probability: float) -> bool:
        return bool(rng.random() < probability)

    exposure = dataclasses.replace(
        base.exposure,
        detector_air_kerma_uGy=log(base.exposure.detector_air_kerma_uGy, r.detector_air_kerma_uGy),
        quantum_efficiency=lin(base.exposure.quantum_efficiency, r.quantum_efficiency),
        adu_per_uGy=log(base.exposure.adu_per_uGy, r.adu_per_uGy),
        dark_offset_adu=lin(base.exposure.dark_offset_adu, r.dark_offset_adu),
    )
    b_noise = base.noise or NoiseConfig(electronic_adu=0.0)
    noise = NoiseConfig(poisson=True, electronic_adu=lin(b_noise.electronic_adu, r.electronic_adu))
    noise = pick(base.noise, noise)

    b_scatter = base.scatter or ScatterConfig(scatter_to_primary=0.0)
    scatter = pick(base.scatter, ScatterConfig(lin(b_scatter.scatter_to_primary, r.scatter_to_primary),
                                               lin(b_scatter.fwhm_mm, r.scatter_fwhm_mm)))
    b_heel = base.heel or HeelConfig(percent=0.0)
    heel = HeelConfig(
        percent=lin(b_heel.percent, r.heel_percent),
        axis=pick(b_heel.axis, "rows" if flag(r.heel_rows_probability) else "cols"),
        anode_at_start=pick(b_heel.anode_at_start, flag(0.5)),
    )
    heel = pick(base.heel, heel)
    b_focal = base.focal_spot or FocalSpotConfig(size_mm=0.0)
    focal = pick(base.focal_spot, FocalSpotConfig(lin(b_focal.size_mm, r.focal_spot_mm)))
    b_det = base.detector_blur or DetectorBlurConfig(fwhm_mm=0.0)
    detector = pick(base.detector_blur, DetectorBlurConfig(lin(b_det.fwhm_mm, r.detector_blur_mm)))

    b_coll = base.collimation or CollimationConfig(border_mm=(0.0, 0.0, 0.0, 0.0))
    borders = tuple(lin(b, r.collimation_border_mm) for b in b_coll.border_mm)
    coll_draw = CollimationConfig(border_mm=borders, edge_fwhm_mm=lin(b_coll.edge_fwhm_mm, r.collimation_edge_mm))
    collimation = pick(base.collimation, coll_draw if flag(r.collimation_probability) else None)

    b_labels = base.labels or LabelConfig(text=())
    marker = pick(b_labels.marker, str(rng.choice(["R", "L"])) if flag(r.marker_probability) else "")
    corners = ("top-left", "top-right", "bottom-left", "bottom-right")
    marker_corner = pick(b_labels.marker_corner, str(rng.choice(corners)))
    n_text = int(rng.integers(1, 3))
    text_draw = tuple(str(t) for t in rng.choice(_TEXT_CHOICES, size=n_text, replace=False))
    text = pick(b_labels.text, text_draw if flag(r.text_probability) else ())
    text_corner = pick(b_labels.text_corner, str(rng.choice(corners)))
    labels = dataclasses.replace(b_labels, marker=marker, marker_corner=marker_corner, text=text,
                                 text_corner=text_corner)
    if not labels.marker and not labels.text:
        labels = None

    enc = base.encoding
    kind = int(rng.choice(3, p=np.asarray(r.intent_probabilities) / sum(r.intent_probabilities)))
    intent, relationship = (("presentation", enc.relationship), ("processing", "LIN"), ("processing", "LOG"))[kind]
    intent, relationship = pick((enc.intent, enc.relationship), (intent, relationship))
    photometric = pick(enc.photometric, "MONOCHROME1" if flag(r.monochrome1_probability) else "MONOCHROME2")
    bits = pick(enc.bits_stored, int(rng.choice(r.bits_choices)))
    if intent == "processing" and relationship == "LIN" and (intent, relationship) != (enc.intent, enc.relationship):
        bits = max(bits, 14)  # raw data keep their dynamic range
    encoding = dataclasses.replace(
        enc, intent=intent, relationship=relationship, photometric=photometric, bits_stored=bits,
        gamma=float(np.exp(math.log(enc.gamma) + s * (rng.uniform(*np.log(r.gamma)) - math.log(enc.gamma)))),
        display_percentiles=(lin(enc.display_percentiles[0], r.display_low_percentile),
                             lin(enc.display_percentiles[1], r.display_high_percentile)),
    )
    config = FilmConfig(exposure=exposure, heel=heel, collimation=collimation, focal_spot=focal, scatter=scatter,
                        detector_blur=detector, noise=noise, labels=labels, encoding=encoding)
    return base if s == 0.0 else config


def customise(
    config: FilmConfig,
    *,
    labels: bool | None = None,
    collimation: bool | None = None,
    monochrome: int | None = None,
    intent: str | None = None,
) -> FilmConfig:
    """Apply the command-line switches to a preset (``None`` keeps the preset's choice).

    ``labels``/``collimation`` turn the stage off, or on with default settings when the preset
    had none; ``monochrome`` is 1 or 2; ``intent`` is ``processing`` (a presentation preset then
    stores 12-bit linear raw data) or ``presentation``.
    """
    if labels is False:
        config = config.replace(labels=None)
    elif labels and config.labels is None:
        config = config.replace(labels=LabelConfig())
    if collimation is False:
        config = config.replace(collimation=None)
    elif collimation and config.collimation is None:
        config = config.replace(collimation=CollimationConfig())
    enc = config.encoding
    if intent is not None and intent != enc.intent:
        if intent not in ("processing", "presentation"):
            raise InputError(None, f"intent must be 'processing' or 'presentation', got {intent!r}")
        enc = dataclasses.replace(enc, intent=intent)
    if monochrome is not None:
        if monochrome not in (1, 2):
            raise InputError(None, f"monochrome must be 1 or 2, got {monochrome!r}")
        enc = dataclasses.replace(enc, photometric=f"MONOCHROME{monochrome}")
    return config.replace(encoding=enc)


__all__ = [
    "DEFAULT_PRESET",
    "DEFAULT_RANDOM_RANGES",
    "FILM_PRESETS",
    "FilmRandomRanges",
    "PRESET_NAMES",
    "RANDOM_PRESET",
    "customise",
    "film_preset",
    "random_film_config",
]
