"""The forward (noising) process and the conversions between x0, noise and v.

Notation: ``abar_t = prod_{s<=t} (1 - beta_s)``, ``a_t = sqrt(abar_t)``, ``b_t = sqrt(1 - abar_t)``,
``x_t = a_t x0 + b_t eps``, ``v_t = a_t eps - b_t x0``. Timesteps are integers ``0 .. T-1``.

The betas and ``abar`` are computed with exactly the operations diffusers' schedulers use
(float32 ``linspace`` / capped cosine, float32 ``cumprod``), then stored as float64: training
(this module) and sampling (diffusers' schedulers, see :mod:`.samplers`) therefore see
bit-identical noise levels. Derived coefficients (square roots) are computed in float64 and cast
to the dtype of the tensors they multiply.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError
from .config import DiffusionConfig


def _cosine_betas(num_timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule, ``abar(s) = cos^2((s + 0.008) / 1.008 * pi / 2)``.

    Same arithmetic as diffusers' ``betas_for_alpha_bar`` (Python floats, then float32).
    """

    def abar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - abar((i + 1) / num_timesteps) / abar(i / num_timesteps), max_beta) for i in range(num_timesteps)]
    return torch.tensor(betas, dtype=torch.float32)


def make_betas(config: DiffusionConfig) -> torch.Tensor:
    """The T betas of ``config`` as float32, exactly as diffusers builds them."""
    if config.beta_schedule == "linear":
        return torch.linspace(config.beta_start, config.beta_end, config.num_train_timesteps, dtype=torch.float32)
    if config.beta_schedule == "cosine":
        return _cosine_betas(config.num_train_timesteps)
    raise InputError(None, f"unknown beta_schedule {config.beta_schedule!r}")  # unreachable: config validates


class NoiseSchedule:
    """Forward process and parameterisation conversions for one :class:`DiffusionConfig`.

    All tensor methods accept any shape ``(B, ...)`` (e.g. ``(B, 1, D, H, W)``) with ``t`` a
    ``(B,)`` integer tensor (or a Python int / 0-d tensor, broadcast to the batch); the result
    has the promoted dtype of the tensor inputs and lives on their device.

    Attributes:
        config: the :class:`DiffusionConfig`.
        num_timesteps: T.
        betas, alphas, alphas_cumprod, sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod:
            float64 CPU tensors of shape ``(T,)``.
    """

    def __init__(self, config: DiffusionConfig | None = None) -> None:
        self.config = DiffusionConfig() if config is None else config
        if not isinstance(self.config, DiffusionConfig):
            raise InputError(None, f"NoiseSchedule needs a DiffusionConfig, got {type(config).__name__}")
        betas32 = make_betas(self.config)
        alphas32 = 1.0 - betas32
        self.num_timesteps = self.config.num_train_timesteps
        self.betas = betas32.double()
        self.alphas = alphas32.double()
        self.alphas_cumprod = torch.cumprod(alphas32, dim=0).double()  # == diffusers' alphas_cumprod
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self._cache: dict[tuple[str, torch.device], torch.Tensor] = {}

    @property
    def prediction_type(self) -> str:
        return self.config.prediction_type

    def __repr__(self) -> str:
        c = self.config
        return f"NoiseSchedule(T={c.num_train_timesteps}, beta_schedule={c.beta_schedule!r}, prediction_type={c.prediction_type!r})"

    # --- helpers ---------------------------------------------------------------------
    def _coef(self, name: str, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """``self.<name>[t]`` shaped ``(B, 1, 1, ...)`` to broadcast against ``like``, in its dtype."""
        device = like.device
        key = (name, device)
        table = self._cache.get(key)
        if table is None:
            table = getattr(self, name)
            # float64 where the device has it (MPS does not).
            table = table.to(device=device, dtype=torch.float32 if device.type == "mps" else torch.float64)
            self._cache[key] = table
        t = torch.as_tensor(t)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise InputError(None, f"timesteps must be an integer tensor, got dtype {t.dtype}")
        batch = like.shape[0] if like.ndim else 1
        if t.ndim == 0:
            t = t.expand(batch)
        if t.ndim != 1 or t.shape[0] != batch:
            raise InputError(None, f"timesteps must have shape ({batch},), got {tuple(t.shape)}")
        # Range check only where it costs no device synchronisation.
        if t.device.type == "cpu" and t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_timesteps):
            raise InputError(None, f"timesteps must be in [0, {self.num_timesteps - 1}], got {t.tolist()}")
        values = table[t.to(device=device, dtype=torch.long)].to(like.dtype)
        return values.reshape(values.shape[0], *([1] * max(like.ndim - 1, 0)))

    @staticmethod
    def _promote(*tensors: torch.Tensor) -> torch.Tensor:
        dtype = tensors[0].dtype
        for other in tensors[1:]:
            dtype = torch.promote_types(dtype, other.dtype)
        return torch.empty((), dtype=dtype, device=tensors[0].device)

    # --- forward process -------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
        """Sample ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` (``noise`` ~ N(0, I), same shape)."""
        like = self._promote(x0, noise).expand(x0.shape)
        return self._coef("sqrt_alphas_cumprod", t, like) * x0 + self._coef("sqrt_one_minus_alphas_cumprod", t, like) * noise

    def loss_weight(self, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """Per-sample weight ``(B, 1, ...)`` of the squared error on the training target.

        ``uniform``: 1. ``min_snr`` (Hang et al. 2023) with ``SNR_t = abar_t / (1 - abar_t)``:
        ``min(SNR, gamma) / SNR`` for an epsilon network and ``min(SNR, gamma) / (SNR + 1)`` for a
        v network, i.e. the loss becomes ``min(SNR_t, gamma) * |x0_hat - x0|^2`` in both cases.
        """
        if self.config.loss_weighting == "uniform":
            return torch.ones_like(self._coef("sqrt_alphas_cumprod", t, like))
        abar = self._coef("sqrt_alphas_cumprod", t, like) ** 2
        snr = abar / (1.0 - abar).clamp_min(1e-20)
        clipped = snr.clamp(max=self.config.min_snr_gamma)
        return clipped / snr.clamp_min(1e-20) if self.config.prediction_type == "epsilon" else clipped / (snr + 1.0)

    def v_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The v-prediction target ``v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0``."""
        like = self._promote(x0, noise).expand(x0.shape)
        return self._coef("sqrt_alphas_cumprod", t, like) * noise - self._coef("sqrt_one_minus_alphas_cumprod", t, like) * x0

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """What the network should output: ``noise`` (epsilon) or :meth:`v_target` (v_prediction)."""
        if self.config.prediction_type == "epsilon":
            return noise
        return self.v_target(x0, noise, t)

    # --- inverting the parameterisation ----------------------------------------------
    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor | int, model_output: torch.Tensor) -> torch.Tensor:
        """x0 implied by the network output.

        epsilon: ``(x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``;
        v_prediction: ``sqrt(abar_t) x_t - sqrt(1 - abar_t) v``.
        """
        like = self._promote(x_t, model_output).expand(x_t.shape)
        a = self._coef("sqrt_alphas_cumprod", t, like)
        b = self._coef("sqrt_one_minus_alphas_cumprod", t, like)
        if self.config.prediction_type == "epsilon":
            return (x_t - b * model_output) / a
        return a * x_t - b * model_output

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor | int, model_output: torch.Tensor) -> torch.Tensor:
        """Noise implied by the network output (epsilon: itself; v: ``sqrt(abar) v + sqrt(1-abar) x_t``)."""
        if self.config.prediction_type == "epsilon":
            return model_output
        like = self._promote(x_t, model_output).expand(x_t.shape)
        a = self._coef("sqrt_alphas_cumprod", t, like)
        b = self._coef("sqrt_one_minus_alphas_cumprod", t, like)
        return a * model_output + b * x_t

    def model_output_from_x0(self, x_t: torch.Tensor, t: torch.Tensor | int, x0: torch.Tensor) -> torch.Tensor:
        """The network output (epsilon or v) that corresponds to a given x0 at ``(x_t, t)``."""
        like = self._promote(x_t, x0).expand(x_t.shape)
        a = self._coef("sqrt_alphas_cumprod", t, like)
        b = self._coef("sqrt_one_minus_alphas_cumprod", t, like)
        eps = (x_t - a * x0) / b
        if self.config.prediction_type == "epsilon":
            return eps
        return a * eps - b * x0
