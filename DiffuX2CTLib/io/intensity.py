"""CT intensity conventions: HU <-> network range [-1, 1], and HU -> linear attenuation.

Every function takes a numpy array, a torch tensor or a Python number and returns the same
kind. Floating dtypes (float16/bfloat16/float32/float64) and the torch device are preserved;
integer or boolean inputs (e.g. int16 HU) are promoted to float32. torch is never imported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import InputError

#: Linear attenuation coefficient of liquid water (1/mm) used to turn HU into mu.
#: NIST X-Ray Mass Attenuation Coefficients (Hubbell & Seltzer, NIST SRD 126 / NISTIR 5632),
#: "Water, Liquid": mu/rho = 0.2059 cm^2/g at 60 keV and 0.1837 cm^2/g at 80 keV. Log-log
#: interpolation gives 0.1937 cm^2/g at 70 keV, a typical effective energy of a 120 kVp
#: beam; with rho = 1.000 g/cm^3 that is mu = 0.1937 /cm = 0.01937 /mm.
MU_WATER_PER_MM = 0.01937


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _as_float(x: Any) -> tuple[Any, bool]:
    """``(array_or_tensor, was_python_scalar)`` with a floating dtype (float32 if not floating)."""
    if _is_torch(x):
        return (x if x.is_floating_point() else x.float()), False
    scalar = isinstance(x, (int, float, bool)) and not isinstance(x, np.generic)
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64 if scalar else np.float32)
    return a, scalar


def _clip(x: Any, lo: float, hi: float) -> Any:
    return x.clamp(lo, hi) if _is_torch(x) else np.clip(x, lo, hi)


def _finish(x: Any, scalar: bool) -> Any:
    return float(x) if scalar else x


@dataclass(frozen=True)
class CTIntensity:
    """Linear map of the HU window ``[hu_min, hu_max]`` onto ``[-1, 1]`` (the network's range).

    Defaults ``[-1024, 2048]`` HU: -1024 is air as stored by CT scanners (the lowest value a
    12-bit scanner writes), and 2048 HU is above dense cortical bone (roughly 1000-2000 HU),
    so lungs, soft tissue and the whole skeleton of a chest or abdomen CT keep their contrast;
    only metal and concentrated contrast agent saturate. Water (0 HU) maps to -1/3.

    Attributes:
        hu_min: HU mapped to -1 (values below are clipped).
        hu_max: HU mapped to +1 (values above are clipped).
    """

    hu_min: float = -1024.0
    hu_max: float = 2048.0

    def __post_init__(self) -> None:
        lo, hi = float(self.hu_min), float(self.hu_max)
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise InputError(None, f"CT intensity window needs finite hu_min < hu_max, got [{lo}, {hi}]")
        object.__setattr__(self, "hu_min", lo)
        object.__setattr__(self, "hu_max", hi)

    @property
    def _half_width(self) -> float:
        return (self.hu_max - self.hu_min) / 2.0

    def normalize(self, hu: Any) -> Any:
        """HU -> [-1, 1]: clip to ``[hu_min, hu_max]``, then map linearly."""
        x, scalar = _as_float(hu)
        x = _clip(x, self.hu_min, self.hu_max)
        return _finish((x - self.hu_min) / self._half_width - 1.0, scalar)

    def denormalize(self, x: Any, clip: bool = True) -> Any:
        """[-1, 1] -> HU, the inverse of :meth:`normalize` on the window (up to float rounding).

        With ``clip`` (default) inputs are first clipped to [-1, 1], so a network output outside
        the range maps to the window's ends.
        """
        y, scalar = _as_float(x)
        if clip:
            y = _clip(y, -1.0, 1.0)
        return _finish((y + 1.0) * self._half_width + self.hu_min, scalar)

    def to_dict(self) -> dict[str, float]:
        return {"hu_min": self.hu_min, "hu_max": self.hu_max}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CTIntensity":
        unknown = set(data) - {"hu_min", "hu_max"}
        if unknown:
            raise InputError(None, f"unknown CT intensity fields {sorted(unknown)}")
        try:
            return cls(**{k: float(v) for k, v in data.items()})
        except (TypeError, ValueError) as exc:
            raise InputError(None, f"CT intensity fields must be numbers, got {dict(data)!r}") from exc


def _check_mu_water(mu_water_per_mm: float) -> float:
    mu = float(mu_water_per_mm)
    if not (math.isfinite(mu) and mu > 0):
        raise InputError(None, f"mu_water_per_mm must be a positive number, got {mu_water_per_mm!r}")
    return mu


def hu_to_mu(hu: Any, mu_water_per_mm: float = MU_WATER_PER_MM) -> Any:
    """Linear attenuation (1/mm) from HU: ``mu_water * (1 + HU / 1000)``, clipped at 0.

    Air (-1000 HU) and anything below gives 0; water (0 HU) gives ``mu_water_per_mm``.
    """
    mu_w = _check_mu_water(mu_water_per_mm)
    x, scalar = _as_float(hu)
    mu = (x / 1000.0 + 1.0) * mu_w
    mu = mu.clamp(min=0.0) if _is_torch(mu) else np.maximum(mu, mu.dtype.type(0))
    return _finish(mu, scalar)


def mu_to_hu(mu: Any, mu_water_per_mm: float = MU_WATER_PER_MM) -> Any:
    """HU from linear attenuation (1/mm): ``1000 * (mu / mu_water - 1)`` (inverse of :func:`hu_to_mu` above -1000 HU)."""
    mu_w = _check_mu_water(mu_water_per_mm)
    x, scalar = _as_float(mu)
    return _finish((x / mu_w - 1.0) * 1000.0, scalar)


__all__ = ["MU_WATER_PER_MM", "CTIntensity", "hu_to_mu", "mu_to_hu"]
