"""Process-group set-up for ``torchrun`` (DDP) and the few collective helpers the trainer needs.

``torchrun --nproc_per_node N -m training.train ...`` sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``; a plain ``python -m training.train`` is a world of one and never touches
``torch.distributed``. The backend is NCCL on CUDA and gloo on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, local, world)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_over_ranks(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise mean of a tensor over all processes (the tensor itself when alone)."""
    if not info.enabled:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True when ``flag`` is true on any process (so all processes stop together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_strings(text: str, info: DistInfo) -> list[str]:
    """``text`` from every process, in rank order (``[text]`` when alone)."""
    if not info.enabled:
        return [text]
    out: list[str] = [""] * info.world_size
    dist.all_gather_object(out, text)
    return out


def parameter_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes (names in order): equal on all ranks iff DDP kept them in sync."""
    import hashlib

    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        digest.update(name.encode())
        digest.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


__all__ = ["DistInfo", "any_rank", "gather_strings", "parameter_fingerprint", "barrier", "init_distributed", "mean_over_ranks", "shutdown"]
