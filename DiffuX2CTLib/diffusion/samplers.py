"""Reverse-process samplers (DDPM, DDIM, DPM-Solver++ 2M) on top of diffusers' schedulers.

``sample(model, shape, config, sampler=..., steps=...)`` draws ``x_T ~ N(0, I)`` and runs the
chosen diffusers scheduler with the network ``model(x_t, t)`` (the caller closes over the
condition). The schedulers are configured from the :class:`DiffusionConfig` the network was
trained with: same betas (hence bit-identical ``alphas_cumprod``, see :mod:`.schedule`), same
prediction type.

Decisions:

* Timestep grid ("trailing", Lin et al. 2024, "Common diffusion noise schedules and sample steps
  are flawed", table 2): the first model evaluation is always at ``t = T - 1``, where ``x_T`` really
  is almost pure noise, and the grid thins out towards ``t = 0``. diffusers' default "leading" /
  "linspace" spacings start at e.g. ``t = 980`` (50 steps) or ``t = 900`` (10 steps), where the
  cosine schedule still keeps a visible fraction of the signal, so starting there from pure noise
  biases the samples. The grid is computed here with integer arithmetic,
  ``t_k = T - 1 - round(k T / n)``, and handed to the scheduler as custom timesteps (diffusers'
  own "trailing" uses ``np.arange`` with a float step, which for some ``n`` yields ``n + 1``
  steps ending at ``t = -1``). diffusers' DDIM always steps from ``t`` to ``t - T // n``, so the
  DDIM grid uses that integer stride, ``t_k = T - 1 - k (T // n)``: identical to the above when
  ``n`` divides ``T``, and still consistent with the scheduler when it does not.
* Final step: every sampler ends on the clean estimate. DDPM and DPM-Solver++ step to
  ``abar = 1`` by construction; for DDIM (whose last grid point need not be ``T // n``) the
  output is the last step's ``pred_original_sample``, which equals the diffusers output when the
  last step lands on ``abar = 1``.
* Clipping (``config.clip_sample``): the x0 estimate is clamped to ``[-1, 1]`` at every step.
  DDPM/DDIM: the schedulers' ``clip_sample``; DDIM then also uses
  ``use_clipped_model_output=True`` (the noise is re-derived from the clamped x0, as in GLIDE /
  improved-diffusion, so ``x_prev`` stays consistent with ``x_t``). DPM-Solver++ has no ``clip_sample``; its documented equivalent
  is ``thresholding=True, sample_max_value=1.0`` (dynamic thresholding with the threshold pinned
  to 1 *is* a clamp). The scheduler subclass below applies that clamp directly instead of
  through ``torch.quantile``, which is slow on volumes and refuses more than 2**24 voxels.
* v-prediction is passed through as diffusers' ``prediction_type="v_prediction"``; epsilon as
  ``"epsilon"``. The sampling loop itself never converts.
* DPM-Solver++ uses ``algorithm_type="dpmsolver++", solver_order=2`` (multistep "2M": one model
  evaluation per step); ``"dpmsolver++-sde"`` is its stochastic variant (diffusers'
  ``"sde-dpmsolver++"``, the second-order multistep solver of the diffusion SDE, Lu et al.
  2022), which like DDPM injects fresh noise at every step and so corrects the network's errors
  instead of integrating them; both use ``final_sigmas_type="zero"`` and no lambda clipping, so that it uses
  exactly the same ``n`` timesteps as the others. With the cosine schedule and an epsilon
  network the first step (from ``abar_{T-1}`` ~ 1e-9) relies on x0 clipping; keep
  ``clip_sample=True`` or train with v-prediction.
"""

from __future__ import annotations

import functools
import math
import operator
import warnings
from typing import Callable

import torch

from ..errors import CancelledError, DiffuX2CTError, InputError
from .config import SAMPLERS, DiffusionConfig


Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --- argument checks and timestep grids ----------------------------------------------------
def _check_config(schedule_config: DiffusionConfig | None) -> DiffusionConfig:
    if schedule_config is None:
        return DiffusionConfig()
    if not isinstance(schedule_config, DiffusionConfig):
        raise InputError(None, f"schedule_config must be a DiffusionConfig, got {type(schedule_config).__name__}")
    return schedule_config


def _check_sampler(sampler: str) -> str:
    if not isinstance(sampler, str) or sampler.lower() not in SAMPLERS:
        raise InputError(None, f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return sampler.lower()


def _check_steps(steps: int, num_train_timesteps: int) -> int:
    try:
        if isinstance(steps, bool):
            raise TypeError
        steps = operator.index(steps)  # ints and numpy integers, not floats
    except TypeError:
        raise InputError(None, f"steps must be an integer, got {steps!r}") from None
    if not 1 <= steps <= num_train_timesteps:
        raise InputError(None, f"steps must be between 1 and {num_train_timesteps} (the training timesteps), got {steps}")
    return steps


def sampling_timesteps(sampler: str, steps: int, schedule_config: DiffusionConfig | None = None) -> list[int]:
    """The timesteps at which ``sample`` evaluates the model, in order (first is ``T - 1``).

    DDPM and DPM-Solver++: ``T - 1 - round(k T / steps)``; DDIM: ``T - 1 - k (T // steps)``,
    for ``k = 0 .. steps - 1`` (see the module docstring).
    """
    config = _check_config(schedule_config)
    sampler = _check_sampler(sampler)
    n = _check_steps(steps, config.num_train_timesteps)
    T = config.num_train_timesteps
    if sampler == "ddim":  # the DPM-Solver++ variants share the DDPM grid
        stride = T // n
        return [T - 1 - k * stride for k in range(n)]
    return [T - 1 - (2 * k * T + n) // (2 * n) for k in range(n)]


def count_model_evaluations(sampler: str, steps: int, schedule_config: DiffusionConfig | None = None) -> int:
    """Network evaluations ``sample`` makes: one per step for all three samplers (2M is multistep)."""
    return len(sampling_timesteps(sampler, steps, schedule_config))


# --- schedulers -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _dpm_class():
    from diffusers import DPMSolverMultistepScheduler

    class _ClampingDPMSolverMultistepScheduler(DPMSolverMultistepScheduler):
        """DPM-Solver++ whose ``thresholding`` (configured with ``sample_max_value=1``) is a clamp.

        With ``sample_max_value=1`` diffusers' dynamic threshold ``s`` is clamped to ``[1, 1]``, so
        ``_threshold_sample`` reduces to ``clamp(x0, -1, 1)``; this computes it without the
        per-sample ``torch.quantile`` (a sort of the whole volume, limited to 2**24 elements).
        """

        def _threshold_sample(self, sample: torch.Tensor) -> torch.Tensor:
            limit = float(self.config.sample_max_value)
            return sample.clamp(-limit, limit)

    return _ClampingDPMSolverMultistepScheduler


def make_scheduler(sampler: str, steps: int, schedule_config: DiffusionConfig | None = None, device=None):
    """A diffusers scheduler configured from ``schedule_config`` with its timesteps set.

    Returns ``DDPMScheduler``, ``DDIMScheduler`` or (a clamp-thresholding subclass of)
    ``DPMSolverMultistepScheduler``; ``scheduler.timesteps`` equals :func:`sampling_timesteps`.
    """
    config = _check_config(schedule_config)
    sampler = _check_sampler(sampler)
    timesteps = sampling_timesteps(sampler, steps, config)
    common = dict(
        num_train_timesteps=config.num_train_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        beta_schedule=config.diffusers_beta_schedule,
        prediction_type=config.prediction_type,
    )
    if sampler == "ddpm":
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler(
            **common, variance_type="fixed_small", clip_sample=config.clip_sample, clip_sample_range=1.0,
            thresholding=False, timestep_spacing="trailing",
        )
        scheduler.set_timesteps(timesteps=timesteps, device=device)
    elif sampler == "ddim":
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler(
            **common, clip_sample=config.clip_sample, clip_sample_range=1.0, thresholding=False,
            set_alpha_to_one=True, steps_offset=0, timestep_spacing="trailing",
        )
        scheduler.set_timesteps(len(timesteps), device=device)
        # DDIM steps from t to t - T // n; use the grid with exactly that stride.
        scheduler.timesteps = torch.tensor(timesteps, dtype=torch.int64, device=device)
    else:
        scheduler = _dpm_class()(
            **common, algorithm_type="sde-dpmsolver++" if sampler == "dpmsolver++-sde" else "dpmsolver++",
            solver_order=2, solver_type="midpoint",
            lower_order_final=True, final_sigmas_type="zero", thresholding=config.clip_sample,
            sample_max_value=1.0, timestep_spacing="trailing",
        )
        with warnings.catch_warnings():
            # diffusers calls np.array() on a torch tensor here; numpy 2 warns about its copy keyword.
            warnings.filterwarnings("ignore", message=r"__array__ implementation", category=DeprecationWarning)
            scheduler.set_timesteps(timesteps=timesteps, device=device)
    got = [int(v) for v in scheduler.timesteps]
    if got != timesteps:  # pragma: no cover - guards against a diffusers behaviour change
        raise DiffuX2CTError(f"{sampler} scheduler set timesteps {got[:5]}..., expected {timesteps[:5]}...")
    return scheduler


# --- the sampling loop ------------------------------------------------------------------------
def _default_device(model: Model, generator: torch.Generator | None, x_T: torch.Tensor | None) -> torch.device:
    if x_T is not None:
        return x_T.device
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        try:
            return next(iter(parameters())).device
        except (StopIteration, TypeError):
            pass
    return torch.device("cpu")


@torch.no_grad()
def sample(
    model: Model,
    shape: tuple[int, ...] | torch.Size,
    schedule_config: DiffusionConfig | None = None,
    *,
    sampler: str = "ddim",
    steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    x_T: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw samples from the reverse process.

    Args:
        model: ``model(x_t, t) -> output``, ``x_t`` of ``shape`` and ``dtype``, ``t`` a ``(B,)``
            int64 tensor; output: noise or v per ``schedule_config.prediction_type``, same shape.
        shape: ``(B, ...)``, e.g. ``(num_samples, 1, D, H, W)``; independent samples along B.
        schedule_config: the config the network was trained with (default config if ``None``).
        sampler: one of :data:`SAMPLERS`: ``"ddpm"`` (ancestral, posterior variance), ``"dpmsolver++-sde"``
            (2M SDE, stochastic; :data:`DEFAULT_SAMPLER`),
            ``"ddim"`` (``eta`` = 0 deterministic, 1 = DDPM-like) or ``"dpmsolver++"`` (2M).
        steps: model evaluations, ``1 .. T`` (:func:`count_model_evaluations`).
        eta: DDIM noise scale in ``[0, 1]``; must be 0 for the other samplers.
        generator: makes ``x_T`` and the sampler noise reproducible.
        device: where to sample; default: ``x_T``'s device, else the model's first parameter's
            device, else CPU.
        dtype: dtype of ``x_t`` fed to the model and of the result.
        progress: called as ``progress(i, n)`` after step ``i`` of ``n`` (1-based).
        cancel: polled before every model evaluation; when it returns true,
            :class:`CancelledError` is raised and the model is not called again.
        x_T: the starting noise (shape ``shape``) instead of drawing it.

    Returns:
        The samples, ``shape`` and ``dtype`` on ``device``: the final x0 estimate, hence within
        ``[-1, 1]`` when ``clip_sample`` is set.
    """
    from diffusers.utils.torch_utils import randn_tensor

    config = _check_config(schedule_config)
    sampler = _check_sampler(sampler)
    steps = _check_steps(steps, config.num_train_timesteps)
    try:
        eta = float(eta)
    except (TypeError, ValueError):
        raise InputError(None, f"eta must be a number, got {eta!r}") from None
    if not (math.isfinite(eta) and 0.0 <= eta <= 1.0):
        raise InputError(None, f"eta must be in [0, 1], got {eta}")
    if eta != 0.0 and sampler != "ddim":
        raise InputError(None, f"eta applies to the ddim sampler only (got eta={eta} with {sampler})")
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or shape[0] < 1 or min(shape) < 1:
        raise InputError(None, f"shape must be (B, ...) with positive sizes, got {shape}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InputError(None, f"dtype must be a floating-point torch dtype, got {dtype!r}")

    device = torch.device(device) if device is not None else _default_device(model, generator, x_T)
    scheduler = make_scheduler(sampler, steps, config, device=device)
    timesteps = [int(v) for v in scheduler.timesteps]
    n = len(timesteps)

    if x_T is None:
        x = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    else:
        if tuple(x_T.shape) != shape:
            raise InputError(None, f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
        x = x_T.to(device=device, dtype=dtype)
    x = x * scheduler.init_noise_sigma  # 1.0 for these schedulers
    # diffusers' DDPM step reads shape[1]; give (B,) samples a channel axis inside the loop.
    work_shape = shape if len(shape) >= 2 else (shape[0], 1)
    x = x.reshape(work_shape)

    batch = shape[0]
    for i, t in enumerate(timesteps, start=1):
        if cancel is not None and cancel():
            raise CancelledError(f"sampling cancelled before step {i} of {n}")
        t_batch = torch.full((batch,), t, dtype=torch.int64, device=device)
        output = model(scheduler.scale_model_input(x, t).reshape(shape), t_batch)
        if not isinstance(output, torch.Tensor) or tuple(output.shape) != shape:
            got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise DiffuX2CTError(f"the model returned {got} for an input of shape {shape}")
        output = output.to(dtype).reshape(work_shape)
        if sampler == "ddpm":
            x = scheduler.step(output, t, x, generator=generator).prev_sample
        elif sampler == "ddim":
            result = scheduler.step(output, t, x, eta=eta, use_clipped_model_output=config.clip_sample, generator=generator)
            x = result.pred_original_sample if i == n else result.prev_sample
        else:
            x = scheduler.step(output, t, x, generator=generator).prev_sample
        x = x.to(dtype)
        if progress is not None:
            progress(i, n)
    return x.reshape(shape)
