"""Learning-rate schedule: linear warm-up, then cosine decay to a floor.

A pure function of the step, so a resumed run continues exactly (its only state is the step).
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, base_lr: float, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Learning rate for optimiser step ``step`` (0-based).

    ``base_lr * (step + 1) / warmup_steps`` during warm-up, then
    ``base_lr * (r + (1 - r) * (1 + cos(pi * p)) / 2)`` with ``p`` the fraction of the remaining
    steps done and ``r = min_lr_ratio``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return base_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


__all__ = ["warmup_cosine"]
