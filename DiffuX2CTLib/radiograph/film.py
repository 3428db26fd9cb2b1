"""Realistic digital radiographs ("films") from DRR line integrals.

Input is a line-integral image ``p = ∫ μ dl`` (dimensionless, as written by
:mod:`DiffuX2CTLib.simulate`) on a detector grid with pixel pitch ``spacing_mm = (row, col)`` in
millimetres **on the detector plane**; row 0 is the top of the image. The image formation chain,
each stage optional (``None`` disables it):

1. **Exposure.** The unattenuated beam gives detector air kerma ``K0`` (µGy) at the field centre;
   with ``q`` photons per mm² per µGy and quantum efficiency ``η`` a pixel of area ``A`` detects
   ``N0 = η q K0 A`` quanta on average. The detector output is linear in kerma: ``G = g K0`` ADU
   for the unattenuated beam (``g`` ADU per µGy), plus a dark offset. Noise-free and without the
   other effects the film is ``I = G exp(-p) + offset``.
2. **Heel effect** (anode side darker): incident intensity ``(1 + h)^t`` along the anode-cathode
   axis, ``t`` from -1 (anode edge of the detector) to +1 (cathode edge), 1 at the centre.
3. **Collimation**: outside a rectangular field (border widths in mm at the detector) no X-rays
   arrive; the blade edge is blurred by the focal spot (Gaussian penumbra, FWHM in mm). Scatter
   outside the field is neglected, so the border band reads the unexposed (dark) value.
4. **Focal-spot blur** of the primary image: an object at the isocentre, magnified by
   ``M = SDD / SOD``, is blurred at the detector by a Gaussian of FWHM ``f (M - 1)`` mm, where
   ``f`` is the focal spot size (FWHM, mm).
5. **Scatter**: a broad Gaussian low-pass (FWHM tens of mm at the detector) of the collimated
   primary, scaled so that total scatter / total primary over the field equals the
   scatter-to-primary ratio (SPR).
6. **Lead marker** (e.g. "R"): transmission ``t`` of primary and scatter under its letters.
7. **Quantum noise**: Poisson on the detected quanta; then **detector blur** (scintillator light
   spread, Gaussian FWHM in mm), which also correlates the noise; then Gaussian **electronic
   noise** (ADU) and the dark offset.
8. **Encoding** to stored pixel values (:class:`EncodingConfig`): ``FOR PROCESSING`` linear raw
   (``LIN``) or log-encoded (``LOG``) data, or ``FOR PRESENTATION`` data processed for display
   (``-log``, windowing to the field's percentile range, optional gamma) with a VOI window;
   ``MONOCHROME1`` or ``MONOCHROME2``; 6..16 bits stored. Burned-in text is set to the stored
   value displayed white.

All random draws come from the ``numpy.random.Generator`` passed in. Only numpy is used; blurs
are separable FFT convolutions with mirror boundaries (the image mean is preserved).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

from ..errors import InputError
from .glyphs import CORNERS, Corner, render_text_mask

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise InputError(None, f"film setting {name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


@dataclass(frozen=True)
class ExposureConfig:
    """Dose and detector response.

    Attributes:
        detector_air_kerma_uGy: air kerma (µGy) of the unattenuated beam at the detector centre,
            the dose parameter (a chest radiograph delivers ~2.5 µGy behind the lungs, ~10 µGy
            unattenuated).
        fluence_per_uGy_mm2: X-ray photons per mm² per µGy of air kerma (about 30,000 for the
            IEC 62220-1 RQA5/RQA9 beam qualities).
        quantum_efficiency: fraction of incident photons detected (0.35 GOS .. 0.75 CsI).
        adu_per_uGy: detector gain, ADU (stored raw units) per µGy of air kerma.
        dark_offset_adu: mean signal of an unexposed pixel, ADU.
    """

    detector_air_kerma_uGy: float = 10.0
    fluence_per_uGy_mm2: float = 30000.0
    quantum_efficiency: float = 0.6
    adu_per_uGy: float = 200.0
    dark_offset_adu: float = 100.0

    def __post_init__(self) -> None:
        _positive("detector_air_kerma_uGy", self.detector_air_kerma_uGy)
        _positive("fluence_per_uGy_mm2", self.fluence_per_uGy_mm2)
        _positive("adu_per_uGy", self.adu_per_uGy)
        _positive("dark_offset_adu", self.dark_offset_adu, allow_zero=True)
        if not 0.0 < self.quantum_efficiency <= 1.0:
            raise InputError(None, f"film setting quantum_efficiency must be in (0, 1], got {self.quantum_efficiency!r}")


@dataclass(frozen=True)
class HeelConfig:
    """Anode heel effect.

    Attributes:
        percent: intensity at the cathode edge of the detector is ``1 + percent/100`` times the
            centre's, at the anode edge ``1 / (1 + percent/100)`` (exponential gradient).
        axis: ``"rows"`` (anode-cathode axis vertical in the image) or ``"cols"``.
        anode_at_start: the anode is towards row 0 (top) / column 0 (left); else the other end.
    """

    percent: float = 8.0
    axis: Literal["rows", "cols"] = "rows"
    anode_at_start: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.percent) and 0.0 <= self.percent < 100.0):
            raise InputError(None, f"heel percent must be in [0, 100), got {self.percent!r}")
        if self.axis not in ("rows", "cols"):
            raise InputError(None, f"heel axis must be 'rows' or 'cols', got {self.axis!r}")


@dataclass(frozen=True)
class FocalSpotConfig:
    """Focal-spot unsharpness.

    Attributes:
        size_mm: focal spot size, taken as the FWHM of a Gaussian intensity profile (mm); blur at
            the detector is ``size_mm * (M - 1)`` for object magnification ``M``.
    """

    size_mm: float = 1.2

    def __post_init__(self) -> None:
        _positive("focal spot size_mm", self.size_mm, allow_zero=True)


@dataclass(frozen=True)
class ScatterConfig:
    """Scatter reaching the detector.

    Attributes:
        scatter_to_primary: total scatter / total primary over the field (SPR; 0.2..0.8 for a
            chest with an anti-scatter grid, 1..3 without).
        fwhm_mm: FWHM (mm at the detector) of the Gaussian scatter kernel.
    """

    scatter_to_primary: float = 0.4
    fwhm_mm: float = 60.0

    def __post_init__(self) -> None:
        _positive("scatter_to_primary", self.scatter_to_primary, allow_zero=True)
        _positive("scatter fwhm_mm", self.fwhm_mm)


@dataclass(frozen=True)
class DetectorBlurConfig:
    """Detector unsharpness (scintillator light spread, the presampling MTF beyond the pixel).

    Attributes:
        fwhm_mm: FWHM of the Gaussian line-spread function, mm on the detector.
    """

    fwhm_mm: float = 0.2

    def __post_init__(self) -> None:
        _positive("detector blur fwhm_mm", self.fwhm_mm, allow_zero=True)


@dataclass(frozen=True)
class NoiseConfig:
    """Image noise.

    Attributes:
        poisson: draw the detected quanta from a Poisson distribution (quantum noise).
        electronic_adu: standard deviation of additive Gaussian electronic noise, ADU.
    """

    poisson: bool = True
    electronic_adu: float = 2.0

    def __post_init__(self) -> None:
        _positive("electronic_adu", self.electronic_adu, allow_zero=True)


@dataclass(frozen=True)
class CollimationConfig:
    """Rectangular collimated field.

    Attributes:
        border_mm: widths (top, bottom, left, right) in mm at the detector of the unexposed band.
        edge_fwhm_mm: FWHM of the blade-edge penumbra at the detector (focal spot size times
            ``(SID - d) / d`` for blades at distance ``d`` from the source; ~3 mm typical).
    """

    border_mm: tuple[float, float, float, float] = (15.0, 15.0, 15.0, 15.0)
    edge_fwhm_mm: float = 3.0

    def __post_init__(self) -> None:
        border = tuple(float(b) for b in self.border_mm)
        if len(border) != 4 or not all(math.isfinite(b) and b >= 0 for b in border):
            raise InputError(None, f"collimation border_mm must be 4 widths >= 0 (top, bottom, left, right), got {self.border_mm!r}")
        object.__setattr__(self, "border_mm", border)
        _positive("collimation edge_fwhm_mm", self.edge_fwhm_mm, allow_zero=True)


@dataclass(frozen=True)
class LabelConfig:
    """Burned-in labels.

    Attributes:
        marker: letters of a lead side marker (e.g. ``"R"``) placed inside the field; ``""`` none.
        marker_corner: image corner of the marker.
        marker_height_mm: marker letter height (mm at the detector).
        marker_transmission: fraction of the beam passing the lead letters.
        text: lines of text burned in (saturated, displayed white); ``()`` none.
        text_corner: image corner of the text block.
        text_height_mm: text letter height (mm); each font dot is at least one pixel.
        inset_mm: distance (mm) of marker and text from their corner of the collimated field.
    """

    marker: str = ""
    marker_corner: Corner = "top-left"
    marker_height_mm: float = 20.0
    marker_transmission: float = 0.005
    text: tuple[str, ...] = ("SIMULATED",)
    text_corner: Corner = "bottom-right"
    text_height_mm: float = 6.0
    inset_mm: float = 8.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", tuple(str(t) for t in self.text))
        for corner in (self.marker_corner, self.text_corner):
            if corner not in CORNERS:
                raise InputError(None, f"label corner must be one of {CORNERS}, got {corner!r}")
        _positive("marker_height_mm", self.marker_height_mm)
        _positive("text_height_mm", self.text_height_mm)
        _positive("inset_mm", self.inset_mm, allow_zero=True)
        if not 0.0 <= self.marker_transmission <= 1.0:
            raise InputError(None, f"marker_transmission must be in [0, 1], got {self.marker_transmission!r}")


Intent = Literal["processing", "presentation"]
Photometric = Literal["MONOCHROME1", "MONOCHROME2"]


@dataclass(frozen=True)
class EncodingConfig:
    """How the detector signal becomes stored pixel values.

    Attributes:
        intent: ``"processing"`` (DICOM FOR PROCESSING: raw data) or ``"presentation"`` (FOR
            PRESENTATION: display-processed, with a VOI window).
        relationship: processing only: ``"LIN"`` stores the signal in ADU (sign +1), ``"LOG"``
            stores ``2^(bits-1) + log_counts_per_decade * log10(K / 1 µGy)`` of the pixel kerma
            ``K`` (sign +1). Presentation data are always ``LOG`` (``-log`` signal, higher = denser,
            sign -1 in MONOCHROME2, +1 in MONOCHROME1 where stored values are inverted).
        photometric: ``"MONOCHROME2"`` (low stored values black) or ``"MONOCHROME1"`` (white).
            For processing data it only tells viewers how to show the raw values.
        bits_stored: 6..16.
        log_counts_per_decade: LOG processing: stored units per factor 10 of kerma; ``None``
            spans four decades (0.01..100 µGy) with the stored range, ``2^bits / 4``.
        display_percentiles: presentation: percentiles of the ``-log`` signal inside the field
            mapped to the ends of the stored range.
        voi_percentiles: presentation: percentiles of the stored values inside the field that
            bound the stored VOI window (WindowCenter/WindowWidth).
        gamma: presentation: exponent on the normalised ``-log`` signal (1 = linear in log).
    """

    intent: Intent = "presentation"
    relationship: Literal["LIN", "LOG"] = "LIN"
    photometric: Photometric = "MONOCHROME2"
    bits_stored: int = 12
    log_counts_per_decade: float | None = None
    display_percentiles: tuple[float, float] = (0.1, 99.9)
    voi_percentiles: tuple[float, float] = (1.0, 99.0)
    gamma: float = 1.0

    def __post_init__(self) -> None:
        if self.intent not in ("processing", "presentation"):
            raise InputError(None, f"film intent must be 'processing' or 'presentation', got {self.intent!r}")
        if self.relationship not in ("LIN", "LOG"):
            raise InputError(None, f"film relationship must be 'LIN' or 'LOG', got {self.relationship!r}")
        if self.photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise InputError(None, f"photometric must be MONOCHROME1 or MONOCHROME2, got {self.photometric!r}")
        if not (isinstance(self.bits_stored, (int, np.integer)) and 6 <= int(self.bits_stored) <= 16):
            raise InputError(None, f"bits_stored must be an integer in 6..16, got {self.bits_stored!r}")
        object.__setattr__(self, "bits_stored", int(self.bits_stored))
        for name in ("display_percentiles", "voi_percentiles"):
            lo, hi = (float(v) for v in getattr(self, name))
            if not 0.0 <= lo < hi <= 100.0:
                raise InputError(None, f"{name} must satisfy 0 <= low < high <= 100, got {(lo, hi)}")
            object.__setattr__(self, name, (lo, hi))
        if self.log_counts_per_decade is not None:
            _positive("log_counts_per_decade", self.log_counts_per_decade)
        _positive("gamma", self.gamma)

    @property
    def max_value(self) -> int:
        return (1 << self.bits_stored) - 1


@dataclass(frozen=True)
class FilmConfig:
    """All settings of :func:`film_from_line_integrals`; a ``None`` stage is switched off."""

    exposure: ExposureConfig = field(default_factory=ExposureConfig)
    heel: HeelConfig | None = field(default_factory=HeelConfig)
    collimation: CollimationConfig | None = field(default_factory=CollimationConfig)
    focal_spot: FocalSpotConfig | None = field(default_factory=FocalSpotConfig)
    scatter: ScatterConfig | None = field(default_factory=ScatterConfig)
    detector_blur: DetectorBlurConfig | None = field(default_factory=DetectorBlurConfig)
    noise: NoiseConfig | None = field(default_factory=NoiseConfig)
    labels: LabelConfig | None = field(default_factory=LabelConfig)
    encoding: EncodingConfig = field(default_factory=EncodingConfig)

    def replace(self, **changes: Any) -> "FilmConfig":
        """A copy with some stages replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe nested dict (``None`` for a disabled stage)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FilmConfig":
        """Inverse of :meth:`to_dict`."""
        types = {
            "exposure": ExposureConfig, "heel": HeelConfig, "collimation": CollimationConfig,
            "focal_spot": FocalSpotConfig, "scatter": ScatterConfig, "detector_blur": DetectorBlurConfig,
            "noise": NoiseConfig, "labels": LabelConfig, "encoding": EncodingConfig,
        }
        unknown = set(data) - set(types)
        if unknown:
            raise InputError(None, f"unknown film config stages {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for name, kind in types.items():
            if name not in data:
                continue
            value = data[name]
            if value is None:
                kwargs[name] = None
                continue
            value = dict(value)
            for key, item in value.items():
                if isinstance(item, list):
                    value[key] = tuple(item)
            try:
                kwargs[name] = kind(**value)
            except TypeError as exc:
                raise InputError(None, f"bad film config stage {name!r}: {exc}") from exc
        return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FilmEncoding:
    """The stored-value convention of a film, as written to DICOM.

    Attributes:
        intent: ``"FOR PROCESSING"`` or ``"FOR PRESENTATION"`` (DICOM PresentationIntentType).
        relationship: ``"LIN"`` or ``"LOG"`` (PixelIntensityRelationship).
        sign: +1 higher stored value = more X-ray intensity, -1 = less (PixelIntensityRelationshipSign).
        photometric: ``"MONOCHROME1"`` or ``"MONOCHROME2"``.
        bits_stored: significant bits of the stored values.
        window_center, window_width: DICOM VOI window (linear function), ``None`` for processing.
    """

    intent: str
    relationship: str
    sign: int
    photometric: str
    bits_stored: int
    window_center: float | None = None
    window_width: float | None = None

    @property
    def max_value(self) -> int:
        return (1 << self.bits_stored) - 1

    @property
    def white_value(self) -> int:
        """Stored value that is displayed white (MONOCHROME2: the maximum, MONOCHROME1: 0)."""
        return self.max_value if self.photometric == "MONOCHROME2" else 0


@dataclass
class FilmImage:
    """A simulated radiograph.

    Attributes:
        stored: ``(rows, cols)`` uint16 stored pixel values (the DICOM PixelData), see ``encoding``.
        display: float32 in [0, 1], display-processed, **bright = dense**, labels white (the PNG).
        signal_adu: float64 linear detector signal (ADU) incl. dark offset and noise, before
            quantisation; ``(signal_adu - offset) / gain_adu = exp(-p)`` for an ideal film.
        expected_quanta: float64 noise-free detected quanta per pixel (primary + scatter).
        scatter_quanta: float64 scatter part of ``expected_quanta``.
        field_mask: bool, True inside the collimated field.
        marker_mask: bool, pixels under the lead marker letters.
        annotation_mask: bool, burned-in text pixels.
        spacing_mm: pixel pitch ``(row, col)`` in mm on the detector.
        magnification: object magnification ``M = SDD / SOD`` used for the focal-spot blur.
        n0_quanta: mean detected quanta per pixel of the unattenuated beam at the centre.
        gain_adu: ``G``, mean signal above the offset (ADU) of the unattenuated beam at the centre.
        dark_offset_adu: the detector's dark offset (ADU).
        exposure_index: IEC 62494-1 exposure index, 100 x median kerma (µGy) over the field's
            attenuated pixels.
        saturated_fraction: processing data: fraction of the field's pixels (marker and text
            excluded) clipped by the stored range; 0 for presentation data.
        encoding: the stored-value convention.
        config: the settings used.
    """

    stored: np.ndarray
    display: np.ndarray
    signal_adu: np.ndarray
    expected_quanta: np.ndarray
    scatter_quanta: np.ndarray
    field_mask: np.ndarray
    marker_mask: np.ndarray
    annotation_mask: np.ndarray
    spacing_mm: tuple[float, float]
    magnification: float
    n0_quanta: float
    gain_adu: float
    dark_offset_adu: float
    exposure_index: float
    saturated_fraction: float
    encoding: FilmEncoding
    config: FilmConfig

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.stored.shape)  # type: ignore[return-value]

    @property
    def adu_per_quantum(self) -> float:
        return self.gain_adu / self.n0_quanta

    def line_integrals(self) -> np.ndarray:
        """``-ln((signal - offset) / G)`` (float64): the line integrals an ideal film encodes.

        Signals at or below the offset (unexposed, or noise) are clamped to half a quantum.
        """
        floor = 0.5 * self.adu_per_quantum
        return -np.log(np.maximum(self.signal_adu - self.dark_offset_adu, floor) / self.gain_adu)

    def summary(self) -> dict[str, Any]:
        """JSON-safe numbers describing the film (for sidecars)."""
        return {
            "shape": list(self.shape),
            "spacing_mm": list(self.spacing_mm),
            "magnification": self.magnification,
            "n0_quanta_per_pixel": self.n0_quanta,
            "gain_adu": self.gain_adu,
            "dark_offset_adu": self.dark_offset_adu,
            "exposure_index": self.exposure_index,
            "saturated_fraction": self.saturated_fraction,
            "encoding": dataclasses.asdict(self.encoding),
        }


# ---------------------------------------------------------------------------------------------
# Numerical helpers
# ---------------------------------------------------------------------------------------------
def _fast_length(n: int) -> int:
    """Smallest ``2^a 3^b 5^c >= n`` (an efficient FFT length)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            size = p35
            while size < n:
                size *= 2
            best = min(best, size)
            p35 *= 3
        p5 *= 5
    return best


def _gaussian_transfer(length: int, sigma: float) -> np.ndarray:
    """rfft transfer function of the sampled Gaussian kernel ``exp(-n^2 / 2 sigma^2)``, ``|n| <= 6 sigma + 1``, unit sum.

    This is the kernel's exact DTFT ``g(0) + 2 sum_n g(n) cos(2 pi f n)``; unlike the continuous
    Gaussian's transfer function cut at Nyquist it does not ring for small sigma.
    """
    n = np.arange(1, int(math.ceil(6.0 * sigma)) + 2, dtype=np.float64)
    g = np.exp(-0.5 * (n / sigma) ** 2)
    f = np.fft.rfftfreq(length)
    transfer = 1.0 + 2.0 * np.cos(2.0 * math.pi * f[:, None] * n[None, :]) @ g
    return transfer / (1.0 + 2.0 * g.sum())


def gaussian_blur(image: np.ndarray, sigma_px: tuple[float, float]) -> np.ndarray:
    """Gaussian blur with standard deviations ``(rows, cols)`` in pixels (float64).

    Separable convolution with the sampled, normalised Gaussian kernel; each axis is
    mirror-extended by ``6 sigma`` and convolved through the FFT, so the image sum is preserved.
    """
    out = np.asarray(image, dtype=np.float64)
    for axis, sigma in enumerate(sigma_px):
        if not sigma > 0:
            continue
        n = out.shape[axis]
        pad = int(math.ceil(6.0 * sigma)) + 2
        length = _fast_length(n + 2 * pad)
        widths = [(0, 0), (0, 0)]
        widths[axis] = (pad, length - n - pad)
        extended = np.pad(out, widths, mode="symmetric")
        spectrum = np.fft.rfft(extended, axis=axis)
        transfer = _gaussian_transfer(length, sigma)
        spectrum *= transfer[:, None] if axis == 0 else transfer[None, :]
        full = np.fft.irfft(spectrum, n=length, axis=axis)
        out = full[pad:pad + n] if axis == 0 else full[:, pad:pad + n]
    return np.ascontiguousarray(out)


def _fwhm_to_sigma_px(fwhm_mm: float, spacing_mm: tuple[float, float]) -> tuple[float, float]:
    s = fwhm_mm / FWHM_PER_SIGMA
    return (s / spacing_mm[0], s / spacing_mm[1])


def _pixel_coords_mm(n: int, pitch: float) -> np.ndarray:
    """Pixel-centre positions (mm) relative to the detector centre."""
    return (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * pitch


def heel_profile(shape: tuple[int, int], heel: HeelConfig) -> np.ndarray:
    """Relative incident intensity, broadcastable to ``shape``: ``(rows, 1)`` or ``(1, cols)``."""
    axis = 0 if heel.axis == "rows" else 1
    n = shape[axis]
    t = (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) / (n / 2.0)  # -1..1 at the detector edges
    if not heel.anode_at_start:
        t = -t
    profile = np.exp(t * math.log1p(heel.percent / 100.0))  # anode (t < 0) darker
    return profile[:, None] if axis == 0 else profile[None, :]


def _edge_profile(x: np.ndarray, lo: float, hi: float, sigma: float) -> np.ndarray:
    """Fraction of a Gaussian-blurred box ``[lo, hi]`` at positions ``x``."""
    if sigma <= 0:
        return ((x >= lo) & (x <= hi)).astype(np.float64)
    erf = np.vectorize(math.erf, otypes=[np.float64])
    s = math.sqrt(2.0) * sigma
    return 0.5 * (erf((x - lo) / s) - erf((x - hi) / s))


def collimation_profile(
    shape: tuple[int, int], spacing_mm: tuple[float, float], coll: CollimationConfig
) -> tuple[np.ndarray, np.ndarray]:
    """``(soft, mask)``: the field's relative fluence with blurred edges and its boolean extent."""
    rows, cols = shape
    sr, sc = spacing_mm
    top, bottom, left, right = coll.border_mm
    y, x = _pixel_coords_mm(rows, sr), _pixel_coords_mm(cols, sc)
    y_lo, y_hi = -rows * sr / 2.0 + top, rows * sr / 2.0 - bottom
    x_lo, x_hi = -cols * sc / 2.0 + left, cols * sc / 2.0 - right
    mask = ((y >= y_lo) & (y <= y_hi))[:, None] & ((x >= x_lo) & (x <= x_hi))[None, :]
    if not mask.any():
        raise InputError(None, f"collimation borders {coll.border_mm} mm leave no exposed field on a "
                               f"{rows * sr:.0f} x {cols * sc:.0f} mm detector")
    sigma = coll.edge_fwhm_mm / FWHM_PER_SIGMA
    soft = _edge_profile(y, y_lo, y_hi, sigma)[:, None] * _edge_profile(x, x_lo, x_hi, sigma)[None, :]
    return soft, mask


def _label_masks(
    shape: tuple[int, int], spacing_mm: tuple[float, float], labels: LabelConfig | None,
    collimation: CollimationConfig | None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(marker, text)`` masks, each anchored ``inset_mm`` inside its corner of the exposed field."""
    empty = np.zeros(shape, dtype=bool)
    if labels is None:
        return empty, empty.copy()
    top, bottom, left, right = collimation.border_mm if collimation else (0.0, 0.0, 0.0, 0.0)

    def render(lines: Sequence[str], corner: str, height_mm: float) -> np.ndarray:
        inset_r = (top if corner.startswith("top") else bottom) + labels.inset_mm
        inset_c = (left if corner.endswith("left") else right) + labels.inset_mm
        return render_text_mask(lines, shape, spacing_mm, height_mm=height_mm, corner=corner,
                                inset_mm=(inset_r, inset_c))

    marker = render([labels.marker], labels.marker_corner, labels.marker_height_mm) if labels.marker else empty
    text = render(labels.text, labels.text_corner, labels.text_height_mm) if labels.text else empty.copy()
    return marker, text


def dicom_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM linear VOI function mapped to [0, 1] (PS3.3 C.11.2.1.2.1)."""
    if width < 1:
        raise InputError(None, f"window width must be >= 1, got {width}")
    if width == 1:
        return (values > center - 0.5).astype(np.float64)
    y = (np.asarray(values, dtype=np.float64) - (center - 0.5)) / (width - 1.0) + 0.5
    return np.clip(y, 0.0, 1.0)


def _window_from_range(lo: float, hi: float) -> tuple[float, float]:
    """DICOM (center, width) whose linear ramp runs from stored value ``lo`` to ``hi``."""
    hi = max(hi, lo + 1.0)
    return (lo + hi) / 2.0 + 0.5, hi - lo + 1.0


# ---------------------------------------------------------------------------------------------
# The film
# ---------------------------------------------------------------------------------------------
def film_from_line_integrals(
    p: np.ndarray,
    spacing_mm: tuple[float, float],
    config: FilmConfig | None = None,
    rng: np.random.Generator | None = None,
    *,
    magnification: float = 1.0,
) -> FilmImage:
    """Simulate a digital radiograph from line integrals (see the module docstring for the chain).

    Args:
        p: ``(rows, cols)`` line integrals ``∫ μ dl`` (dimensionless), row 0 at the top.
        spacing_mm: detector pixel pitch ``(row, col)`` in mm.
        config: the settings (default :class:`FilmConfig`).
        rng: source of all random draws (default ``numpy.random.default_rng()``).
        magnification: ``SDD / SOD`` of the imaged object (e.g. ``geometry.magnification``);
            the focal-spot blur at the detector is ``focal_spot.size_mm * (magnification - 1)``,
            so 1 means no focal-spot blur.

    Returns:
        The :class:`FilmImage`.
    """
    config = config or FilmConfig()
    rng = rng if rng is not None else np.random.default_rng()
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.size == 0:
        raise InputError(None, f"line integrals must be a non-empty 2D image, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise InputError(None, "line integrals contain NaN or infinite values")
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != 2 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(None, f"spacing_mm must be two positive numbers (row, col), got {spacing_mm!r}")
    if not (math.isfinite(magnification) and magnification >= 1.0):
        raise InputError(None, f"magnification must be >= 1, got {magnification!r}")
    shape = p.shape
    exposure = config.exposure

    # 1. exposure: detected quanta and gain of the unattenuated beam at the centre
    n0 = exposure.quantum_efficiency * exposure.fluence_per_uGy_mm2 * exposure.detector_air_kerma_uGy * spacing[0] * spacing[1]
    gain = exposure.adu_per_uGy * exposure.detector_air_kerma_uGy
    adu_per_quantum = gain / n0

    # 2.-3. incident intensity: heel effect and collimated field
    incident = np.full((1, 1), n0)
    if config.heel is not None:
        incident = incident * heel_profile(shape, config.heel)
    field_mask = np.ones(shape, dtype=bool)
    soft = None
    if config.collimation is not None:
        soft, field_mask = collimation_profile(shape, spacing, config.collimation)
        incident = incident * soft
    primary = incident * np.exp(-p)
    primary = np.broadcast_to(primary, shape).astype(np.float64, copy=True)

    # 4. focal-spot blur of the patient image
    if config.focal_spot is not None and config.focal_spot.size_mm > 0 and magnification > 1.0:
        blur_mm = config.focal_spot.size_mm * (magnification - 1.0)
        primary = gaussian_blur(primary, _fwhm_to_sigma_px(blur_mm, spacing))

    # 5. scatter: broad low-pass of the primary, total fraction = SPR, confined to the field
    scatter = np.zeros(shape)
    if config.scatter is not None and config.scatter.scatter_to_primary > 0:
        scatter = gaussian_blur(primary, _fwhm_to_sigma_px(config.scatter.fwhm_mm, spacing))
        if soft is not None:
            scatter *= soft
        total = scatter.sum()
        if total > 0:
            scatter *= config.scatter.scatter_to_primary * primary.sum() / total
    expected = np.maximum(primary + scatter, 0.0)  # FFT round-off can leave -1e-12 near zero

    # 6. labels: the lead marker attenuates the beam; text is burned in at encoding
    marker_mask, annotation_mask = _label_masks(shape, spacing, config.labels, config.collimation)
    if marker_mask.any():
        expected[marker_mask] *= config.labels.marker_transmission
        scatter[marker_mask] *= config.labels.marker_transmission

    # 7. quantum noise, detector blur, electronic noise
    noise = config.noise
    quanta = rng.poisson(expected).astype(np.float64) if noise is not None and noise.poisson else expected.copy()
    if config.detector_blur is not None and config.detector_blur.fwhm_mm > 0:
        quanta = gaussian_blur(quanta, _fwhm_to_sigma_px(config.detector_blur.fwhm_mm, spacing))
    signal = exposure.dark_offset_adu + adu_per_quantum * quanta
    if noise is not None and noise.electronic_adu > 0:
        signal += rng.normal(0.0, noise.electronic_adu, shape)

    # reference region for automatic windowing and the exposure index
    reference = field_mask & ~marker_mask & ~annotation_mask
    if not reference.any():
        reference = ~annotation_mask if (~annotation_mask).any() else np.ones(shape, dtype=bool)
    kerma = (signal - exposure.dark_offset_adu) / exposure.adu_per_uGy
    attenuated = reference & (kerma < 0.8 * exposure.detector_air_kerma_uGy)
    ei_region = attenuated if attenuated.sum() >= max(1, reference.sum() // 100) else reference
    exposure_index = float(100.0 * max(np.median(kerma[ei_region]), 0.0))

    # 8. encoding
    stored, display, encoding, saturated = _encode(signal, kerma, gain, adu_per_quantum, exposure.dark_offset_adu,
                                                   exposure.adu_per_uGy, reference, annotation_mask, config.encoding)
    return FilmImage(
        stored=stored, display=display, signal_adu=signal, expected_quanta=expected, scatter_quanta=scatter,
        field_mask=field_mask, marker_mask=marker_mask, annotation_mask=annotation_mask, spacing_mm=spacing,
        magnification=float(magnification), n0_quanta=float(n0), gain_adu=float(gain),
        dark_offset_adu=float(exposure.dark_offset_adu), exposure_index=exposure_index,
        saturated_fraction=saturated, encoding=encoding, config=config,
    )


def _encode(
    signal: np.ndarray, kerma: np.ndarray, gain: float, adu_per_quantum: float, offset: float,
    adu_per_uGy: float, reference: np.ndarray, annotation: np.ndarray, enc: EncodingConfig,
) -> tuple[np.ndarray, np.ndarray, FilmEncoding, float]:
    """Stored values, the [0, 1] bright = dense display image, the encoding and the clipped fraction.

    Signals at or below the dark offset are clamped to half a quantum before any logarithm.
    """
    top = enc.max_value
    kerma_floor = 0.5 * adu_per_quantum / adu_per_uGy  # µGy of half a detected quantum
    # display processing: -log signal, normalised to the field's percentile range, gamma
    log_signal = -np.log(np.maximum(signal - offset, 0.5 * adu_per_quantum) / gain)
    lo, hi = np.percentile(log_signal[reference], enc.display_percentiles)
    if not hi > lo:
        hi = lo + 1.0
    v = np.clip((log_signal - lo) / (hi - lo), 0.0, 1.0)
    if enc.gamma != 1.0:
        v = v**enc.gamma
    dense_up = np.rint(v * top)  # MONOCHROME2 presentation values, higher = denser
    voi_lo, voi_hi = np.percentile(dense_up[reference], enc.voi_percentiles)
    center, width = _window_from_range(float(voi_lo), float(voi_hi))
    display = dicom_window(dense_up, center, width)
    display[annotation] = 1.0

    if enc.intent == "presentation":
        if enc.photometric == "MONOCHROME2":
            stored, sign = dense_up, -1
        else:
            stored, sign = top - dense_up, +1
            center, width = _window_from_range(top - float(voi_hi), top - float(voi_lo))
        encoding = FilmEncoding("FOR PRESENTATION", "LOG", sign, enc.photometric, enc.bits_stored,
                                round(center, 4), round(width, 4))
        saturated = 0.0
    else:
        if enc.relationship == "LIN":
            raw = np.rint(signal)
        else:
            per_decade = enc.log_counts_per_decade or (top + 1) / 4.0
            raw = np.rint((top + 1) / 2.0 + per_decade * np.log10(np.maximum(kerma, kerma_floor)))
        clipped = (raw < 0) | (raw > top)
        saturated = float(clipped[reference].mean())
        stored = np.clip(raw, 0, top)
        encoding = FilmEncoding("FOR PROCESSING", enc.relationship, +1, enc.photometric, enc.bits_stored)
    stored = stored.astype(np.uint16)
    stored[annotation] = encoding.white_value
    return stored, display.astype(np.float32), encoding, saturated


__all__ = [
    "CollimationConfig",
    "DetectorBlurConfig",
    "EncodingConfig",
    "ExposureConfig",
    "FilmConfig",
    "FilmEncoding",
    "FilmImage",
    "FocalSpotConfig",
    "HeelConfig",
    "LabelConfig",
    "NoiseConfig",
    "ScatterConfig",
    "collimation_profile",
    "dicom_window",
    "film_from_line_integrals",
    "gaussian_blur",
    "heel_profile",
]
