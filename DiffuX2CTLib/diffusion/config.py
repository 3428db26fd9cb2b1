"""Hyper-parameters of the Gaussian diffusion (noise schedule, prediction target, loss weight).

Plain data, no torch import: the config is saved next to each checkpoint as JSON and must load
without building anything. A network trained with one config must be sampled with the same one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import InputError

BETA_SCHEDULES = ("linear", "cosine")
LOSS_WEIGHTINGS = ("uniform", "min_snr")
#: Reverse-process samplers (see :mod:`.samplers`); listed here so that CLIs can offer them
#: without importing torch.
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpmsolver++", "dpmsolver++-sde")
#: The sampler the worker, the demo and the evaluation use unless told otherwise. Measured on the
#: demo model (benchmarks/RESULTS.md), stochastic samplers reconstruct better than deterministic
#: ones at the same cost: 3D SSIM 0.642 with this one at 25 steps, 0.624 with the DPM-Solver++
#: ODE, 0.656 with DDPM at 1000 steps.
DEFAULT_SAMPLER = "dpmsolver++-sde"
PREDICTION_TYPES = ("epsilon", "v_prediction")

# Names diffusers uses for the same schedules (``DDPMScheduler(beta_schedule=...)``).
DIFFUSERS_BETA_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
_ALIASES = {"squaredcos_cap_v2": "cosine"}


@dataclass(frozen=True)
class DiffusionConfig:
    """Discrete-time DDPM with ``T`` training steps.

    Attributes:
        num_train_timesteps: T; training timesteps are ``0 .. T-1`` (0 is the least noisy).
        beta_schedule: ``"linear"`` (Ho et al. 2020: betas linear from ``beta_start`` to
            ``beta_end``) or ``"cosine"`` (Nichol & Dhariwal 2021, betas capped at 0.999;
            diffusers' ``"squaredcos_cap_v2"``, accepted here as an alias).
        prediction_type: what the network predicts: ``"epsilon"`` (the noise) or
            ``"v_prediction"`` (``v = sqrt(abar) eps - sqrt(1 - abar) x0``, Salimans & Ho 2022).
        proj_loss_weight: lambda in ``L = L_simple + lambda * L_proj``; ``None`` means ``1 / T``,
            the paper's weighting.
        loss_weighting: ``"uniform"`` (the plain DDPM ``L_simple``, the paper's) or ``"min_snr"``
            (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy": each
            sample's squared error is weighted so that the loss equals ``min(SNR_t, gamma)`` times
            the x0 error, which stops the low-noise steps from dominating and speeds up training).
        min_snr_gamma: gamma of ``"min_snr"`` (5 in the paper).
        clip_sample: clamp the predicted x0 to ``[-1, 1]`` at every sampling step (the data are
            normalised to that range).
        beta_start, beta_end: end points of the linear schedule (unused by the cosine one). As in
            diffusers they do not scale with T: with T much below 1000 the linear schedule no
            longer ends in (almost) pure noise, so raise them (e.g. by ``1000 / T``, as
            improved-diffusion does) or use the cosine schedule.
    """

    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    prediction_type: str = "epsilon"
    proj_loss_weight: float | None = None
    loss_weighting: str = "uniform"
    min_snr_gamma: float = 5.0
    clip_sample: bool = True
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self) -> None:
        schedule = _ALIASES.get(self.beta_schedule, self.beta_schedule)
        object.__setattr__(self, "beta_schedule", schedule)
        for name in ("beta_start", "beta_end", "min_snr_gamma"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
        if isinstance(self.proj_loss_weight, int) and not isinstance(self.proj_loss_weight, bool):
            object.__setattr__(self, "proj_loss_weight", float(self.proj_loss_weight))
        self._validate()

    def _validate(self) -> None:
        def need(cond: bool, problem: str) -> None:
            if not cond:
                raise InputError(None, f"diffusion config: {problem}")

        t = self.num_train_timesteps
        need(isinstance(t, int) and not isinstance(t, bool) and t >= 1,
             f"num_train_timesteps must be a positive integer, got {t!r}")
        need(self.beta_schedule in BETA_SCHEDULES,
             f"beta_schedule must be one of {list(BETA_SCHEDULES)}, got {self.beta_schedule!r}")
        need(self.prediction_type in PREDICTION_TYPES,
             f"prediction_type must be one of {list(PREDICTION_TYPES)}, got {self.prediction_type!r}")
        w = self.proj_loss_weight
        need(w is None or (isinstance(w, float) and math.isfinite(w) and w >= 0.0),
             f"proj_loss_weight must be null or a finite number >= 0, got {w!r}")
        need(isinstance(self.clip_sample, bool), f"clip_sample must be true or false, got {self.clip_sample!r}")
        need(self.loss_weighting in LOSS_WEIGHTINGS,
             f"loss_weighting must be one of {list(LOSS_WEIGHTINGS)}, got {self.loss_weighting!r}")
        need(isinstance(self.min_snr_gamma, float) and math.isfinite(self.min_snr_gamma) and self.min_snr_gamma > 0,
             f"min_snr_gamma must be a positive number, got {self.min_snr_gamma!r}")
        for name in ("beta_start", "beta_end"):
            value = getattr(self, name)
            need(isinstance(value, float) and 0.0 < value < 1.0, f"{name} must be a number in (0, 1), got {value!r}")
        need(self.beta_start <= self.beta_end, "beta_start must not exceed beta_end")

    # --- derived ---------------------------------------------------------------------
    @property
    def proj_weight(self) -> float:
        """The effective lambda: ``proj_loss_weight``, or ``1 / T`` when it is ``None``."""
        return 1.0 / self.num_train_timesteps if self.proj_loss_weight is None else self.proj_loss_weight

    @property
    def diffusers_beta_schedule(self) -> str:
        """The ``beta_schedule`` string diffusers' schedulers use for this schedule."""
        return DIFFUSERS_BETA_SCHEDULE[self.beta_schedule]

    def replace(self, **changes: Any) -> "DiffusionConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    # --- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of all fields."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DiffusionConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an :class:`InputError`, missing keys default."""
        if not isinstance(data, Mapping):
            raise InputError(None, f"diffusion config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(None, f"unknown diffusion config fields {sorted(map(str, unknown))}")
        return cls(**dict(data))
