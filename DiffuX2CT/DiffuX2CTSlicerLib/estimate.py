"""A rough estimate of a reconstruction's time and memory, shown before the run.

Memory: the weights (float32) plus the activations of one network evaluation, modelled as
``FIXED + PER_VOXEL * voxels * num_samples * base_channels / 16``. The constants were measured
(peak RSS of one evaluation on the CPU, float32) for the demo network (base 16 channels): about
160 MiB at 32^3 and 460 MiB at 64^3. CUDA runs in bfloat16 autocast, which needs less; the
estimate stays the float32 figure, an upper bound.

Time: from the model registry's held-out measurement (seconds per reconstruction at its number
of steps, on the CPU it was measured on), scaled linearly with steps and samples. Without such a
measurement, or for a GPU, no time is promised: the text says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024
FIXED_ACTIVATION_BYTES = 120 * MIB
ACTIVATION_BYTES_PER_VOXEL = 1300  # per sample, for 16 base channels


@dataclass(frozen=True)
class RunEstimate:
    """Estimated seconds (``None`` when unknown) and peak memory in bytes, with their basis."""

    seconds: float | None
    memory_bytes: int
    basis: str

    def text(self) -> str:
        memory = f"about {self.memory_bytes / MIB:,.0f} MiB"
        time = f"about {_duration(self.seconds)}" if self.seconds is not None else "time unknown"
        return f"Estimate: {time}, {memory} ({self.basis})."


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{seconds / 60:.0f} min"


def estimate_run(network: dict[str, Any], volume_shape: tuple[int, int, int], weights_bytes: int, *,
                 steps: int, num_samples: int, device: str,
                 measured_seconds: float | None = None, measured_steps: int | None = None) -> RunEstimate:
    """Estimate one run.

    Args:
        network: the checkpoint JSON's ``network`` object (uses ``base_channels``).
        volume_shape: output grid ``(D, H, W)`` voxels.
        weights_bytes: size of the ``.safetensors`` file.
        steps, num_samples: the sampling settings.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (the caller resolves auto if it can).
        measured_seconds, measured_steps: the registry's CPU timing for one reconstruction, if any.
    """
    voxels = int(volume_shape[0]) * int(volume_shape[1]) * int(volume_shape[2])
    scale = float(network.get("base_channels", 16)) / 16.0
    samples = max(1, int(num_samples))
    memory = int(weights_bytes + FIXED_ACTIVATION_BYTES + ACTIVATION_BYTES_PER_VOXEL * voxels * samples * scale)
    on_gpu = str(device).startswith("cuda")
    if measured_seconds is not None and measured_steps and not on_gpu:
        seconds = float(measured_seconds) * int(steps) / int(measured_steps) * samples
        basis = f"scaled from {measured_seconds:.1f} s for {measured_steps} steps measured on a 2-core CPU"
    elif on_gpu:
        seconds, basis = None, "GPU time not measured for this model; usually much faster than the CPU"
    else:
        seconds, basis = None, "no timing recorded for this model"
    return RunEstimate(seconds, memory, basis)


def estimate_for_entry(entry: Any, *, steps: int, num_samples: int, device: str) -> RunEstimate:
    """:func:`estimate_run` for a model-catalogue entry (:class:`~.model_catalog.CatalogEntry`).

    Reads the checkpoint description (``NAME.json``) when the model is on disk, for its network
    and grid; otherwise uses the registry's resolution and assumes the demo network's width.
    """
    import json
    import os

    model = entry.entry
    size = int(model.resolution.volume_size)
    network: dict[str, Any] = {}
    shape = (size, size, size)
    weights_path = getattr(entry, "weights_path", None)
    sidecar = os.path.splitext(os.fspath(weights_path))[0] + ".json" if weights_path else None
    if sidecar and os.path.isfile(sidecar):
        with open(sidecar, encoding="utf-8") as f:
            description = json.load(f)
        network = dict(description.get("network", {}))
        shape = tuple(int(v) for v in description.get("geometry", {}).get("volume_shape", shape))  # type: ignore[assignment]
    metrics = model.metrics
    seconds = metrics.values.get("seconds") if metrics is not None else None
    return estimate_run(network, shape, int(model.size_bytes or 0), steps=steps, num_samples=num_samples,
                        device=device, measured_seconds=seconds,
                        measured_steps=metrics.steps if metrics is not None else None)
