"""Gaussian diffusion for DiffuX2CT: schedule, training loss and samplers, separate from the network.

The network is any callable ``model(x_t, t) -> output`` (``x_t`` of shape ``(B, 1, D, H, W)``,
``t`` a ``(B,)`` int64 tensor; the caller closes over the radiograph condition).

:class:`DiffusionConfig` is importable without torch; the other names load torch (and, for the
samplers, diffusers) on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import BETA_SCHEDULES, DEFAULT_SAMPLER, PREDICTION_TYPES, SAMPLERS, DiffusionConfig

_LAZY = {
    "NoiseSchedule": ".schedule",
    "make_betas": ".schedule",
    "LossTerms": ".losses",
    "diffusion_loss": ".losses",
    "sample": ".samplers",
    "make_scheduler": ".samplers",
    "sampling_timesteps": ".samplers",
    "count_model_evaluations": ".samplers",
}

__all__ = ["BETA_SCHEDULES", "DEFAULT_SAMPLER", "PREDICTION_TYPES", "SAMPLERS", "DiffusionConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
