"""What a training step optimises, and how a trained network turns radiographs into volumes.

Two objectives share the network (:class:`~DiffuX2CTLib.network.DiffuX2CTNet`):

* ``diffusion`` -- DiffuX2CT's ``L = L_simple + lambda * L_proj`` (``lambda = 1/T`` in the
  paper) through :func:`DiffuX2CTLib.diffusion.diffusion_loss`, with the shared DRR projector;
* ``regression`` -- the same network used as a direct regressor (``x_t = 0`` and ``t = T - 1``
  fixed), trained with an L1 loss on the volume: the learning benchmark's baseline.

Randomness is per sample: the timestep and noise of a sample come from a generator seeded with
that sample's own seed (see :func:`sample_seed`), so a step gives the same result whatever the
number of processes it is split over, and a resumed run draws exactly what the original would.
Volumes are in the network range [-1, 1] (:class:`~DiffuX2CTLib.io.intensity.CTIntensity`),
shape ``(B, 1, D, H, W)``; radiographs ``(B, V, rows, cols)`` in [-1, 1].
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from DiffuX2CTLib.diffusion import DEFAULT_SAMPLER, DiffusionConfig, LossTerms, NoiseSchedule, diffusion_loss, sample
from DiffuX2CTLib.errors import InputError
from DiffuX2CTLib.io.intensity import CTIntensity

OBJECTIVES = ("diffusion", "regression")


def sample_seed(*parts: int | str) -> int:
    """A 63-bit seed derived from ``parts`` (e.g. run seed, step, case index) by SHA-256."""
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def draw_t_and_noise(seeds: Sequence[int], shape: tuple[int, ...], num_timesteps: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample timesteps ``(B,)`` and Gaussian noise ``(B, *shape)``, sample ``i`` from ``seeds[i]``."""
    ts, noises = [], []
    for seed in seeds:
        g = torch.Generator(device=device).manual_seed(int(seed))
        ts.append(torch.randint(0, num_timesteps, (1,), generator=g, device=device))
        noises.append(torch.randn(shape, generator=g, device=device))
    return torch.cat(ts), torch.stack(noises)


@dataclass
class Objective:
    """The training loss of one objective.

    Attributes:
        kind: ``"diffusion"`` or ``"regression"``.
        schedule: the noise schedule (its config gives T, the prediction type and lambda).
        intensity: HU <-> [-1, 1] mapping (the projector takes HU).
        projector: the differentiable DRR projector of the training geometry, or ``None`` to skip
            ``L_proj`` (it is skipped anyway when lambda is 0).
    """

    kind: str
    schedule: NoiseSchedule
    intensity: CTIntensity
    projector: torch.nn.Module | None = None

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVES:
            raise InputError(None, f"objective must be one of {list(OBJECTIVES)}, got {self.kind!r}")

    @property
    def uses_projection(self) -> bool:
        return self.kind == "diffusion" and self.projector is not None and self.schedule.config.proj_weight > 0

    def to_hu(self, x: torch.Tensor) -> torch.Tensor:
        """Network range -> HU without clipping (so L_proj has gradients everywhere)."""
        return self.intensity.denormalize(x, clip=False)

    def __call__(self, model: torch.nn.Module, x0: torch.Tensor, xrays: torch.Tensor,
                 seeds: Sequence[int]) -> LossTerms:
        """Loss of a batch: clean volumes ``x0`` (B, 1, D, H, W), their radiographs, one seed per sample."""
        if len(seeds) != x0.shape[0]:
            raise InputError(None, f"{len(seeds)} seeds for a batch of {x0.shape[0]}")
        condition = model.encode_condition(xrays)
        if self.kind == "regression":
            t = torch.full((x0.shape[0],), self.schedule.num_timesteps - 1, dtype=torch.long, device=x0.device)
            prediction = model(torch.zeros_like(x0), t, condition)
            with torch.autocast(device_type=x0.device.type, enabled=False):
                l1 = F.l1_loss(prediction.float(), x0.float())
            zero = torch.zeros((), device=x0.device)
            return LossTerms(total=l1, simple=l1, proj=zero)
        t, noise = draw_t_and_noise(seeds, tuple(x0.shape[1:]), self.schedule.num_timesteps, x0.device)
        return diffusion_loss(
            lambda x_t, tt: model(x_t, tt, condition), x0, self.schedule,
            project=self.projector if self.uses_projection else None,
            to_projectable=self.to_hu, t=t, noise=noise.to(x0.dtype),
        )


@torch.no_grad()
def predict_volumes(
    model: torch.nn.Module,
    xrays: torch.Tensor,
    objective: str,
    diffusion: DiffusionConfig,
    *,
    sampler: str = DEFAULT_SAMPLER,
    steps: int = 25,
    seed: int = 0,
    num_samples: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Volumes in [-1, 1] for radiographs ``(B, V, rows, cols)``: ``(B, num_samples, D, H, W)``.

    ``diffusion``: ``num_samples`` independent samples per case with the chosen sampler (all
    cases and samples in one batch, noise from ``seed``); ``regression``: the single prediction
    (repeated ``num_samples`` times). The model should be in eval mode (EMA weights).
    """
    b = xrays.shape[0]
    device = xrays.device
    condition = model.encode_condition(xrays)
    size = tuple(condition.shape[2:])
    if objective == "regression":
        t = torch.full((b,), diffusion.num_train_timesteps - 1, dtype=torch.long, device=device)
        out = model(torch.zeros((b, 1, *size), device=device), t, condition).float().clamp(-1, 1)
        return out[:, 0:1].expand(b, num_samples, *size).contiguous()
    if objective != "diffusion":
        raise InputError(None, f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    cond = condition.repeat_interleave(num_samples, dim=0)  # (b * S, F, D, H, W), case-major
    generator = torch.Generator(device=device).manual_seed(int(seed))
    x0 = sample(lambda x_t, t: model(x_t, t, cond).float(), (b * num_samples, 1, *size), diffusion,
                sampler=sampler, steps=steps, generator=generator, device=device, progress=progress)
    return x0.float().clamp(-1, 1).reshape(b, num_samples, *size)


__all__ = ["OBJECTIVES", "Objective", "draw_t_and_noise", "predict_volumes", "sample_seed"]
