"""Model checkpoints: safetensors weights plus a JSON description, never a pickle.

A checkpoint is two files side by side, ``NAME.safetensors`` (the EMA weights, plain tensors)
and ``NAME.json`` (everything needed to rebuild and use the model: network, diffusion, geometry,
intensity and radiograph normalisation, a training-data summary, code version, licence and the
SHA-256 of the weights file). Either path may be given to :func:`load_checkpoint`.

Loading checks, in order: both files exist; the JSON is this format and a supported version;
the weights' SHA-256 equals the recorded one (catches truncation and corruption); the tensors'
names and shapes match the network built from the JSON. Files that look like pickles (``.pt``,
``.pth``, ``.ckpt``, zip or pickle magic bytes) are refused without being opened by a loader.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import __version__
from .diffusion.config import DiffusionConfig
from .errors import CheckpointError
from .geometry import BiplanarGeometry
from .io.atomic import atomic_file
from .io.files import sha256_file
from .io.intensity import MU_WATER_PER_MM, CTIntensity
from .io.xray import XRayNormalization
from .network.config import NetworkConfig

FORMAT_NAME = "diffux2ct-checkpoint"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


@dataclass
class CheckpointInfo:
    """What a checkpoint's JSON says: enough to rebuild the model and use it correctly.

    Attributes:
        network: network hyper-parameters.
        diffusion: noise schedule and prediction type the weights were trained with.
        geometry: the biplanar geometry of the training DRRs (volume and detector sampling).
        intensity: HU <-> [-1, 1] mapping of the CT volumes.
        xray_normalization: radiograph normalisation of the network input.
        mu_water_per_mm: attenuation of water used for the DRRs (1/mm).
        trained: False for an untrained (randomly initialised) model, e.g. the demo's.
        training: summary of the training data and run (datasets, cases, steps, ...).
        weights: which weights are stored ("ema" or "raw").
        license: licence of the weights.
        code_version: DiffuX2CTLib version that wrote the checkpoint.
        created: ISO-8601 UTC time of writing.
        weights_sha256: SHA-256 of the ``.safetensors`` file (filled in on save).
    """

    network: NetworkConfig
    diffusion: DiffusionConfig
    geometry: BiplanarGeometry
    intensity: CTIntensity = field(default_factory=CTIntensity)
    xray_normalization: XRayNormalization = field(default_factory=XRayNormalization)
    mu_water_per_mm: float = MU_WATER_PER_MM
    trained: bool = False
    training: dict[str, Any] = field(default_factory=dict)
    weights: str = "ema"
    license: str = "Apache-2.0"
    code_version: str = __version__
    created: str = ""
    weights_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "network": self.network.to_dict(),
            "diffusion": self.diffusion.to_dict(),
            "geometry": self.geometry.to_dict(with_hash=True),
            "intensity": self.intensity.to_dict(),
            "xray_normalization": self.xray_normalization.to_dict(),
            "mu_water_per_mm": self.mu_water_per_mm,
            "trained": self.trained,
            "training": self.training,
            "weights": self.weights,
            "license": self.license,
            "code_version": self.code_version,
            "created": self.created,
            "weights_sha256": self.weights_sha256,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path | None = None) -> "CheckpointInfo":
        if data.get("format") != FORMAT_NAME:
            raise CheckpointError(path, f"not a DiffuX2CT checkpoint description (format {data.get('format')!r})")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(path, f"checkpoint format version {version!r} is not supported by DiffuX2CTLib "
                                        f"{__version__} (reads version {FORMAT_VERSION})")
        try:
            geometry = BiplanarGeometry.from_dict(data["geometry"])  # verifies the recorded hash
            return cls(
                network=NetworkConfig.from_dict(data["network"]),
                diffusion=DiffusionConfig.from_dict(data["diffusion"]),
                geometry=geometry,
                intensity=CTIntensity.from_dict(data["intensity"]),
                xray_normalization=XRayNormalization.from_dict(data["xray_normalization"]),
                mu_water_per_mm=float(data["mu_water_per_mm"]),
                trained=bool(data["trained"]),
                training=dict(data.get("training", {})),
                weights=str(data.get("weights", "ema")),
                license=str(data.get("license", "")),
                code_version=str(data.get("code_version", "")),
                created=str(data.get("created", "")),
                weights_sha256=str(data["weights_sha256"]),
            )
        except CheckpointError:
            raise
        except KeyError as exc:
            raise CheckpointError(path, f"checkpoint description lacks the field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:  # includes InputError from the configs
            raise CheckpointError(path, f"invalid checkpoint description: {exc}") from exc


@dataclass
class LoadedCheckpoint:
    """A checkpoint read from disk: its description and the network with the weights loaded."""

    info: CheckpointInfo
    model: Any  # DiffuX2CTNet, in eval mode
    weights_path: Path
    json_path: Path


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights, json)`` paths of the checkpoint that ``path`` (either file) belongs to."""
    p = Path(path)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(p, "looks like a pickled PyTorch file; DiffuX2CT loads only safetensors + JSON "
                                 "checkpoints and never unpickles (convert it with a script you trust)")
    if p.suffix not in (".safetensors", ".json"):
        raise CheckpointError(p, "a checkpoint is NAME.safetensors with NAME.json beside it")
    return p.with_suffix(".safetensors"), p.with_suffix(".json")


def _refuse_pickles(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise CheckpointError(path, "is a zip/pickle file, not safetensors; DiffuX2CT never unpickles checkpoints")


def read_checkpoint_info(path: str | os.PathLike) -> CheckpointInfo:
    """Parse and validate a checkpoint's JSON without touching the weights (cheap; for GUIs)."""
    weights_path, json_path = checkpoint_paths(path)
    for p in (json_path, weights_path):
        if not p.is_file():
            raise CheckpointError(p, "checkpoint file not found")
    try:
        data = json.loads(json_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(json_path, f"checkpoint description is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(json_path, "checkpoint description must be a JSON object")
    return CheckpointInfo.from_dict(data, json_path)


def save_checkpoint(path: str | os.PathLike, state_dict: Mapping[str, Any], info: CheckpointInfo) -> tuple[Path, Path]:
    """Write ``NAME.safetensors`` and ``NAME.json``; the JSON is written last (it commits the pair)."""
    from safetensors.torch import save_file

    weights_path, json_path = checkpoint_paths(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_file(weights_path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)})
        info.weights_sha256 = sha256_file(tmp)
    info.created = info.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    with atomic_file(json_path) as tmp:
        tmp.write_text(json.dumps(info.to_dict(), indent=2))
    return weights_path, json_path


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> LoadedCheckpoint:
    """Validate a checkpoint and return the network (eval mode, on ``device``) with its description."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .network import DiffuX2CTNet

    weights_path, json_path = checkpoint_paths(path)
    if weights_path.is_file():
        _refuse_pickles(weights_path)
    info = read_checkpoint_info(path)
    actual = sha256_file(weights_path)
    if actual != info.weights_sha256:
        raise CheckpointError(weights_path, f"SHA-256 {actual[:12]}... does not match the recorded "
                                            f"{info.weights_sha256[:12]}... (truncated, corrupted or replaced)")
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(weights_path, f"cannot read safetensors weights ({exc})") from exc

    model = DiffuX2CTNet(info.network, info.geometry)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(weights_path, f"weights do not fit the network described in {json_path.name}: "
                                            f"{len(missing)} missing (e.g. {missing[:2]}), "
                                            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(weights_path, f"tensor {name!r} has shape {tuple(tensor.shape)}, the network "
                                                f"expects {tuple(expected[name].shape)}")
    model.load_state_dict(state, strict=True)
    model.to(torch.device(device)).eval()
    return LoadedCheckpoint(info=info, model=model, weights_path=weights_path, json_path=json_path)
