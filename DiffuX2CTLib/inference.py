"""Reconstruct a CT volume from an AP and a lateral radiograph with a trained checkpoint.

The output CT is in HU on the checkpoint geometry's model grid: identity direction (LPS axes),
isotropic voxels of ``geometry.volume_spacing_mm``, its centre (the isocentre of the two views)
at ``isocenter_lps`` (by default the LPS origin; the ``geometry.json`` sidecar of simulated
X-rays records the true one). See :mod:`DiffuX2CTLib.geometry.biplanar` for the frames.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np

from .diffusion.config import DEFAULT_SAMPLER
from .errors import CancelledError, DiffuX2CTError, InputError
from .io.intensity import MU_WATER_PER_MM

XRayInput = Union[str, os.PathLike, "XRayImage", np.ndarray]  # noqa: F821


@dataclass
class ReconstructionResult:
    """Output of :func:`reconstruct`.

    Attributes:
        ct: SimpleITK image in HU (mean over samples), geometry as described in the module doc.
        std: per-voxel standard deviation over samples in HU (``None`` when ``num_samples == 1``).
        details: sampler, steps, seed, device, timing, whether the model was trained, and
            ``xrays``: per view, how its radiograph was read (encoding path, orientation, scale).
        warnings: assumptions made while reading the radiographs (``"VIEW (FILE): ..."``).
    """

    ct: Any
    std: Any | None
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def resolve_device(device: str = "auto") -> "torch.device":  # noqa: F821
    """``auto`` picks CUDA when available, else CPU; an unavailable CUDA request is an error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DiffuX2CTError(f"device {device!r} requested but CUDA is not available in this torch build; use --device cpu")
    return dev


def prepare_xrays(ap: XRayInput, lateral: XRayInput, geometry, normalization, options=None, *,
                  report: dict | None = None, mu_water_per_mm: float = MU_WATER_PER_MM) -> np.ndarray:
    """Both views on the geometry's detector grid, normalised to [-1, 1]: ``(2, rows, cols)``.

    Files and :class:`XRayImage` inputs go through the reading chain of
    :func:`DiffuX2CTLib.io.radiograph.prepare_radiograph` with ``options`` (a
    :class:`~DiffuX2CTLib.io.radiograph.RadiographOptions`; default: DICOM tags decide, other
    formats are line integrals, no VOI): line-integral estimate, labels and collimation left out,
    view orientation, scale at the isocentre. A film without pixel spacing is refused unless the
    options give one. A plain array must already be ``geometry.detector_shape`` line integrals.
    ``report``, if given, receives ``"warnings"`` (list of str) and ``"views"`` (per-view summary).
    ``mu_water_per_mm`` is the model's (default: the library's); it sets the scale prior of log films.
    """
    from .io.radiograph import prepare_radiograph

    views, warnings, summaries = [], [], {}
    for view, item in (("ap", ap), ("lateral", lateral)):
        if isinstance(item, np.ndarray):
            if tuple(item.shape) != tuple(geometry.detector_shape):
                raise InputError(None, f"{view} array has shape {item.shape}, expected {geometry.detector_shape}")
            views.append(normalization.normalize_numpy(item.astype(np.float32)))
            summaries[view] = {"file": None, "format": "array", "encoding_path": "line-integral -> as is"}
        else:
            prepared = prepare_radiograph(item, view, geometry, normalization, options, mu_water_per_mm)
            views.append(prepared.pixels)
            warnings += prepared.warnings
            summaries[view] = prepared.summary
    if report is not None:
        report["warnings"] = warnings
        report["views"] = summaries
    order = [("ap", "lateral").index(v) for v in geometry.views]
    return np.stack([views[i] for i in order]).astype(np.float32)


def reconstruct(
    ap: XRayInput,
    lateral: XRayInput,
    checkpoint,
    steps: int = 25,
    sampler: str = DEFAULT_SAMPLER,
    seed: int = 0,
    device: str = "auto",
    num_samples: int = 1,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    isocenter_lps: tuple[float, float, float] = (0.0, 0.0, 0.0),
    eta: float = 0.0,
    reading=None,
) -> ReconstructionResult:
    """CT in HU from two radiographs.

    Args:
        ap, lateral: file paths (DICOM, PNG, TIFF, JPEG, NRRD), :class:`XRayImage` objects or
            arrays already on the detector grid (bright = dense, any scale).
        checkpoint: path to ``NAME.safetensors``/``NAME.json`` or a :class:`LoadedCheckpoint`.
        steps: sampler steps (network evaluations for DDIM and DPM-Solver++).
        sampler: ``"dpmsolver++-sde"`` (default), ``"dpmsolver++"``, ``"ddim"`` or ``"ddpm"``.
        seed: seed of the initial noise; the same seed gives the same CT on the same device.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        num_samples: independent samples; their mean is returned and, if > 1, their std.
        progress: called as ``progress(i, n)`` after each step.
        cancel: polled before each network evaluation; returning True raises CancelledError.
        isocenter_lps: LPS position (mm) of the isocentre, i.e. the output volume's centre.
        eta: DDIM stochasticity (0 = deterministic).
        reading: :class:`~DiffuX2CTLib.io.radiograph.RadiographOptions` for reading real
            radiographs (encoding, VOI, display gamma, spacing for films without one).
    """
    import torch

    from .checkpoint import LoadedCheckpoint, load_checkpoint
    from .diffusion import sample
    from .io.ct import array_to_image

    if num_samples < 1:
        raise InputError(None, f"num_samples must be >= 1, got {num_samples}")
    dev = resolve_device(device)
    started = time.perf_counter()
    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load_checkpoint(checkpoint, device=str(dev))
    info, model = loaded.info, loaded.model.to(dev).eval()
    report: dict = {}
    xrays = prepare_xrays(ap, lateral, info.geometry, info.xray_normalization, reading, report=report,
                          mu_water_per_mm=info.mu_water_per_mm)
    xrays = torch.from_numpy(xrays)[None].to(dev)
    use_bf16 = dev.type == "cuda"
    shape = (num_samples, info.network.in_channels, *info.geometry.volume_shape)
    generator = torch.Generator(device=dev).manual_seed(int(seed))

    try:
        with torch.inference_mode(), torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_bf16):
            if cancel and cancel():
                raise CancelledError("cancelled before sampling")
            condition = model.encode_condition(xrays).expand(num_samples, -1, -1, -1, -1)

            def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return model(x_t, t, condition).float()

            x0 = sample(denoise, shape, info.diffusion, sampler=sampler, steps=steps, eta=eta,
                        generator=generator, device=dev, progress=progress, cancel=cancel)
    except torch.cuda.OutOfMemoryError as exc:
        raise DiffuX2CTError(
            f"CUDA ran out of memory for {num_samples} sample(s) at {info.geometry.volume_shape}: "
            "use fewer samples (--num-samples) or the CPU (--device cpu)") from exc

    hu = info.intensity.denormalize(x0.float().clamp(-1, 1)).cpu().numpy()[:, 0]  # (S, D, H, W)
    mean = hu.mean(axis=0)
    ct = array_to_image(mean, info.geometry, isocenter_lps)
    std = array_to_image(hu.std(axis=0), info.geometry, isocenter_lps) if num_samples > 1 else None
    details = {
        "sampler": sampler, "steps": steps, "seed": int(seed), "eta": eta, "num_samples": num_samples,
        "device": str(dev), "dtype": "bfloat16" if use_bf16 else "float32",
        "seconds": round(time.perf_counter() - started, 3),
        "model_trained": info.trained, "geometry_hash": info.geometry.hash,
        "checkpoint": str(loaded.weights_path), "xrays": report.get("views", {}),
    }
    return ReconstructionResult(ct=ct, std=std, details=details, warnings=list(report.get("warnings", [])))


def read_isocenter(sidecar: str | os.PathLike) -> tuple[float, float, float]:
    """Isocentre (LPS mm) from a ``geometry.json`` written by ``diffux2ct simulate``."""
    import json

    path = Path(sidecar)
    try:
        value = json.loads(path.read_text())["isocenter_lps_mm"]
        return tuple(float(v) for v in value)  # type: ignore[return-value]
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"cannot read isocenter_lps_mm ({exc})") from exc
