"""Exponential moving average of a network's weights (the weights that get exported)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``shadow = d * shadow + (1 - d) * weights`` after each optimiser step.

    The effective decay warms up as ``d = min(decay, (1 + n) / (10 + n))`` with ``n`` the number of
    updates since ``start_step`` (before it the shadow copies the weights), so early averages are
    not dominated by the random initialisation. Buffers are copied. The shadow is an eval-mode copy
    of the network without gradients.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, start_step: int = 0) -> None:
        self.decay = float(decay)
        self.start_step = int(start_step)
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self, step: int) -> float:
        n = step - self.start_step
        if n <= 0:
            return 0.0
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold in the weights after optimiser step ``step`` (1-based count of steps done)."""
        d = self.current_decay(step)
        for shadow, live in zip(self.shadow.parameters(), model.parameters()):
            shadow.lerp_(live.detach(), 1.0 - d)
        for shadow, live in zip(self.shadow.buffers(), model.buffers()):
            shadow.copy_(live)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow.load_state_dict(state, strict=True)


__all__ = ["EMA"]
