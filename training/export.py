"""Export a training checkpoint as an inference checkpoint and register it in the model registry.

    python -m training.export --checkpoint RUN_OR_CKPT_DIR [--which best|last]
        --out Resources/Models/NAME.safetensors --id ID --name NAME --model-version V --license L
        --description TEXT --training-data TEXT [--dataset NAME ...] [--intended-use TEXT]
        [--metrics summary.json] [--registry Resources/Models.json] [--default] [--url URL]

Steps: the EMA weights and description come from :func:`training.state.inference_parts`; they
are written as ``NAME.safetensors`` + ``NAME.json`` with
:func:`DiffuX2CTLib.checkpoint.save_checkpoint` (the description's ``training`` summary gains an
``export`` record); the pair is loaded back with ``load_checkpoint``; then the registry entry
(SHA-256 of both files, the description's digest, size, path relative to the registry's folder,
or ``--url``) is upserted and the registry rewritten atomically. ``--metrics`` copies the means of a
``training/evaluate.py`` ``summary.json`` (with its split, cases, sampler and steps) into the
entry. Any error: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from DiffuX2CTLib.errors import DiffuX2CTError, InputError, error_line

DEFAULT_INTENDED_USE = "research and demonstration only, not for clinical use"


def metrics_from_summary(path: Path, geometry_hash: str | None = None):
    """A registry :class:`~DiffuX2CTLib.registry.Metrics` from ``training/evaluate.py``'s ``summary.json``.

    Values are the per-metric means (non-finite ones, stored as null, are left out) plus a
    top-level ``fid_alexnet`` when present. A summary of another geometry is refused.
    """
    from DiffuX2CTLib.registry import Metrics

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "metrics summary not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read the metrics summary ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise InputError(path, "not a training/evaluate.py summary.json (no 'metrics' object)")
    recorded = data.get("geometry_hash")
    if geometry_hash is not None and recorded is not None and recorded != geometry_hash:
        raise InputError(path, f"metrics were computed for geometry {recorded}, the model's is {geometry_hash}")
    values: dict[str, float] = {}
    for name, stats in data["metrics"].items():
        mean = stats.get("mean") if isinstance(stats, dict) else stats
        if isinstance(mean, (int, float)) and not isinstance(mean, bool) and math.isfinite(mean):
            values[str(name)] = float(mean)
    fid = data.get("fid_alexnet")
    if isinstance(fid, (int, float)) and not isinstance(fid, bool) and math.isfinite(fid):
        values["fid_alexnet"] = float(fid)
    cases = [str(c) for c in data.get("case_ids", [])]
    try:
        return Metrics(values=values, split=str(data.get("split", "")), num_cases=int(data.get("num_cases", len(cases))),
                       cases=tuple(cases), sampler=str(data.get("sampler", "")), steps=int(data.get("steps", 0)))
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"invalid metrics summary ({exc})") from None


def _relative_file(weights: Path, registry_path: Path) -> str:
    folder = registry_path.resolve().parent
    try:
        return weights.resolve().relative_to(folder).as_posix()
    except ValueError:
        raise InputError(weights, f"is not inside the registry's folder {folder}; write it there or give --url") from None


def export(args: argparse.Namespace) -> dict[str, Any]:
    """Do the export; returns a summary (paths, id, SHA-256)."""
    from DiffuX2CTLib.checkpoint import checkpoint_paths, load_checkpoint, save_checkpoint
    from DiffuX2CTLib.io.files import sha256_file
    from DiffuX2CTLib.registry import (GeometryRef, ModelEntry, ModelRegistry, Resolution, TrainingData,
                                       load_registry, verify)

    from . import state

    weights_path, json_path = checkpoint_paths(args.out)
    if args.out.suffix != ".safetensors":
        raise InputError(args.out, "--out must be NAME.safetensors")
    registry_path: Path = args.registry
    registry = load_registry(registry_path) if registry_path.exists() else ModelRegistry()
    file_rel = None if args.url else _relative_file(weights_path, registry_path)

    tensors, info = state.inference_parts(args.checkpoint, args.which)
    metrics = None if args.metrics is None else metrics_from_summary(args.metrics, info.geometry.hash)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    spacing = info.geometry.volume_spacing_mm

    def entry(sha: str, json_sha: str, size: int, digest: str | None = None) -> ModelEntry:
        return ModelEntry(
            id=args.id, name=args.name, version=args.model_version, description=args.description,
            license=args.license, intended_use=args.intended_use,
            geometry=GeometryRef(preset=info.geometry.name, hash=info.geometry.hash),
            resolution=Resolution(volume_size=info.network.volume_size, xray_size=info.network.xray_size,
                                  voxel_mm=float(max(spacing))),
            training_data=TrainingData(description=args.training_data, datasets=tuple(args.dataset)),
            metrics=metrics, sha256=sha, json_sha256=json_sha, size_bytes=size, created=now,
            file=file_rel, url=args.url, digest=digest,
        )

    entry("0" * 64, "0" * 64, 1)  # validate the metadata before writing anything
    info.license = args.license
    info.created = ""
    info.training = {**dict(info.training), "data_description": args.training_data,
                     "export": {"source": str(args.checkpoint), "which": args.which, "id": args.id,
                                "model_version": args.model_version, "exported": now,
                                "metrics": None if metrics is None else metrics.to_dict()}}
    save_checkpoint(weights_path, tensors, info)
    loaded = load_checkpoint(weights_path)  # the written pair loads (digest, hash, names, shapes, dtypes)

    final = entry(sha256_file(weights_path), sha256_file(json_path), weights_path.stat().st_size, loaded.info.digest)
    registry.upsert(final, make_default=args.default)
    registry.save(registry_path)
    if final.file is not None:
        verify(final, registry_path)
    return {"id": final.id, "weights": str(weights_path), "json": str(json_path), "sha256": final.sha256,
            "size_bytes": final.size_bytes, "registry": str(registry_path), "default": registry.default}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="training-checkpoint folder or run folder")
    p.add_argument("--which", default="best", choices=["best", "last"], help="for a run folder (default best)")
    p.add_argument("--out", required=True, type=Path, help="NAME.safetensors (NAME.json is written beside it)")
    p.add_argument("--id", required=True, help="registry id (a-z, 0-9, '.', '_', '-')")
    p.add_argument("--name", required=True, help="display name")
    p.add_argument("--model-version", required=True, help="the model's version string")
    p.add_argument("--license", required=True, help="licence of the weights (SPDX id)")
    p.add_argument("--description", required=True, help="one or two sentences")
    p.add_argument("--training-data", required=True, help="what it was trained on (free text)")
    p.add_argument("--dataset", action="append", default=[], help="a dataset or scan used (repeatable)")
    p.add_argument("--intended-use", default=DEFAULT_INTENDED_USE, help=f"default: {DEFAULT_INTENDED_USE!r}")
    p.add_argument("--metrics", type=Path, default=None, help="summary.json of training/evaluate.py")
    p.add_argument("--registry", type=Path, default=Path("Resources/Models.json"), help="registry file to update")
    p.add_argument("--default", action="store_true", help="make this the registry's default model")
    p.add_argument("--url", default=None, help="download URL of the weights (the entry then has no 'file')")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = export(args)
    except (DiffuX2CTError, OSError) as exc:
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
