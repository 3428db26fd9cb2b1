"""Evaluate a checkpoint on a split of the prepared-data cache.

    python -m training.evaluate --checkpoint PATH --cache CACHE --out DIR [--split test]
        [--cases id1,id2] [--limit N] [--sampler dpmsolver++-sde] [--steps 25] [--num-samples 1]
        [--seed 0] [--batch-size 4] [--device auto] [--bone-threshold 200]
        [--lpips-weights F.safetensors] [--fid-weights F.safetensors] [--save-predictions]

For every case the model reconstructs the CT from the cached DRRs (normalised as real X-rays
are), and :func:`training.metrics.case_metrics` compares it with the cached CT. With
``--num-samples`` > 1 (diffusion) the metrics are those of the sample mean, plus the
uncertainty metrics of the per-voxel sample std.

Outputs (each written atomically): ``DIR/per_case.csv`` (one row per case: metrics and
``seconds``, the sampling time per case), ``DIR/summary.json`` (mean and std over cases of
every metric, with the data ranges and settings spelled out), ``DIR/montage.png`` (worst,
median and best case by ``ssim3d``: truth above prediction, axial / coronal / sagittal) and, with
``--save-predictions``, ``DIR/predictions/<case>.nii.gz`` on the model grid. Bad input: one
line naming the file, exit status 2.

:func:`evaluate` does the same in-process without writing files (for the learning benchmark).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from DiffuX2CTLib.diffusion.config import DEFAULT_SAMPLER, SAMPLERS
from DiffuX2CTLib.errors import DiffuX2CTError, InputError
from DiffuX2CTLib.io.atomic import atomic_file

from . import metrics as M
from .cache import MANIFEST_NAME, CacheManifest, CaseRecord, read_case_line_integrals, read_case_volume
from .perceptual import SKIP_MESSAGE, PerceptualMetrics, case_values
from .state import load_model

#: Metric columns in report order (absent ones are left out).
METRIC_ORDER = ("psnr_db", "psnr_x2ct_db", "ssim3d", "ssim2d_slices", "mae_hu", "rmse_hu", "bone_dice",
                "proj_mae", "proj_rel_l2", "unc_pearson", "unc_spearman", "coverage_2sigma", "lpips", "seconds")


@dataclass
class CaseResult:
    """One evaluated case, handed to ``on_case``: HU volumes ``(D, H, W)`` on the model grid."""

    record: CaseRecord
    pred_hu: np.ndarray
    target_hu: np.ndarray
    std_hu: np.ndarray | None
    metrics: dict[str, float] = field(default_factory=dict)


def select_cases(manifest: CacheManifest, split: str, case_ids: Sequence[str] | None = None,
                 limit: int | None = None, cache_dir: str | Path | None = None) -> list[CaseRecord]:
    """Cases of ``split`` (or exactly ``case_ids``, which must be in that split), at most ``limit``."""
    in_split = manifest.cases_in(split)
    if case_ids:
        by_id = {c.case_id: c for c in in_split}
        missing = [c for c in case_ids if c not in by_id]
        if missing:
            where = None if cache_dir is None else Path(cache_dir) / MANIFEST_NAME
            raise InputError(where, f"cases not in split {split!r}: {', '.join(missing[:5])}")
        chosen = [by_id[c] for c in case_ids]
    else:
        chosen = in_split
    if limit is not None:
        chosen = chosen[:max(0, int(limit))]
    if not chosen:
        raise InputError(None if cache_dir is None else Path(cache_dir) / MANIFEST_NAME,
                         f"no cases to evaluate in split {split!r}")
    return chosen


def _check_geometry(manifest: CacheManifest, info: Any, cache_dir: str | Path) -> None:
    if manifest.geometry.hash != info.geometry.hash:
        g, c = info.geometry, manifest.geometry
        raise InputError(Path(cache_dir) / MANIFEST_NAME,
                         f"cache geometry {c.hash} (volume {tuple(c.volume_shape)}, detector {tuple(c.detector_shape)}) "
                         f"differs from the checkpoint's {g.hash} (volume {tuple(g.volume_shape)}, detector "
                         f"{tuple(g.detector_shape)}); prepare the cache with the checkpoint's geometry")


def _stats(values: list[float]) -> dict[str, float | int]:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    n = len(finite)
    mean = float(np.mean(finite)) if n else float("nan")
    std = float(np.std(finite, ddof=1)) if n > 1 else (0.0 if n == 1 else float("nan"))
    return {"mean": mean, "std": std, "count": n}


def summarize(rows: list[dict[str, Any]], **facts: Any) -> dict[str, Any]:
    """Mean, sample std (ddof 1) and count of finite values per metric column, plus ``facts``."""
    keys = [k for k in METRIC_ORDER if any(k in r for r in rows)]
    return {**facts, "num_cases": len(rows), "metrics": {k: _stats([r.get(k, float("nan")) for r in rows]) for k in keys}}


def evaluate(
    model: Any,
    info: Any,
    objective: str,
    cache_dir: str | Path,
    cases: Sequence[str | CaseRecord] | None = None,
    *,
    split: str = "test",
    sampler: str = DEFAULT_SAMPLER,
    steps: int = 25,
    num_samples: int = 1,
    seed: int = 0,
    batch_size: int = 4,
    device: Any = None,
    bone_threshold_hu: float = M.BONE_THRESHOLD_HU,
    perceptual: PerceptualMetrics | None = None,
    projector: Any = None,
    on_case: Callable[[CaseResult], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    checkpoint: str = "",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Reconstruct and score ``cases`` (ids or records; ``None`` = the whole ``split``).

    ``model`` is in eval mode on ``device`` (default: the device of its parameters); ``info`` a
    :class:`~DiffuX2CTLib.checkpoint.CheckpointInfo`. The noise of each batch is seeded from
    ``seed`` and the batch's case ids, so results depend on ``batch_size``. Returns one row per
    case (``case_id``, metrics, ``seconds`` = sampling time per case) and the summary (no files).
    """
    import torch

    from .objective import predict_volumes, sample_seed
    from .render import RadiographRenderer

    manifest = CacheManifest.load(cache_dir)
    _check_geometry(manifest, info, cache_dir)
    if cases is None:
        records = manifest.cases_in(split)
    else:
        known = {c.case_id: c for c in manifest.cases}
        unknown = [c for c in cases if not isinstance(c, CaseRecord) and c not in known]
        if unknown:
            raise InputError(Path(cache_dir) / MANIFEST_NAME, f"unknown cases {', '.join(map(str, unknown[:5]))}")
        records = [c if isinstance(c, CaseRecord) else known[c] for c in cases]
    if not records:
        raise InputError(Path(cache_dir) / MANIFEST_NAME, f"no cases to evaluate (split {split!r})")
    if batch_size < 1 or steps < 1 or num_samples < 1:
        raise InputError(None, "batch size, steps and number of samples must be at least 1")
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    if projector is None:  # renders the prediction exactly as the input DRRs were rendered
        projector = RadiographRenderer(info.geometry, manifest.xray_supersample,
                                       manifest.mu_water_per_mm, info.xray_normalization)
    intensity = info.intensity
    rows: list[dict[str, Any]] = []
    for start in range(0, len(records), batch_size):
        batch = records[start:start + batch_size]
        line_integrals = [read_case_line_integrals(cache_dir, r, info.geometry) for r in batch]
        xrays = np.stack([info.xray_normalization.normalize_numpy(li) for li in line_integrals])
        began = time.perf_counter()
        volumes = predict_volumes(model, torch.from_numpy(xrays).to(device), objective, info.diffusion,
                                  sampler=sampler, steps=steps, num_samples=num_samples,
                                  seed=sample_seed(seed, *[r.case_id for r in batch]))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = (time.perf_counter() - began) / len(batch)
        hu = intensity.denormalize(volumes.float().cpu().numpy())  # (B, S, D, H, W), clipped to the window
        for i, record in enumerate(batch):
            target = read_case_volume(cache_dir, record)
            pred = hu[i].mean(axis=0)
            std = hu[i].std(axis=0) if (num_samples > 1 and objective == "diffusion") else None
            values = M.case_metrics(pred, target, intensity=intensity, projector=projector,
                                    input_line_integrals=line_integrals[i], normalization=info.xray_normalization,
                                    std_hu=std, bone_threshold_hu=bone_threshold_hu)
            values.update(case_values(perceptual, pred, target))
            row = {"case_id": record.case_id, **values, "seconds": seconds}
            rows.append(row)
            if on_case is not None:
                on_case(CaseResult(record, pred, target, std, values))
            if progress is not None:
                progress(len(rows), len(records))
    span = intensity.hu_max - intensity.hu_min
    facts: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "cache": str(cache_dir),
        "split": split,
        "case_ids": [r.case_id for r in records],
        "objective": objective,
        "sampler": sampler if objective == "diffusion" else "none (regression: one forward pass)",
        "steps": steps if objective == "diffusion" else 1,
        "num_samples": num_samples,
        "seed": seed,
        "batch_size": batch_size,
        "trained": bool(getattr(info, "trained", True)),
        "geometry_hash": info.geometry.hash,
        "psnr_data_range": M.PSNR_DATA_RANGE_TEXT.format(lo=intensity.hu_min, hi=intensity.hu_max, span=span),
        "psnr_x2ct_convention": M.PSNR_X2CT_TEXT,
        "psnr_cap_db": M.PSNR_CAP_DB,
        "ssim_data_range": f"window [{intensity.hu_min:g}, {intensity.hu_max:g}] HU mapped to [0, 1]",
        "mae_rmse_range": f"HU after clipping both volumes to [{intensity.hu_min:g}, {intensity.hu_max:g}]",
        "bone_threshold_hu": float(bone_threshold_hu),
        "projection": "proj_mae: mean |normalised DRR of prediction - normalised input view| in [-1, 1] units; "
                      "proj_rel_l2: relative L2 of line integrals",
        "prediction": "mean of the samples" if num_samples > 1 else "single sample",
        "std": "sample std over cases (ddof 1)",
    }
    if perceptual is not None and perceptual.fid_net is not None:
        facts["fid_alexnet"] = perceptual.fid()
        facts["fid_note"] = ("Frechet distance of average-pooled AlexNet conv5 features of all axial, coronal and "
                             "sagittal slices; not Inception FID, comparable only within this tool and weight file")
    if perceptual is None or not perceptual.enabled:
        facts["perceptual"] = "skipped (no --lpips-weights/--fid-weights)"
    return rows, summarize(rows, **facts)


# --- outputs ------------------------------------------------------------------------------
def _planes(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d, h, w = volume.shape
    return volume[d // 2].copy(), volume[:, h // 2, :].copy(), volume[:, :, w // 2].copy()


def _from_planes(planes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """A volume whose central axial, coronal and sagittal planes are ``planes`` (air elsewhere):
    all that :func:`DiffuX2CTLib.demo.save_montage` shows."""
    axial, coronal, sagittal = planes
    d, w = coronal.shape
    h = axial.shape[0]
    v = np.full((d, h, w), -1024.0, np.float32)
    v[d // 2], v[:, h // 2, :], v[:, :, w // 2] = axial, coronal, sagittal
    return v


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys = ["case_id"] + [k for k in METRIC_ORDER if any(k in r for r in rows)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k, "")) for k in keys})
    with atomic_file(path) as tmp:
        tmp.write_text(buf.getvalue())


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """``summary.json``; non-finite numbers become ``null``."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(summary), indent=2))


def write_montage(path: Path, rows: list[dict[str, Any]], planes: dict[str, tuple[Any, Any]]) -> None:
    """Worst, median and best case by ``ssim3d``: a truth row and a prediction row each."""
    from DiffuX2CTLib.demo import save_montage

    ranked = sorted(rows, key=lambda r: (r.get("ssim3d", float("nan")) if math.isfinite(r.get("ssim3d", float("nan")))
                                         else -math.inf))
    picks: list[tuple[str, dict[str, Any]]] = []
    for label, idx in (("worst", 0), ("median", len(ranked) // 2), ("best", len(ranked) - 1)):
        if all(p[1] is not ranked[idx] for p in picks):
            picks.append((label, ranked[idx]))
    montage_rows = []
    for label, row in picks:
        truth, pred = planes[row["case_id"]]
        montage_rows.append((f"{label} {row['case_id']} truth", _from_planes(truth)))
        montage_rows.append((f"{label} {row['case_id']} pred SSIM {row.get('ssim3d', float('nan')):.3f}",
                             _from_planes(pred)))
    save_montage(path, montage_rows)


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"{'metric':<16} {'mean':>12} {'std':>12} {'n':>5}"]
    for name, s in summary["metrics"].items():
        lines.append(f"{name:<16} {s['mean']:>12.4f} {s['std']:>12.4f} {s['count']:>5d}")
    if "fid_alexnet" in summary:
        lines.append(f"{'fid_alexnet':<16} {summary['fid_alexnet']:>12.4f}")
    lines.append(f"PSNR data range: {summary['psnr_data_range']}")
    lines.append(f"psnr_x2ct_db: {summary['psnr_x2ct_convention']}")
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="NAME.safetensors/.json or a training-checkpoint folder")
    p.add_argument("--cache", required=True, type=Path, help="prepared-data cache folder")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--cases", default=None, help="comma-separated case ids (of --split)")
    p.add_argument("--limit", type=int, default=None, help="evaluate at most N cases")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, choices=SAMPLERS)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--bone-threshold", type=float, default=M.BONE_THRESHOLD_HU, help="HU (default 200)")
    p.add_argument("--lpips-weights", type=Path, default=None, help="AlexNet + LPIPS heads (safetensors)")
    p.add_argument("--fid-weights", type=Path, default=None, help="AlexNet features (safetensors)")
    p.add_argument("--save-predictions", action="store_true", help="write predictions/<case>.nii.gz")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    from DiffuX2CTLib.inference import resolve_device
    from DiffuX2CTLib.io.ct import array_to_image, write_ct

    device = resolve_device(args.device)
    manifest = CacheManifest.load(args.cache)
    loaded = load_model(args.checkpoint, device)
    model, info, objective = loaded.model, loaded.info, loaded.objective
    try:
        _check_geometry(manifest, info, args.cache)
    except InputError as exc:
        raise InputError(args.checkpoint, f"does not fit the cache: {exc.problem}") from exc
    ids = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else None
    records = select_cases(manifest, args.split, ids, args.limit, args.cache)
    perceptual = PerceptualMetrics.from_files(info.intensity, args.lpips_weights, args.fid_weights, device)
    if not perceptual.enabled:
        print(SKIP_MESSAGE, file=sys.stderr)
    planes: dict[str, tuple[Any, Any]] = {}

    def keep(result: CaseResult) -> None:
        planes[result.record.case_id] = (_planes(result.target_hu), _planes(result.pred_hu))
        if args.save_predictions:
            image = array_to_image(result.pred_hu, info.geometry, result.record.center_lps)
            (args.out / "predictions").mkdir(parents=True, exist_ok=True)
            write_ct(image, args.out / "predictions" / f"{result.record.case_id}.nii.gz", dtype="int16")  # atomic

    def show(done: int, total: int) -> None:
        print(f"evaluated {done}/{total}", file=sys.stderr, flush=True)

    rows, summary = evaluate(model, info, objective, args.cache, records, split=args.split, sampler=args.sampler,
                             steps=args.steps, num_samples=args.num_samples, seed=args.seed,
                             batch_size=args.batch_size, device=device, bone_threshold_hu=args.bone_threshold,
                             perceptual=perceptual if perceptual.enabled else None, on_case=keep, progress=show,
                             checkpoint=str(args.checkpoint))
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "per_case.csv", rows)
    write_summary(args.out / "summary.json", summary)
    write_montage(args.out / "montage.png", rows, planes)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except (InputError, DiffuX2CTError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(summary))
    print(f"wrote {args.out / 'per_case.csv'}, summary.json and montage.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
