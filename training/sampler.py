"""The order in which training volumes are drawn: an endless, seeded, resumable stream.

The stream is the concatenation of per-epoch permutations of the cases (epoch ``e`` is
``randperm(n)`` from a generator seeded with ``(seed, e)``). Global step ``k`` takes stream
positions ``k B .. (k + 1) B - 1`` for a global batch ``B``; rank ``r`` of ``W`` processes takes
the contiguous slice ``r B/W .. (r + 1) B/W - 1`` of it. The union over ranks is therefore the
single-process batch, and resuming at step ``k`` needs nothing but ``k``.

Each item is ``(case_index, epoch, position)``; the dataset derives the sample's augmentation and
noise seeds from it, so randomness does not depend on the number of processes or on workers.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from .objective import sample_seed


class StreamSampler(Sampler):
    """Endless per-rank stream of ``(case_index, epoch, position)`` from step ``start_step`` on.

    Args:
        num_cases: cases in the training split (n >= 1).
        global_batch: B, samples per optimiser step over all ranks (divisible by ``world_size``).
        seed: the run seed.
        rank, world_size: this process and the number of processes.
        start_step: the first step to produce (resume).
        shuffle: permute each epoch (otherwise cases in order).
    """

    def __init__(self, num_cases: int, global_batch: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_step: int = 0, shuffle: bool = True) -> None:
        if num_cases < 1:
            raise ValueError("the training split is empty")
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by {world_size} processes")
        self.n, self.batch, self.seed = num_cases, global_batch, seed
        self.rank, self.world = rank, world_size
        self.local = global_batch // world_size
        self.start_step = start_step
        self.shuffle = shuffle
        self._perm_epoch, self._perm = -1, None

    def _case_at(self, position: int) -> tuple[int, int]:
        epoch, offset = divmod(position, self.n)
        if epoch != self._perm_epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(sample_seed(self.seed, "epoch", epoch))
                self._perm = torch.randperm(self.n, generator=g).tolist()
            else:
                self._perm = list(range(self.n))
            self._perm_epoch = epoch
        return self._perm[offset], epoch  # type: ignore[index]

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        step = self.start_step
        while True:
            first = step * self.batch + self.rank * self.local
            for position in range(first, first + self.local):
                index, epoch = self._case_at(position)
                yield index, epoch, position
            step += 1

    def epoch_at(self, step: int) -> float:
        """Fractional epoch reached after ``step`` optimiser steps."""
        return step * self.batch / self.n


__all__ = ["StreamSampler"]
