"""The DiffuX2CT training loss: ``L = L_simple + lambda * L_proj`` (paper: ``lambda = 1 / T``).

``L_simple`` is the usual DDPM mean squared error on the network's target (noise or v).
``L_proj`` is the projection loss: the x0 implied by the network output and the true x0 are both
projected into the two radiograph views (e.g. by the project's differentiable DRR projector) and
compared with a mean L1 distance, so the network is also told how wrong its volume looks from the
AP and lateral directions.

Shapes (B = batch, C = channels, V = views):

* ``x0``: ``(B, C, D, H, W)`` normalised volume (any ``(B, ...)`` works for ``L_simple``);
* ``model(x_t, t)``: ``x_t`` like ``x0``, ``t`` a ``(B,)`` int64 tensor -> output like ``x0``
  (the caller closes over the condition, e.g. ``lambda x, t: net(x, t, xrays)``);
* ``to_projectable(x)``: normalised volume -> what the projector takes (e.g. HU), same shape;
* ``project(v)``: ``(B, 1, D, H, W)`` -> ``(B, V, h, w)`` (any shape, as long as the two calls
  agree), differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import InputError
from .schedule import NoiseSchedule

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class LossTerms:
    """The loss and its parts, each a float32 0-d tensor.

    Attributes:
        total: ``simple + lambda * proj``; call ``total.backward()``.
        simple: MSE between the network output and its target (noise or v), weighted per sample
            when ``loss_weighting`` is ``min_snr``.
        proj: mean L1 between the projections of predicted and true x0 (0 without a projector).
    """

    total: torch.Tensor
    simple: torch.Tensor
    proj: torch.Tensor

    def detach(self) -> dict[str, float]:
        """The three terms as Python floats (for logging)."""
        return {"total": float(self.total.detach()), "simple": float(self.simple.detach()), "proj": float(self.proj.detach())}


def _device_of(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    return fallback if generator is None else torch.device(generator.device)


def diffusion_loss(
    model: Model,
    x0: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
    to_projectable: Callable[[torch.Tensor], torch.Tensor] | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> LossTerms:
    """One Monte-Carlo estimate of the DiffuX2CT loss for a batch of clean volumes.

    Args:
        model: ``model(x_t, t) -> output`` (noise or v per ``schedule.config.prediction_type``).
        x0: clean normalised volumes ``(B, C, D, H, W)``; may be low precision (bfloat16 ...).
        schedule: the :class:`NoiseSchedule` (its config gives the target and lambda).
        project: differentiable projector ``(B, 1, D, H, W) -> (B, V, h, w)``; ``None`` skips
            ``L_proj`` (it is then 0).
        to_projectable: maps the normalised volume to the projector's input (e.g. HU);
            identity when ``None``.
        t: ``(B,)`` integer timesteps; uniform on ``0 .. T-1`` when ``None``.
        noise: the Gaussian noise, like ``x0``; drawn when ``None``.
        generator: random generator for ``t`` and ``noise`` (their device is the generator's,
            then the values move to ``x0``'s device).

    Returns:
        :class:`LossTerms`. ``L_proj`` and the x0 estimate behind it are computed in float32
        with autocast disabled, whatever the dtype of ``x0`` and the model output:
        ``x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)`` (epsilon) or
        ``sqrt(abar_t) x_t - sqrt(1 - abar_t) v_hat`` (v). x0_hat is not clipped, so gradients
        reach every voxel; at large t the epsilon form amplifies errors by ``1 / sqrt(abar_t)``,
        which the small lambda keeps in check.
    """
    if not isinstance(x0, torch.Tensor) or x0.ndim < 1 or x0.shape[0] < 1:
        raise InputError(None, "x0 must be a tensor with a non-empty batch dimension")
    device = x0.device
    batch = x0.shape[0]
    rng_device = _device_of(generator, device)
    if t is None:
        t = torch.randint(0, schedule.num_timesteps, (batch,), generator=generator, device=rng_device).to(device)
    else:
        t = torch.as_tensor(t, device=device)
        if t.ndim == 0:
            t = t.expand(batch)
        t = t.long()
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=rng_device, dtype=x0.dtype).to(device)
    elif noise.shape != x0.shape:
        raise InputError(None, f"noise has shape {tuple(noise.shape)}, x0 {tuple(x0.shape)}")

    x_t = schedule.q_sample(x0, t, noise.to(x0.dtype))
    output = model(x_t, t)
    if output.shape != x0.shape:
        raise InputError(None, f"the model returned shape {tuple(output.shape)} for an input of shape {tuple(x0.shape)}")
    with torch.autocast(device_type=device.type, enabled=False):
        target = schedule.training_target(x0.float(), noise.float(), t)
        if schedule.config.loss_weighting == "uniform":
            simple = F.mse_loss(output.float(), target.detach())
        else:  # per-sample weights (min-SNR); the mean of the weighted squared errors
            weight = schedule.loss_weight(t, target).detach()
            simple = (weight * (output.float() - target.detach()) ** 2).mean()

    if project is None:
        proj = torch.zeros((), device=device, dtype=torch.float32)
    else:
        convert = (lambda v: v) if to_projectable is None else to_projectable
        with torch.autocast(device_type=device.type, enabled=False):
            x0_hat = schedule.predict_x0(x_t.float(), t, output.float())
            predicted = project(convert(x0_hat)).float()
            with torch.no_grad():
                reference = project(convert(x0.detach().float())).float()
            if predicted.shape != reference.shape:
                raise InputError(None, f"projections differ in shape: {tuple(predicted.shape)} vs {tuple(reference.shape)}")
            proj = F.l1_loss(predicted, reference)

    total = simple + schedule.config.proj_weight * proj
    return LossTerms(total=total, simple=simple, proj=proj)
