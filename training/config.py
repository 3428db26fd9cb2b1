"""Training configuration: YAML files validated into typed dataclasses.

A config file has the sections of :class:`TrainConfig`; every key is checked against the
dataclass fields and their types, so a misspelt key or a value of the wrong type is an error
naming the key (``config key 'optim.lr': expected a number, got 'fast'``). Values can be
overridden from the command line with ``--set optim.lr=1e-4`` (the value is read as YAML).

The ``network``, ``diffusion`` and ``intensity`` sections are the library's own
:class:`~DiffuX2CTLib.network.NetworkConfig`, :class:`~DiffuX2CTLib.diffusion.DiffusionConfig`
and :class:`~DiffuX2CTLib.io.intensity.CTIntensity` fields; ``network.preset`` starts from
``NetworkConfig.tiny()/small()/paper()`` or the CPU ``demo`` network, and ``volume_size`` /
``xray_size`` default to the geometry's.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from DiffuX2CTLib.diffusion.config import DEFAULT_SAMPLER, SAMPLERS, DiffusionConfig
from DiffuX2CTLib.errors import InputError
from DiffuX2CTLib.geometry import PRESETS, BiplanarGeometry
from DiffuX2CTLib.io.intensity import CTIntensity
from DiffuX2CTLib.network.config import NetworkConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class GeometryConfig:
    """The biplanar geometry: a preset sampled on ``volume_size^3`` voxels and ``xray_size^2``
    detector pixels, or a geometry JSON file (``file``; sizes then resample it if given)."""

    preset: str | None = "x2ct"
    file: str | None = None
    volume_size: int | None = None
    xray_size: int | None = None

    def build(self) -> BiplanarGeometry:
        if (self.preset is None) == (self.file is None):
            raise InputError(None, "config key 'geometry': give exactly one of 'preset' and 'file'")
        if self.file is not None:
            from DiffuX2CTLib.cli import load_geometry

            return load_geometry(self.file, self.volume_size, self.xray_size)
        if self.preset not in PRESETS:
            raise InputError(None, f"config key 'geometry.preset': unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        size = self.volume_size or 128
        return BiplanarGeometry.preset(self.preset, volume_size=size, xray_size=self.xray_size or size)


@dataclass(frozen=True)
class DataConfig:
    """Where the prepared cache is and how batches are drawn.

    Attributes:
        cache: folder written by ``python -m training.prepare_data`` (relative paths are taken
            from the current directory).
        train_split, val_split: manifest splits to train and validate on.
        batch_size: global batch (divided evenly over the DDP processes).
        num_workers: DataLoader worker processes per training process (0 = in-process).
        cache_rate: fraction of the training volumes MONAI's CacheDataset keeps in memory.
        val_cases: size of the fixed validation subset (the first cases of ``val_split``).
        xray_supersample: DRRs are rendered on a detector this many times finer per side and
            average-pooled (the detector integrates over its pixel area, as real panels do).
    """

    cache: str = "data/cache"
    train_split: str = "train"
    val_split: str = "val"
    batch_size: int = 4
    num_workers: int = 2
    cache_rate: float = 1.0
    val_cases: int = 4
    xray_supersample: int = 4


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation of the training volumes; the radiographs are always rendered from
    the augmented volume with the DRR projector, so both stay consistent.

    Attributes:
        enabled: switch all augmentation off.
        prob: probability that a volume gets the random affine.
        rotate_deg: maximum rotation about each axis (degrees).
        scale: maximum relative isotropic scaling (0.05 = +-5%).
        shift_mm: maximum translation along each axis (mm).
        intensity: maximum relative density change of non-air voxels, ``hu' = (hu + 1000)(1 + a) - 1000``.
        film_prob: probability that a sample's radiographs are simulated films read back through
            the inference reader instead of clean DRRs (``training.xray_augment``; 0 = off).
        film_strength: how far the film settings are drawn from the default film, in [0, 1].
        film_png_fraction: share of the films stored as 8-bit display PNGs (the rest: DX DICOM).
        magnification: maximum relative magnification jitter of the films (0.05 = +-5%).
        xray_shift_mm: maximum in-plane shift of the films per axis (mm at the detector).
        xray_rotate_deg: maximum in-plane rotation of the films (degrees).
    """

    enabled: bool = True
    prob: float = 0.8
    rotate_deg: float = 5.0
    scale: float = 0.05
    shift_mm: float = 10.0
    intensity: float = 0.03
    film_prob: float = 0.0
    film_strength: float = 1.0
    film_png_fraction: float = 0.25
    magnification: float = 0.05
    xray_shift_mm: float = 5.0
    xray_rotate_deg: float = 2.0


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and cosine decay to ``min_lr_ratio * lr``; gradient clipping."""

    lr: float = 2e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 500
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0


@dataclass(frozen=True)
class EMAConfig:
    """Exponential moving average of the weights: ``decay`` with the usual warm-up
    ``min(decay, (1 + step) / (10 + step))``; ``start_step`` before which EMA copies the weights."""

    decay: float = 0.999
    start_step: int = 0


@dataclass(frozen=True)
class RunConfig:
    """The training loop.

    Attributes:
        max_steps: optimiser steps in total.
        seed: seeds the initial weights, the data order and all per-sample randomness.
        device: ``auto``, ``cpu``, ``cuda`` (DDP ranks use ``cuda:LOCAL_RANK``).
        bf16: bfloat16 autocast (CUDA, or a CPU: fast with AVX512-BF16 or AMX hardware, emulated and
            slower than fp32 without).
        activation_checkpointing: recompute block activations in backward (less memory).
        compile: ``torch.compile`` the network.
        threads: torch CPU threads per process (0 = torch's default).
        log_every: steps between log lines (CSV, TensorBoard, progress bar).
        val_every: steps between validations on the fixed subset (0 = never).
        val_sampler, val_steps: the fast sampler used for validation.
        checkpoint_every: steps between training checkpoints (0 = only at the end).
        keep_last: training checkpoints kept besides ``best``.
        best_metric: validation metric selecting ``best`` (``ssim3d``, ``psnr_db``, ``mae_hu``).
        init_from: an inference checkpoint (``NAME.safetensors`` with its JSON, e.g. an exported
            model) whose weights start a new run (fine-tuning); its network and geometry must
            match the config's. Ignored when the run resumes from its own checkpoints.
    """

    max_steps: int = 10000
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    activation_checkpointing: bool = False
    compile: bool = False
    threads: int = 0
    log_every: int = 10
    val_every: int = 1000
    val_sampler: str = DEFAULT_SAMPLER
    val_steps: int = 10
    checkpoint_every: int = 1000
    keep_last: int = 3
    best_metric: str = "ssim3d"
    init_from: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run (see the YAML files in ``training/configs``).

    Attributes:
        name: a label (logs, exported model).
        run_dir: where checkpoints and logs go.
        objective: ``diffusion`` (DiffuX2CT) or ``regression`` (the direct-regression baseline).
    """

    name: str = "run"
    run_dir: str = "runs/run"
    objective: str = "diffusion"
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    network: dict[str, Any] = field(default_factory=dict)
    diffusion: dict[str, Any] = field(default_factory=dict)
    intensity: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    train: RunConfig = field(default_factory=RunConfig)

    # --- the library objects this config describes --------------------------------------
    def build_geometry(self) -> BiplanarGeometry:
        return self.geometry.build()

    def build_network_config(self, geometry: BiplanarGeometry | None = None) -> NetworkConfig:
        geometry = geometry or self.build_geometry()
        fields = dict(self.network)
        preset = fields.pop("preset", None)
        base = network_preset(preset).to_dict() if preset is not None else NetworkConfig().to_dict()
        base.update(volume_size=geometry.volume_shape[0], xray_size=geometry.detector_shape[0])
        base.update(fields)
        base["use_checkpointing"] = bool(self.train.activation_checkpointing or base.get("use_checkpointing", False))
        try:
            return NetworkConfig.from_dict(base)
        except InputError as exc:
            raise InputError(None, f"config section 'network': {exc.problem}") from exc

    def build_diffusion_config(self) -> DiffusionConfig:
        try:
            return DiffusionConfig.from_dict(self.diffusion)
        except InputError as exc:
            raise InputError(None, f"config section 'diffusion': {exc.problem}") from exc

    def build_intensity(self) -> CTIntensity:
        try:
            return CTIntensity.from_dict(self.intensity)
        except InputError as exc:
            raise InputError(None, f"config section 'intensity': {exc.problem}") from exc

    def validate(self) -> "TrainConfig":
        """Check value ranges and that the library configs build; returns ``self``."""
        def need(ok: bool, key: str, problem: str) -> None:
            if not ok:
                raise InputError(None, f"config key {key!r}: {problem}")

        need(self.objective in ("diffusion", "regression"), "objective", f"must be 'diffusion' or 'regression', got {self.objective!r}")
        d, o, r, a = self.data, self.optim, self.train, self.augment
        need(d.batch_size >= 1, "data.batch_size", "must be >= 1")
        need(d.num_workers >= 0, "data.num_workers", "must be >= 0")
        need(0.0 <= d.cache_rate <= 1.0, "data.cache_rate", "must be in [0, 1]")
        need(d.val_cases >= 0, "data.val_cases", "must be >= 0")
        need(d.xray_supersample >= 1, "data.xray_supersample", "must be >= 1")
        need(o.lr > 0, "optim.lr", "must be positive")
        need(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
        need(all(0 <= b < 1 for b in o.betas), "optim.betas", "must be two numbers in [0, 1)")
        need(o.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
        need(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", "must be in [0, 1]")
        need(o.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 = no clipping)")
        need(0 <= self.ema.decay < 1, "ema.decay", "must be in [0, 1)")
        need(r.max_steps >= 1, "train.max_steps", "must be >= 1")
        need(r.seed >= 0, "train.seed", "must be >= 0")
        need(r.device == "auto" or r.device.split(":")[0] in ("cpu", "cuda", "mps"), "train.device",
             f"must be auto, cpu, cuda or cuda:N, got {r.device!r}")
        for key in ("log_every", "val_every", "checkpoint_every", "threads"):
            need(getattr(r, key) >= 0, f"train.{key}", "must be >= 0")
        need(r.keep_last >= 1, "train.keep_last", "must be >= 1")
        need(r.val_sampler in SAMPLERS, "train.val_sampler", f"must be one of {', '.join(SAMPLERS)}")
        need(r.val_steps >= 1, "train.val_steps", "must be >= 1")
        need(r.best_metric in BEST_METRICS, "train.best_metric", f"must be one of {sorted(BEST_METRICS)}")
        for key in ("prob", "film_prob", "film_strength", "film_png_fraction"):
            need(0 <= getattr(a, key) <= 1, f"augment.{key}", "must be in [0, 1]")
        need(a.magnification < 0.5, "augment.magnification", "must be below 0.5")
        for key in ("rotate_deg", "scale", "shift_mm", "intensity", "magnification", "xray_shift_mm", "xray_rotate_deg"):
            need(getattr(a, key) >= 0, f"augment.{key}", "must be >= 0")
        geometry = self.build_geometry()
        self.build_network_config(geometry)
        self.build_diffusion_config()
        self.build_intensity()
        return self

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


#: validation metric -> True when larger is better
BEST_METRICS = {"ssim3d": True, "psnr_db": True, "mae_hu": False}


def demo_network() -> NetworkConfig:
    """A CPU-trainable network (about 2.3 M parameters at 32^3): three U-Net levels of 16, 32 and
    64 channels, window attention at the two coarser levels, 16-channel tri-planes."""
    return NetworkConfig(
        volume_size=32, xray_size=32, base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1,
        attention_levels=(False, True, True), window_size=4, num_heads=4, swin_depth=2, norm_num_groups=8,
        condition_channels=8, triplane_channels=16, xray_encoder_channels=(16, 32, 64), triplane_heads=4,
        fourier_frequencies=4, decoder_width=32, decoder_depth=2, decoder_chunk_size=65536,
    )


def network_preset(name: str) -> NetworkConfig:
    presets = {"tiny": NetworkConfig.tiny, "small": NetworkConfig.small, "paper": NetworkConfig.paper, "demo": demo_network}
    if name not in presets:
        raise InputError(None, f"config key 'network.preset': unknown preset {name!r}; choose one of {sorted(presets)}")
    return presets[name]()


# --- generic strict conversion of mappings into dataclasses ----------------------------------
def _type_name(kind: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(kind, getattr(kind, "__name__", str(kind)))


def _convert(value: Any, kind: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key)
            except InputError as exc:
                errors.append(exc)
        raise errors[0]
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, Mapping):
            raise InputError(None, f"config key {key!r}: expected a mapping, got {value!r}")
        return from_mapping(kind, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(None, f"config key {key!r}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise InputError(None, f"config key {key!r}: expected {len(args)} entries, got {len(value)}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict or kind is dict:
        if not isinstance(value, Mapping):
            raise InputError(None, f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise InputError(None, f"config key {key!r}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(None, f"config key {key!r}: expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(None, f"config key {key!r}: expected a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise InputError(None, f"config key {key!r}: expected a string, got {value!r}")
        return value
    raise InputError(None, f"config key {key!r}: unsupported type {kind!r}")  # pragma: no cover


def from_mapping(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, strictly: unknown keys and wrong types name the key."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise InputError(None, f"unknown config key {where!r} (known: {', '.join(names)})")
    values = {}
    for name in names:
        if name in data:
            values[name] = _convert(data[name], hints[name], f"{prefix}.{name}" if prefix else name)
    return cls(**values)


def _check_library_section(section: str, cls: type, data: Mapping[str, Any], extra: tuple[str, ...] = ()) -> None:
    """Keys and types of a library-config section (``network``, ``diffusion``, ``intensity``)."""
    if not isinstance(data, Mapping):
        raise InputError(None, f"config key {section!r}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key in extra:
            continue
        if key not in hints:
            raise InputError(None, f"unknown config key '{section}.{key}' (known: {', '.join(list(extra) + sorted(hints))})")
        _convert(value, hints[key], f"{section}.{key}")


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def _yaml_load(text: str) -> Any:
    """``yaml.safe_load``, except that ``1e-4`` is a number as in JSON (YAML 1.1 wants ``1.0e-4``)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
    return yaml.load(text, Loader=Loader)  # noqa: S506 -- a SafeLoader subclass


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values read as YAML) to a nested mapping, in place."""

    for item in overrides:
        if "=" not in item:
            raise InputError(None, f"--set needs key=value, got {item!r}")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise InputError(None, f"--set has an empty key in {item!r}")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InputError(None, f"--set {key}: {part!r} is not a section")
            node = child
        node[parts[-1]] = _yaml_load(text)
    return data


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Validate a plain mapping into a :class:`TrainConfig` (the YAML file's content)."""
    if not isinstance(data, Mapping):
        raise InputError(None, "a training config must be a mapping of sections")
    _check_library_section("network", NetworkConfig, data.get("network", {}), extra=("preset",))
    _check_library_section("diffusion", DiffusionConfig, data.get("diffusion", {}))
    _check_library_section("intensity", CTIntensity, data.get("intensity", {}))
    return from_mapping(TrainConfig, data).validate()


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """A config file path, or the name of a bundled config (``paper``, ``clinical``, ``demo``)."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") and (CONFIG_DIR / f"{name_or_path}.yaml").is_file():
        return CONFIG_DIR / f"{name_or_path}.yaml"
    return path


def load_config(name_or_path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (or a bundled one by name), apply ``--set`` overrides and validate."""
    import yaml

    path = resolve_config_path(name_or_path)
    if not path.is_file():
        raise InputError(path, "config file not found (bundled configs: "
                               f"{', '.join(sorted(p.stem for p in CONFIG_DIR.glob('*.yaml')))})")
    try:
        data = _yaml_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot read YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise InputError(path, "a training config must be a mapping of sections")
    try:
        return config_from_dict(apply_overrides(data, list(overrides or [])))
    except InputError as exc:
        raise InputError(path, exc.problem) from exc


__all__ = [
    "AugmentConfig", "BEST_METRICS", "DataConfig", "EMAConfig", "GeometryConfig", "OptimConfig", "RunConfig",
    "TrainConfig", "apply_overrides", "config_from_dict", "demo_network", "from_mapping", "load_config",
    "network_preset", "resolve_config_path",
]
