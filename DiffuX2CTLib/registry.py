"""The model registry: which trained models exist, what they are for, and where their weights are.

``Resources/Models.json`` lists the models the Slicer module offers; ``make demo`` uses its
default entry. Format (version 2; version 1 is still read)::

    {"format": "diffux2ct-model-registry", "format_version": 2, "default": "<id>" | null,
     "models": [{"id", "name", "version", "description", "license", "intended_use",
                 "geometry": {"preset", "hash"},
                 "resolution": {"volume_size", "xray_size", "voxel_mm"},
                 "training_data": {"description", "datasets": [...]},
                 "metrics": {"values": {name: number}, "split", "num_cases", "cases": [...],
                             "sampler", "steps"} | null,
                 "sha256", "json_sha256", "digest"?, "file" | "url", "size_bytes", "created"}]}

Version 2 adds the optional ``digest``: the checkpoint description's digest (format version 2 of
:mod:`DiffuX2CTLib.checkpoint`, over the weights' SHA-256 and the fields that change how they are
used); :func:`verify` checks that the JSON records the same one. ``file`` is relative to the registry's folder (``Models/NAME.safetensors`` for
``Resources/Models.json``), with ``NAME.json`` beside it; exactly one of ``file`` and ``url`` is
given. Reading is strict: unknown keys, missing keys and wrong types are an
:class:`~DiffuX2CTLib.errors.InputError` naming the file and the key. No torch import here.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping

from .diffusion.config import DEFAULT_SAMPLER
from .errors import CheckpointError, InputError
from .io.atomic import atomic_file
from .io.files import default_cache_dir, sha256_file

FORMAT_NAME = "diffux2ct-model-registry"
FORMAT_VERSION = 2
#: Versions read: 1 has no ``digest`` key in its entries (it is accepted there too).
READ_VERSIONS = (1, 2)

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_GEOMETRY_HASH_RE = re.compile(r"^[0-9a-f]{16}$")


# --- strict reading helpers -----------------------------------------------------------------------
def _fail(where: str, problem: str) -> InputError:
    return InputError(None, f"{where}: {problem}" if where else problem)


def _type_name(value: Any) -> str:
    return "null" if value is None else {bool: "boolean", int: "integer", float: "number", str: "string",
                                         list: "list", dict: "object"}.get(type(value), type(value).__name__)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) for s in v)


def _is_number_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and _is_number(x) for k, x in v.items())


_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (_is_int, "an integer"),
    "number": (_is_number, "a number"),
    "object": (lambda v: isinstance(v, dict), "an object"),
    "str_list": (_is_str_list, "a list of strings"),
    "number_map": (_is_number_map, "an object of numbers"),
}


def _read(data: Any, where: str, spec: Mapping[str, str], optional: Mapping[str, str] = ()) -> dict[str, Any]:
    """Check ``data`` is an object with exactly the keys of ``spec`` (plus any of ``optional``,
    whose kinds may also be null) and the given kinds; return it as a plain dict."""
    if not isinstance(data, dict):
        raise _fail(where, f"must be an object, got {_type_name(data)}")
    optional = dict(optional)
    unknown = sorted(set(data) - set(spec) - set(optional))
    if unknown:
        raise _fail(where, f"unknown key {unknown[0]!r}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    missing = [k for k in spec if k not in data]
    if missing:
        raise _fail(where, f"missing key {missing[0]!r}")
    for key, value in data.items():
        kind = spec.get(key) or optional[key]
        if key in optional and value is None:
            continue
        check, noun = _KINDS[kind]
        if not check(value):
            raise _fail(f"{where}.{key}" if where else key, f"must be {noun}, got {_type_name(value)} {value!r:.40}")
    return dict(data)


def _need(cond: bool, where: str, problem: str) -> None:
    if not cond:
        raise _fail(where, problem)


_GEOMETRY_KEYS = {"preset": "str", "hash": "str"}
_RESOLUTION_KEYS = {"volume_size": "int", "xray_size": "int", "voxel_mm": "number"}
_TRAINING_KEYS = {"description": "str", "datasets": "str_list"}
_METRICS_KEYS = {"values": "number_map", "split": "str", "num_cases": "int", "cases": "str_list",
                 "sampler": "str", "steps": "int"}


# --- the entry ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GeometryRef:
    """The biplanar geometry a model was trained for: preset name and ``BiplanarGeometry.hash``."""

    preset: str
    hash: str

    def validate(self, where: str = "geometry") -> None:
        _need(bool(self.preset), f"{where}.preset", "must not be empty")
        _need(bool(_GEOMETRY_HASH_RE.match(self.hash)), f"{where}.hash", f"must be 16 hex digits, got {self.hash!r}")

    @classmethod
    def from_dict(cls, data: Any, where: str = "geometry") -> "GeometryRef":
        return cls(**_read(data, where, _GEOMETRY_KEYS))


@dataclass(frozen=True)
class Resolution:
    """Volume side N (voxels), radiograph side M (pixels) and voxel size in mm."""

    volume_size: int
    xray_size: int
    voxel_mm: float

    def validate(self, where: str = "resolution") -> None:
        for key in ("volume_size", "xray_size", "voxel_mm"):
            _need(getattr(self, key) > 0, f"{where}.{key}", "must be positive")

    @classmethod
    def from_dict(cls, data: Any, where: str = "resolution") -> "Resolution":
        d = _read(data, where, _RESOLUTION_KEYS)
        return cls(volume_size=d["volume_size"], xray_size=d["xray_size"], voxel_mm=float(d["voxel_mm"]))


@dataclass(frozen=True)
class TrainingData:
    """What the model was trained on: free text and the datasets / scans used."""

    description: str
    datasets: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Any, where: str = "training_data") -> "TrainingData":
        d = _read(data, where, _TRAINING_KEYS)
        return cls(description=d["description"], datasets=tuple(d["datasets"]))

    def to_dict(self) -> dict[str, Any]:
        return {"description": self.description, "datasets": list(self.datasets)}


@dataclass(frozen=True)
class Metrics:
    """Held-out metrics (e.g. PSNR, SSIM) and how they were obtained.

    Attributes:
        values: metric name -> value (means over the cases).
        split: the data split evaluated (e.g. ``"test"``).
        num_cases: number of cases averaged.
        cases: their identifiers (may be empty when not recorded).
        sampler: the sampler used (``dpmsolver++-sde``, ``dpmsolver++``, ``ddim``, ``ddpm``, or ``regression``).
        steps: sampler steps.
    """

    values: Mapping[str, float]
    split: str
    num_cases: int
    cases: tuple[str, ...] = ()
    sampler: str = DEFAULT_SAMPLER
    steps: int = 25

    def validate(self, where: str = "metrics") -> None:
        _need(self.num_cases >= 0, f"{where}.num_cases", "must be >= 0")
        _need(not self.cases or len(self.cases) == self.num_cases, f"{where}.cases",
              f"lists {len(self.cases)} cases, num_cases is {self.num_cases}")
        _need(self.steps >= 0, f"{where}.steps", "must be >= 0")

    @classmethod
    def from_dict(cls, data: Any, where: str = "metrics") -> "Metrics":
        d = _read(data, where, _METRICS_KEYS)
        return cls(values={k: float(v) for k, v in d["values"].items()}, split=d["split"], num_cases=d["num_cases"],
                   cases=tuple(d["cases"]), sampler=d["sampler"], steps=d["steps"])

    def to_dict(self) -> dict[str, Any]:
        return {"values": dict(self.values), "split": self.split, "num_cases": self.num_cases,
                "cases": list(self.cases), "sampler": self.sampler, "steps": self.steps}


_ENTRY_KEYS = {
    "id": "str", "name": "str", "version": "str", "description": "str", "license": "str", "intended_use": "str",
    "geometry": "object", "resolution": "object", "training_data": "object", "sha256": "str",
    "json_sha256": "str", "size_bytes": "int", "created": "str",
}
_ENTRY_OPTIONAL = {"metrics": "object", "file": "str", "url": "str", "digest": "str"}


@dataclass(frozen=True)
class ModelEntry:
    """One model of the registry (see the module docstring for the JSON form).

    Attributes:
        id: short unique identifier (lower case letters, digits, ``.``, ``_``, ``-``).
        name: display name.
        version: the model's own version string.
        description: one or two sentences for the model list.
        license: licence of the weights (SPDX identifier where possible).
        intended_use: e.g. ``"demonstration only, not for clinical use"``.
        geometry: preset name and hash of the training geometry.
        resolution: volume / radiograph sizes and voxel size.
        training_data: what it was trained on.
        metrics: held-out evaluation, or ``None`` when not evaluated.
        sha256: SHA-256 of the ``.safetensors`` weights.
        json_sha256: SHA-256 of the checkpoint's ``.json`` description.
        digest: the checkpoint's description digest (format 2), or ``None`` for older entries.
        size_bytes: size of the ``.safetensors`` file.
        created: ISO-8601 time the entry was made.
        file: weights path relative to the registry's folder (exclusive with ``url``).
        url: where to download the weights (exclusive with ``file``).
    """

    id: str
    name: str
    version: str
    description: str
    license: str
    intended_use: str
    geometry: GeometryRef
    resolution: Resolution
    training_data: TrainingData
    sha256: str
    json_sha256: str
    size_bytes: int
    created: str
    metrics: Metrics | None = None
    file: str | None = None
    url: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the values (the types are checked when reading JSON); :class:`InputError` if wrong."""
        where = f"model {self.id!r}"
        self._check_types(where)
        _need(bool(_ID_RE.match(self.id)), "id", f"{self.id!r} must be 1-64 of a-z, 0-9, '.', '_', '-' "
                                                       "starting with a letter or digit")
        for key in ("name", "version", "license", "intended_use"):
            _need(bool(str(getattr(self, key)).strip()), f"{where}.{key}", "must not be empty")
        self.geometry.validate(f"{where}.geometry")
        self.resolution.validate(f"{where}.resolution")
        if self.metrics is not None:
            self.metrics.validate(f"{where}.metrics")
        for key in ("sha256", "json_sha256"):
            _need(bool(_SHA256_RE.match(getattr(self, key))), f"{where}.{key}", "must be 64 lower-case hex digits")
        if self.digest is not None:
            _need(bool(_SHA256_RE.match(self.digest)), f"{where}.digest", "must be 64 lower-case hex digits")
        _need(self.size_bytes > 0, f"{where}.size_bytes", "must be positive")
        try:
            _dt.datetime.fromisoformat(self.created.replace("Z", "+00:00"))
        except ValueError:
            raise _fail(f"{where}.created", f"{self.created!r} is not an ISO-8601 time") from None
        _need((self.file is None) != (self.url is None), where, "needs exactly one of 'file' and 'url'")
        if self.file is not None:
            p = PurePosixPath(self.file)
            _need(not p.is_absolute() and ".." not in p.parts and "\\" not in self.file and p.suffix == ".safetensors",
                  f"{where}.file", f"{self.file!r} must be a relative path to a .safetensors file inside the "
                                   "registry's folder, with '/' separators")
        if self.url is not None:
            _need(self.url.startswith(("https://", "http://")) and self.url.endswith(".safetensors"), f"{where}.url",
                  f"{self.url!r} must be an http(s) URL of a .safetensors file")

    def _check_types(self, where: str) -> None:
        """The JSON kinds of every field, also for entries built in Python rather than read from JSON."""
        for key, kind in (("geometry", GeometryRef), ("resolution", Resolution), ("training_data", TrainingData)):
            _need(isinstance(getattr(self, key), kind), f"{where}.{key}", f"must be a {kind.__name__}")
        _need(self.metrics is None or isinstance(self.metrics, Metrics), f"{where}.metrics", "must be Metrics or None")
        d = self.to_dict()
        _read(d, where, _ENTRY_KEYS, _ENTRY_OPTIONAL)
        for key, spec in (("geometry", _GEOMETRY_KEYS), ("resolution", _RESOLUTION_KEYS),
                          ("training_data", _TRAINING_KEYS), ("metrics", _METRICS_KEYS)):
            if d.get(key) is not None:
                _read(d[key], f"{where}.{key}", spec)

    @classmethod
    def from_dict(cls, data: Any, where: str = "model") -> "ModelEntry":
        d = _read(data, where, _ENTRY_KEYS, _ENTRY_OPTIONAL)
        if isinstance(d.get("id"), str):
            where = f"model {d['id']!r}"
        metrics = d.pop("metrics", None)
        return cls(
            **{k: v for k, v in d.items() if k not in ("geometry", "resolution", "training_data")},
            geometry=GeometryRef.from_dict(d["geometry"], f"{where}.geometry"),
            resolution=Resolution.from_dict(d["resolution"], f"{where}.resolution"),
            training_data=TrainingData.from_dict(d["training_data"], f"{where}.training_data"),
            metrics=None if metrics is None else Metrics.from_dict(metrics, f"{where}.metrics"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("file", "url", "digest") and value is None:
                continue
            if isinstance(value, (TrainingData, Metrics)):
                value = value.to_dict()
            elif dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            out[f.name] = value
        return out


# --- the registry ------------------------------------------------------------------------------------
@dataclass
class ModelRegistry:
    """The list of models and the default one (``None`` while no model is registered as default)."""

    models: list[ModelEntry] = field(default_factory=list)
    default: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        seen: set[str] = set()
        for entry in self.models:
            _need(entry.id not in seen, f"model {entry.id!r}", "id is listed twice")
            seen.add(entry.id)
        _need(self.default is None or self.default in seen, "default",
              f"{self.default!r} is not the id of a listed model")

    # --- queries -------------------------------------------------------------------------------
    def ids(self) -> list[str]:
        return [m.id for m in self.models]

    def get(self, model_id: str) -> ModelEntry:
        for entry in self.models:
            if entry.id == model_id:
                return entry
        raise InputError(None, f"no model {model_id!r} in the registry (known: {self.ids() or 'none'})")

    def default_entry(self) -> ModelEntry | None:
        """The default model, or ``None`` when the registry names none (no trained model yet)."""
        return None if self.default is None else self.get(self.default)

    # --- changes -------------------------------------------------------------------------------
    def upsert(self, entry: ModelEntry, make_default: bool = False) -> None:
        """Replace the entry with the same id (keeping its place) or append it; optionally make it the default."""
        entry.validate()
        for i, existing in enumerate(self.models):
            if existing.id == entry.id:
                self.models[i] = entry
                break
        else:
            self.models.append(entry)
        if make_default:
            self.default = entry.id

    # --- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "default": self.default,
                "models": [m.to_dict() for m in self.models]}

    @classmethod
    def from_dict(cls, data: Any) -> "ModelRegistry":
        if isinstance(data, dict) and data.get("format") != FORMAT_NAME:
            raise _fail("format", f"{data.get('format')!r} is not {FORMAT_NAME!r} (not a model registry)")
        d = _read_top(data)
        version = d["format_version"]
        _need(version in READ_VERSIONS, "format_version",
              f"{version} is not supported (this DiffuX2CTLib reads versions {', '.join(map(str, READ_VERSIONS))})")
        models = [ModelEntry.from_dict(m, f"models[{i}]") for i, m in enumerate(d["models"])]
        return cls(models=models, default=d["default"])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the registry as JSON atomically (a reader never sees a half-written file)."""
        self.validate()
        path = Path(path)
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


def _read_top(data: Any) -> dict[str, Any]:
    """The top-level object: format, format_version, default (string or null) and the models list."""
    if not isinstance(data, dict):
        raise _fail("", f"a model registry must be a JSON object, got {_type_name(data)}")
    models = data.get("models")
    if "models" in data and not isinstance(models, list):
        raise _fail("models", f"must be a list, got {_type_name(models)}")
    rest = {k: v for k, v in data.items() if k != "models"}
    d = _read(rest, "", {"format": "str", "format_version": "int"}, {"default": "str"})
    _need("default" in data, "", "missing key 'default' (null when there is no default model)")
    _need("models" in data, "", "missing key 'models'")
    d["models"] = models
    d["default"] = data["default"]
    return d


def load_registry(path: str | os.PathLike) -> ModelRegistry:
    """Read and validate a registry file; any problem is one :class:`InputError` line naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "model registry not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the model registry ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    try:
        return ModelRegistry.from_dict(data)
    except InputError as exc:
        raise InputError(path, exc.problem) from None


# --- files -------------------------------------------------------------------------------------------
def resolve_file(entry: ModelEntry, registry_path: str | os.PathLike) -> Path:
    """Where the weights of ``entry`` are (``file`` entries) or are to be downloaded to (``url`` entries:
    ``<cache>/models/<sha256[:16]>/<name>``; downloading is not this module's job).
    The checkpoint's JSON is the same path with the suffix ``.json``."""
    if entry.file is not None:
        return Path(registry_path).resolve().parent / PurePosixPath(entry.file)
    assert entry.url is not None
    name = PurePosixPath(entry.url.split("?", 1)[0]).name
    return default_cache_dir() / "models" / entry.sha256[:16] / name


def verify(entry: ModelEntry, registry_path: str | os.PathLike) -> Path:
    """Check the weights (size and SHA-256) and the checkpoint JSON (SHA-256) of ``entry``; return the weights path.

    Raises :class:`~DiffuX2CTLib.errors.CheckpointError` naming the file when it is missing or differs.
    """
    weights = resolve_file(entry, registry_path)
    json_path = weights.with_suffix(".json")
    for p in (weights, json_path):
        if not p.is_file():
            hint = f" (download it from {entry.url})" if entry.url and p == weights else ""
            raise CheckpointError(p, f"file of model {entry.id!r} not found{hint}")
    size = weights.stat().st_size
    if size != entry.size_bytes:
        raise CheckpointError(weights, f"has {size} bytes, the registry records {entry.size_bytes} for model "
                                       f"{entry.id!r} (truncated or replaced)")
    for p, expected in ((weights, entry.sha256), (json_path, entry.json_sha256)):
        actual = sha256_file(p)
        if actual != expected:
            raise CheckpointError(p, f"SHA-256 {actual[:12]}... does not match {expected[:12]}... recorded for "
                                     f"model {entry.id!r} in the registry (corrupted or replaced)")
    if entry.digest is not None:
        try:
            recorded = json.loads(json_path.read_text(encoding="utf-8")).get("digest")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded != entry.digest:
            raise CheckpointError(json_path, f"its digest {str(recorded)[:12]}... is not the {entry.digest[:12]}... "
                                             f"recorded for model {entry.id!r} in the registry")
    return weights


def default_registry_path() -> Path:
    """``Resources/Models.json`` of this checkout."""
    return Path(__file__).resolve().parents[1] / "Resources" / "Models.json"


__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "READ_VERSIONS", "GeometryRef", "Metrics", "ModelEntry", "ModelRegistry", "Resolution",
    "TrainingData", "default_registry_path", "load_registry", "resolve_file", "verify",
]
