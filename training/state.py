"""Training checkpoints: everything needed to resume a run exactly, in safetensors + JSON.

A checkpoint is a folder ``RUN/checkpoints/step_NNNNNNNN/`` (and ``RUN/checkpoints/best/``):

* ``tensors.safetensors`` -- ``model/<name>`` (raw weights), ``ema/<name>`` (EMA weights),
  ``optim/<param index>/<key>`` (AdamW moments and step counts), ``rng/torch_cpu`` and
  ``rng/cuda_<i>`` (generator states) and ``rng/numpy_keys``;
* ``state.json`` -- format and version, the step, the training config, the optimiser's
  parameter groups, the Python and NumPy RNG scalars, the best validation score so far, the
  world size, the SHA-256 of ``tensors.safetensors`` (checked on load), software version.

Folders are written under a temporary name and renamed into place, so a run killed at any
moment (even SIGKILL) leaves only complete checkpoints; :func:`latest_checkpoint` finds the
newest. Nothing is ever pickled. The data order needs no state: it is a function of the seed
and the step (:mod:`training.sampler`), and so is the learning rate (:mod:`training.lr`).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from DiffuX2CTLib import __version__
from DiffuX2CTLib.errors import CheckpointError, InputError
from DiffuX2CTLib.io.files import sha256_file

STATE_FORMAT = "diffux2ct-training-state"
STATE_VERSION = 1
TENSORS_NAME = "tensors.safetensors"
STATE_NAME = "state.json"
CHECKPOINTS_DIR = "checkpoints"
BEST_NAME = "best"
_STEP_DIR = re.compile(r"^step_(\d{8})$")


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


# --- RNG states -------------------------------------------------------------------------------
def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Generator states of torch (CPU, every CUDA device), NumPy and Python's ``random``."""
    tensors = {"rng/torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda_{i}"] = state
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng/numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss_next = random.getstate()
    scalars = {"numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
               "python": {"version": version, "state": list(internal), "gauss_next": gauss_next}}
    return tensors, scalars


def restore_rng(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch_cpu"])
    cuda = sorted(k for k in tensors if k.startswith("rng/cuda_"))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    n = scalars["numpy"]
    np.random.set_state((n["kind"], tensors["rng/numpy_keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = scalars["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


# --- optimiser state --------------------------------------------------------------------------
def _optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    state = optimizer.state_dict()
    tensors = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            tensors[f"optim/{index}/{key}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    groups = []
    for group in state["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()})
    return tensors, groups


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if not name.startswith("optim/"):
            continue
        _, index, key = name.split("/", 2)
        state.setdefault(int(index), {})[key] = value
    restored = []
    for group in groups:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        restored.append(group)
    return {"state": state, "param_groups": restored}


# --- writing ----------------------------------------------------------------------------------
@dataclass
class TrainingState:
    """What a checkpoint holds (besides the config): the live objects to save or restore."""

    step: int
    model: torch.nn.Module
    ema: Any  # training.ema.EMA
    optimizer: torch.optim.Optimizer
    best_score: float | None = None
    best_step: int | None = None


def save_training_checkpoint(run_dir: str | os.PathLike, state: TrainingState, config: dict[str, Any],
                             world_size: int = 1, extra: dict[str, Any] | None = None) -> Path:
    """Write ``RUN/checkpoints/step_NNNNNNNN`` atomically and return its path."""
    from safetensors.torch import save_file

    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in state.model.state_dict().items():
        tensors[f"model/{name}"] = value
    for name, value in state.ema.state_dict().items():
        tensors[f"ema/{name}"] = value
    optim_tensors, groups = _optimizer_to_flat(state.optimizer)
    tensors.update(optim_tensors)
    rng_tensors, rng_scalars = capture_rng()
    tensors.update(rng_tensors)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}

    final = root / step_dir_name(state.step)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        save_file(tensors, str(stage / TENSORS_NAME), metadata={"format": STATE_FORMAT})
        meta = {
            "format": STATE_FORMAT, "format_version": STATE_VERSION, "step": state.step,
            "config": config, "optimizer_param_groups": groups, "rng": rng_scalars,
            "best_score": state.best_score, "best_step": state.best_step, "world_size": world_size,
            "tensors_sha256": sha256_file(stage / TENSORS_NAME), "software": f"DiffuX2CTLib {__version__}",
            "extra": extra or {},
        }
        (stage / STATE_NAME).write_text(json.dumps(meta, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return final


def mark_best(run_dir: str | os.PathLike, checkpoint: Path) -> Path:
    """Copy a checkpoint folder to ``RUN/checkpoints/best`` (replaced atomically)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    stage = Path(tempfile.mkdtemp(prefix=".best.", suffix=".tmp", dir=root))
    try:
        for name in (TENSORS_NAME, STATE_NAME):
            shutil.copy2(checkpoint / name, stage / name)
        best = root / BEST_NAME
        old = root / ".best.old"
        shutil.rmtree(old, ignore_errors=True)
        if best.exists():
            os.replace(best, old)
        os.replace(stage, best)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return root / BEST_NAME


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step folders (``best`` is kept)."""
    for path in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)


# --- reading ----------------------------------------------------------------------------------
def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete step folders of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and (path / STATE_NAME).is_file() and (path / TENSORS_NAME).is_file():
            found.append((int(match.group(1)), path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def resolve_checkpoint(path: str | os.PathLike, which: str = "last") -> Path:
    """A checkpoint folder from itself, or from a run folder (``best`` or the latest step)."""
    p = Path(path)
    if (p / STATE_NAME).is_file():
        return p
    if not p.is_dir():
        raise CheckpointError(p, "is neither a training checkpoint folder nor a run folder")
    if which == "best" and (p / CHECKPOINTS_DIR / BEST_NAME / STATE_NAME).is_file():
        return p / CHECKPOINTS_DIR / BEST_NAME
    latest = latest_checkpoint(p)
    if latest is None:
        raise CheckpointError(p, "holds no training checkpoint")
    return latest


@dataclass
class LoadedTrainingCheckpoint:
    path: Path
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    def prefixed(self, prefix: str) -> dict[str, torch.Tensor]:
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix + "/")}


def read_training_checkpoint(path: str | os.PathLike, which: str = "last") -> LoadedTrainingCheckpoint:
    """Read and verify a checkpoint folder (or a run folder's ``best`` / latest checkpoint)."""
    from safetensors.torch import load_file

    folder = resolve_checkpoint(path, which)
    try:
        meta = json.loads((folder / STATE_NAME).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(folder / STATE_NAME, f"cannot read training state ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT or meta.get("format_version") != STATE_VERSION:
        raise CheckpointError(folder / STATE_NAME, f"not a DiffuX2CT training checkpoint (format {STATE_FORMAT} v{STATE_VERSION})")
    actual = sha256_file(folder / TENSORS_NAME)
    if actual != meta.get("tensors_sha256"):
        raise CheckpointError(folder / TENSORS_NAME, "SHA-256 does not match state.json (truncated or corrupted)")
    try:
        tensors = load_file(str(folder / TENSORS_NAME), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(folder / TENSORS_NAME, f"cannot read safetensors ({exc})") from exc
    return LoadedTrainingCheckpoint(folder, meta, tensors)


def restore_training_state(loaded: LoadedTrainingCheckpoint, state: TrainingState) -> TrainingState:
    """Load weights, EMA, optimiser and RNG states into the live objects; returns the updated state."""
    state.model.load_state_dict(loaded.prefixed("model"), strict=True)
    state.ema.load_state_dict(loaded.prefixed("ema"))
    state.optimizer.load_state_dict(_optimizer_from_flat(loaded.tensors, loaded.meta["optimizer_param_groups"]))
    restore_rng(loaded.tensors, loaded.meta["rng"])
    state.step = loaded.step
    state.best_score = loaded.meta.get("best_score")
    state.best_step = loaded.meta.get("best_step")
    return state


# --- from a training checkpoint to a usable model ---------------------------------------------
def inference_parts(path: str | os.PathLike, which: str = "best") -> tuple[dict[str, torch.Tensor], Any]:
    """The EMA weights and a :class:`~DiffuX2CTLib.checkpoint.CheckpointInfo` of a training checkpoint
    (a checkpoint folder, or a run folder: ``best`` if present, else the latest)."""
    from DiffuX2CTLib.checkpoint import CheckpointInfo
    from DiffuX2CTLib.io.intensity import MU_WATER_PER_MM
    from DiffuX2CTLib.io.xray import XRayNormalization

    from .config import config_from_dict

    loaded = read_training_checkpoint(path, which)
    config = config_from_dict(loaded.meta["config"])
    geometry = config.build_geometry()
    extra = loaded.meta.get("extra", {})
    info = CheckpointInfo(
        network=config.build_network_config(geometry).replace(use_checkpointing=False),
        diffusion=config.build_diffusion_config(),
        geometry=geometry,
        intensity=config.build_intensity(),
        xray_normalization=XRayNormalization(),
        mu_water_per_mm=float(extra.get("mu_water_per_mm", MU_WATER_PER_MM)),
        trained=True,
        training={
            "name": config.name, "objective": config.objective, "step": loaded.step,
            "checkpoint": str(loaded.path), "best_score": loaded.meta.get("best_score"),
            "best_metric": config.train.best_metric, "data": extra.get("data", {}),
            "xray_supersample": config.data.xray_supersample, "config": loaded.meta["config"],
        },
        weights="ema",
    )
    return loaded.prefixed("ema"), info


@dataclass
class LoadedModel:
    """A network ready for evaluation (eval mode, EMA weights) with its description."""

    model: torch.nn.Module
    info: Any  # DiffuX2CTLib.checkpoint.CheckpointInfo
    objective: str
    source: Path


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", which: str = "best") -> LoadedModel:
    """An inference checkpoint (``NAME.safetensors``/``.json``) or a training checkpoint / run folder."""
    from DiffuX2CTLib.checkpoint import load_checkpoint
    from DiffuX2CTLib.network import DiffuX2CTNet

    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        loaded = load_checkpoint(p, device=str(device))
        objective = str(loaded.info.training.get("objective", "diffusion"))
        return LoadedModel(loaded.model, loaded.info, objective, loaded.weights_path)
    if not p.exists():
        raise InputError(p, "checkpoint not found")
    weights, info = inference_parts(p, which)
    model = DiffuX2CTNet(info.network, info.geometry)
    model.load_state_dict(weights, strict=True)
    model.to(torch.device(device)).eval()
    return LoadedModel(model, info, str(info.training["objective"]), p)


__all__ = [
    "LoadedModel", "LoadedTrainingCheckpoint", "TrainingState", "inference_parts", "latest_checkpoint",
    "list_checkpoints", "load_model", "mark_best", "prune_checkpoints", "read_training_checkpoint",
    "resolve_checkpoint", "restore_training_state", "save_training_checkpoint",
]
