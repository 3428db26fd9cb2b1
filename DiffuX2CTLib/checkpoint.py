"""Model checkpoints: safetensors weights plus a JSON description, never a pickle.

A checkpoint is two files side by side, ``NAME.safetensors`` (the EMA weights, plain tensors)
and ``NAME.json`` (everything needed to rebuild and use the model: network, diffusion, geometry,
intensity and radiograph normalisation, a training-data summary, code version, licence, the
SHA-256 of the weights file and a digest). Either path may be given to :func:`load_checkpoint`.

**Format version 2** (written since DiffuX2CTLib 0.1.0's hardening) adds ``"digest"``: the
SHA-256 of the canonical JSON (sorted keys, no spaces, no NaN) of :data:`DIGEST_FIELDS`, i.e. the
weights' SHA-256 together with every field that changes how the weights are used (network,
diffusion schedule and prediction type, geometry, intensity mapping, radiograph normalisation,
water attenuation, ``trained``, ``weights``). Editing any of them in the JSON is detected like
an edit of the weights. ``training``, ``license``, ``code_version`` and ``created`` are
descriptive and not covered (the registry's ``json_sha256`` covers the whole file). Version-1
files (no digest) still load, with a :class:`CheckpointWarning`; ``python -m
training.upgrade_checkpoint NAME.safetensors`` rewrites one as version 2 (weights untouched).

Loading checks, in order: the given file, then its partner, exists; the JSON parses without NaN
or Infinity; it is this format and a supported version; every field has its JSON type, is finite
and known (unknown keys are refused; version 2 also refuses missing keys); the configs and the
geometry are valid (e.g. ``0 < source_to_isocenter_mm < source_to_detector_mm``); the digest
matches (version 2); the weights' SHA-256 equals the recorded one (truncation, corruption); the
tensors' names, shapes and dtypes match the network built from the JSON (float32 weights, the
network's own integer index buffers), and every weight is finite. Files that look like pickles
(``.pt``, ``.pth``, ``.ckpt``, zip or pickle magic bytes) are refused without being opened by a
loader. Every failure is a :class:`~DiffuX2CTLib.errors.CheckpointError` (the worker's exit code 3).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import warnings
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
#: The version written; :data:`READ_VERSIONS` are read (1 with a :class:`CheckpointWarning`).
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")
#: The JSON fields the version-2 ``"digest"`` covers (see the module docstring).
DIGEST_FIELDS = ("format", "format_version", "weights_sha256", "network", "diffusion", "geometry", "intensity",
                 "xray_normalization", "mu_water_per_mm", "trained", "weights")
WEIGHT_KINDS = ("ema", "raw")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class CheckpointWarning(UserWarning):
    """A checkpoint loads but is not fully protected (e.g. format version 1 has no digest)."""


def checkpoint_digest(description: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``description``'s :data:`DIGEST_FIELDS`."""
    covered = {key: description[key] for key in DIGEST_FIELDS}
    canonical = json.dumps(covered, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


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
        digest: the digest recorded in the JSON that was read ("" for version 1 or before saving);
            :meth:`to_dict` always writes the digest of the current fields.
        format_version: the version of the JSON that was read (:data:`FORMAT_VERSION` when new).
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
    digest: str = ""
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON description in the current format, with the digest of its fields."""
        data = {
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
        templates = _templates()  # the JSON kinds, so that e.g. an int given for a float is written as a float
        for key, what in _NAMES.items():
            data[key] = _typed_object(data[key], templates[key], what, exact=True)
        data["mu_water_per_mm"] = _typed(data["mu_water_per_mm"], 0.0, "mu_water_per_mm")
        data["training"] = _finite_or_null(data["training"])
        data["digest"] = checkpoint_digest(data)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path | None = None) -> "CheckpointInfo":
        """Validate a parsed JSON description strictly (see the module docstring) and build the info.

        Raises:
            CheckpointError: naming ``path`` and the field at fault.
        """
        if not isinstance(data, Mapping):
            raise CheckpointError(path, "checkpoint description must be a JSON object")
        if data.get("format") != FORMAT_NAME:
            raise CheckpointError(path, f"not a DiffuX2CT checkpoint description (format {data.get('format')!r})")
        version = data.get("format_version")
        if isinstance(version, bool) or version not in READ_VERSIONS:
            raise CheckpointError(path, f"checkpoint format version {version!r} is not supported by DiffuX2CTLib "
                                        f"{__version__} (reads versions {', '.join(map(str, READ_VERSIONS))})")
        try:
            clean = _check_description(data, version)
            geometry = BiplanarGeometry.from_dict(clean["geometry"])  # verifies the recorded hash
            info = cls(
                network=NetworkConfig.from_dict(clean["network"]),
                diffusion=DiffusionConfig.from_dict(clean["diffusion"]),
                geometry=geometry,
                intensity=CTIntensity.from_dict(clean["intensity"]),
                xray_normalization=XRayNormalization.from_dict(clean["xray_normalization"]),
                mu_water_per_mm=clean["mu_water_per_mm"],
                trained=clean["trained"],
                training=dict(clean.get("training", {})),
                weights=clean.get("weights", "ema"),
                license=clean.get("license", ""),
                code_version=clean.get("code_version", ""),
                created=clean.get("created", ""),
                weights_sha256=clean["weights_sha256"],
                digest=clean.get("digest", ""),
                format_version=version,
            )
        except CheckpointError:
            raise
        except KeyError as exc:
            raise CheckpointError(path, f"checkpoint description lacks the field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:  # includes InputError from the configs
            raise CheckpointError(path, f"invalid checkpoint description: {exc}") from exc
        if version >= 2:
            expected = checkpoint_digest({**info.to_dict(), "format_version": version})
            if expected != info.digest:
                raise CheckpointError(path, f"digest {info.digest[:12]}... does not match the description "
                                            f"({expected[:12]}...): a field that changes how the weights are used "
                                            f"({', '.join(DIGEST_FIELDS[3:])}) or weights_sha256 was edited")
        return info


# --- strict reading of the JSON description ------------------------------------------------------
def _json_kind(value: Any) -> str:
    return "null" if value is None else {bool: "true/false", int: "an integer", float: "a number", str: "a string",
                                         list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _typed(value: Any, template: Any, where: str) -> Any:
    """``value`` checked against the JSON kind of ``template`` (floats coerced, all numbers finite)."""
    def fail(expected: str) -> ValueError:
        return ValueError(f"{where} must be {expected}, got {_json_kind(value)} {value!r:.40}")

    if isinstance(template, bool):
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if isinstance(template, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail("an integer")
        return value
    if isinstance(template, float) or template is None:
        if template is None and value is None:
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise fail("a number" if template is not None else "a number or null")
        if not math.isfinite(value):
            raise fail("a finite number")
        return float(value)
    if isinstance(template, str):
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if isinstance(template, (list, tuple)):
        if not isinstance(value, list):
            raise fail("a list")
        if not template:
            return list(value)
        return [_typed(v, template[0], f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"no JSON kind for {where}")  # pragma: no cover


def _typed_object(value: Any, template: Mapping[str, Any], what: str, exact: bool) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object, got {_json_kind(value)}")
    unknown = sorted(set(value) - set(template))
    if unknown:
        raise ValueError(f"unknown {what} fields {unknown}")
    missing = sorted(set(template) - set(value))
    if exact and missing:
        raise ValueError(f"{what} lacks the fields {missing}")
    return {key: _typed(v, template[key], f"{what}.{key}") for key, v in value.items()}


def _templates() -> dict[str, dict[str, Any]]:
    return {
        "network": NetworkConfig().to_dict(),
        "diffusion": DiffusionConfig().to_dict(),
        "geometry": BiplanarGeometry.preset("x2ct", 2, 2).to_dict(with_hash=True),
        "intensity": CTIntensity().to_dict(),
        "xray_normalization": XRayNormalization().to_dict(),
    }


_NAMES = {"network": "network config", "diffusion": "diffusion config", "geometry": "geometry",
          "intensity": "CT intensity", "xray_normalization": "X-ray normalisation"}
#: Top-level fields: JSON kind template, and whether version 1 files may omit them.
_TOP_LEVEL: dict[str, tuple[Any, bool]] = {
    "format": ("", False), "format_version": (0, False), "mu_water_per_mm": (0.0, False), "trained": (False, False),
    "training": ({}, True), "weights": ("", True), "license": ("", True), "code_version": ("", True),
    "created": ("", True), "weights_sha256": ("", False),
}


def _finite_or_null(value: Any) -> Any:
    """A copy of free-form JSON data with NaN and infinities replaced by null (they are not JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def _check_finite_tree(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} holds the non-finite number {value}")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite_tree(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite_tree(v, f"{where}[{i}]")


def _check_description(data: Mapping[str, Any], version: int) -> dict[str, Any]:
    """The description with every field type-checked (see the module docstring); raises ValueError/KeyError."""
    exact = version >= 2
    top = dict(_TOP_LEVEL)
    if exact:
        top["digest"] = ("", False)
    top.update({key: (None, False) for key in _NAMES})
    unknown = sorted(set(data) - set(top))
    if unknown:
        raise ValueError(f"unknown top-level fields {unknown}")
    for key, (_, optional) in top.items():
        if key not in data and (exact or not optional):
            raise KeyError(key)
    clean: dict[str, Any] = {}
    templates = _templates()
    for key, value in data.items():
        if key in _NAMES:
            clean[key] = _typed_object(value, templates[key], _NAMES[key], exact)
        elif key == "training":
            if not isinstance(value, dict):
                raise ValueError(f"training must be an object, got {_json_kind(value)}")
            _check_finite_tree(value, "training")
            clean[key] = value
        else:
            clean[key] = _typed(value, top[key][0], key)
    if not clean["mu_water_per_mm"] > 0:
        raise ValueError(f"mu_water_per_mm must be positive, got {clean['mu_water_per_mm']}")
    if clean.get("weights", "ema") not in WEIGHT_KINDS:
        raise ValueError(f"weights must be one of {list(WEIGHT_KINDS)}, got {clean['weights']!r}")
    for key in ("weights_sha256", "digest"):
        if key in clean and not _SHA256_RE.match(clean[key]):
            raise ValueError(f"{key} must be 64 lower-case hex digits, got {clean[key]!r:.70}")
    return clean


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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows (NaN and infinities are refused)")


def _require_files(weights_path: Path, json_path: Path, given: Path) -> None:
    """Both files must exist; the one the user gave is reported first (by its own name)."""
    first, second = (json_path, weights_path) if given.suffix == ".json" else (weights_path, json_path)
    if not first.is_file():
        raise CheckpointError(first, "checkpoint file not found" if not first.is_dir() else "is a folder, not a file")
    if not second.is_file():
        raise CheckpointError(second, f"checkpoint file not found (it belongs beside {first.name})")


def read_checkpoint_info(path: str | os.PathLike) -> CheckpointInfo:
    """Parse and validate a checkpoint's JSON without touching the weights (cheap; for GUIs).

    A version-1 description (no digest) is returned with a :class:`CheckpointWarning`.
    """
    weights_path, json_path = checkpoint_paths(path)
    _require_files(weights_path, json_path, Path(path))
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except OSError as exc:
        raise CheckpointError(json_path, f"cannot read the checkpoint description ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise CheckpointError(json_path, f"checkpoint description is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(json_path, "checkpoint description must be a JSON object")
    info = CheckpointInfo.from_dict(data, json_path)
    if info.format_version < FORMAT_VERSION:
        warnings.warn(CheckpointWarning(
            f"{json_path}: checkpoint format version {info.format_version} has no digest, so an edit of its "
            f"description is not detected; upgrade it with: python -m training.upgrade_checkpoint {weights_path}"),
            stacklevel=2)
    return info


def _check_tensors_to_save(tensors: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """float32 (floating tensors are converted losslessly from float16/bfloat16), all finite."""
    import torch

    out = {}
    for name, tensor in tensors.items():
        if tensor.is_floating_point():
            if tensor.dtype == torch.float64:
                raise CheckpointError(path, f"tensor {name!r} is float64; checkpoints store float32 weights")
            tensor = tensor.to(torch.float32)
            if not bool(torch.isfinite(tensor).all()):
                raise CheckpointError(path, f"tensor {name!r} holds NaN or infinite values; not saved")
        out[name] = tensor
    return out


def save_checkpoint(path: str | os.PathLike, state_dict: Mapping[str, Any], info: CheckpointInfo) -> tuple[Path, Path]:
    """Write ``NAME.safetensors`` and ``NAME.json`` (current format, with the digest); the JSON is
    written last (it commits the pair). Floating weights are stored as float32 and must be finite."""
    from safetensors.torch import save_file

    weights_path, json_path = checkpoint_paths(path)
    tensors = _check_tensors_to_save({k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()},
                                     weights_path)
    try:
        info.to_dict()  # the description is valid and finite before anything is written
    except ValueError as exc:
        raise CheckpointError(json_path, f"invalid checkpoint description: {exc}") from exc
    with atomic_file(weights_path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)})
        info.weights_sha256 = sha256_file(tmp)
    info.created = info.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    description = info.to_dict()
    with atomic_file(json_path) as tmp:
        tmp.write_text(json.dumps(description, indent=2, allow_nan=False), encoding="utf-8")
    info.digest, info.format_version = description["digest"], FORMAT_VERSION
    return weights_path, json_path


def _check_loaded_tensors(state: Mapping[str, Any], expected: Mapping[str, Any], weights_path: Path,
                          json_path: Path) -> None:
    import torch

    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(weights_path, f"weights do not fit the network described in {json_path.name}: "
                                            f"{len(missing)} missing (e.g. {missing[:2]}), "
                                            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    for name, tensor in state.items():
        want = expected[name]
        if tuple(tensor.shape) != tuple(want.shape):
            raise CheckpointError(weights_path, f"tensor {name!r} has shape {tuple(tensor.shape)}, the network "
                                                f"expects {tuple(want.shape)}")
        if tensor.dtype != want.dtype:
            raise CheckpointError(weights_path, f"tensor {name!r} is {str(tensor.dtype).replace('torch.', '')}, the "
                                                f"network expects {str(want.dtype).replace('torch.', '')} (weights "
                                                "are stored as float32)")
        if tensor.is_floating_point():
            if not bool(torch.isfinite(tensor).all()):
                raise CheckpointError(weights_path, f"tensor {name!r} holds NaN or infinite values")
        elif not torch.equal(tensor, want):  # integer buffers are constants of the architecture
            raise CheckpointError(weights_path, f"tensor {name!r} differs from the network's own constant buffer")


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

    try:
        model = DiffuX2CTNet(info.network, info.geometry)
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(json_path, f"the network described cannot be built ({' '.join(str(exc).split())})") from exc
    _check_loaded_tensors(state, model.state_dict(), weights_path, json_path)
    model.load_state_dict(state, strict=True)
    model.to(torch.device(device)).eval()
    return LoadedCheckpoint(info=info, model=model, weights_path=weights_path, json_path=json_path)


def upgrade_checkpoint(path: str | os.PathLike) -> tuple[Path, Path]:
    """Rewrite an older checkpoint's JSON in the current format (adds the digest); the weights file
    is not touched. The whole checkpoint is validated first (:func:`load_checkpoint`), so a corrupt
    or edited pair is refused rather than blessed. Returns ``(weights, json)``."""
    weights_path, json_path = checkpoint_paths(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        info = load_checkpoint(weights_path).info
    description = info.to_dict()
    with atomic_file(json_path) as tmp:
        tmp.write_text(json.dumps(description, indent=2, allow_nan=False), encoding="utf-8")
    return weights_path, json_path
