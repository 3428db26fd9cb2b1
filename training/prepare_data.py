"""Build the training cache: CT scans -> model-grid CTs + DRRs + ``manifest.json`` with splits.

Usage (from the repository root)::

    python -m training.prepare_data --input DIR_OR_FILE [--input ...] --out CACHE \\
        [--dataset folder|lidc|ctspine1k|ctpelvic1k] [--geometry x2ct|clinical|FILE.json] \\
        [--size 128] [--xray-size M] [--workers W] [--no-body-mask] [--augment-copies K ...] \\
        [--seed 0] [--val-fraction 0.1] [--test-fraction 0.1] [--test-groups a,b] [--limit N]

Resumable: complete cases of the same geometry hash are skipped. An unreadable case is listed
in ``report.json`` and the run goes on. Exit status 0 when the manifest holds at least one case,
2 (one line on stderr) for bad arguments or when no case could be prepared.
``prepare(...)`` is the same in-process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from DiffuX2CTLib import __version__
from DiffuX2CTLib.errors import InputError
from DiffuX2CTLib.geometry import BiplanarGeometry
from DiffuX2CTLib.geometry.biplanar import PRESETS
from DiffuX2CTLib.io.atomic import atomic_file

from .cache import REPORT_NAME, CacheManifest, CaseRecord, complete_cases
from .preprocess import AugmentOptions, PrepareOptions, expected_case_ids, prepare_source
from .sources import DATASETS, SourceCase, discover
from .splits import make_splits


@dataclass
class TaskResult:
    source: SourceCase
    records: list[CaseRecord]
    error: str | None = None


_WORKER: dict[str, Any] = {}


def resolve_geometry(spec: str | BiplanarGeometry, size: int | None = None,
                     xray_size: int | None = None) -> BiplanarGeometry:
    """A preset name (``x2ct``, ``clinical``) or a geometry JSON file, sampled at ``size`` / ``xray_size``."""
    if isinstance(spec, BiplanarGeometry):
        geometry = spec
    elif spec in PRESETS:
        return BiplanarGeometry.preset(spec, size or 128, xray_size)
    else:
        path = Path(spec)
        if not path.is_file():
            raise InputError(path, f"is neither a geometry preset ({', '.join(sorted(PRESETS))}) nor a geometry JSON file")
        try:
            geometry = BiplanarGeometry.from_json(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(path, f"is not a valid geometry JSON file ({exc})") from exc
    return geometry.with_sizes(size, xray_size)


def _one_line(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__


def _init_worker(geometry_json: str, threads: int | None = None, supersample: int = 2) -> None:
    """Build the geometry and its DRR renderer once per process (``threads``: torch CPU threads;
    ``supersample``: detector supersampling, see :mod:`training.render`)."""
    import torch

    from .render import RadiographRenderer

    if threads:
        torch.set_num_threads(max(1, threads))
    geometry = BiplanarGeometry.from_json(geometry_json)
    _WORKER.update(geometry=geometry, projector=RadiographRenderer(geometry, supersample))


def _run(source: SourceCase, cache_dir: str, options: PrepareOptions, skip_ids: frozenset[str]) -> TaskResult:
    try:
        records = prepare_source(source, _WORKER["geometry"], _WORKER["projector"], cache_dir, options, skip_ids)
        return TaskResult(source, records)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 -- one bad case must not stop the run
        return TaskResult(source, [], _one_line(exc))


def _execute(tasks: list[tuple[SourceCase, frozenset[str]]], geometry: BiplanarGeometry, cache_dir: str,
             options: PrepareOptions, workers: int, progress: bool) -> list[TaskResult]:
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="preparing", unit="scan", disable=not progress or not tasks, file=sys.stderr)
    results: list[TaskResult] = []
    try:
        if workers <= 0:
            if tasks:
                _init_worker(geometry.to_json(), None, options.xray_supersample)
            for source, skip in tasks:
                results.append(_run(source, cache_dir, options, skip))
                bar.update()
            return results
        from DiffuX2CTLib.drr.projector import load_system_matrix

        fine = geometry.with_sizes(xray_size=geometry.detector_shape[0] * options.xray_supersample)
        load_system_matrix(fine if options.xray_supersample > 1 else geometry)  # build the disk-cached system matrix once, before the workers load it
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                 initargs=(geometry.to_json(), threads, options.xray_supersample)) as pool:
            futures = {pool.submit(_run, source, cache_dir, options, skip): source for source, skip in tasks}
            for future in as_completed(futures):
                try:
                    results.append(future.result())
                except BrokenProcessPool:
                    results.append(TaskResult(futures[future], [], "worker process died (out of memory?)"))
                bar.update()
        return results
    finally:
        bar.close()


def prepare(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, dataset: str = "folder",
            geometry: str | BiplanarGeometry = "x2ct", size: int | None = None, xray_size: int | None = None,
            workers: int = 0, body_mask: bool = True, augment: AugmentOptions | None = None, seed: int = 0,
            val_fraction: float = 0.1, test_fraction: float = 0.1, test_groups: Iterable[str] = (),
            limit: int | None = None, progress: bool = False,
            xray_supersample: int = 2) -> tuple[CacheManifest, dict[str, Any]]:
    """Prepare every case under ``inputs`` into the cache ``out``; returns ``(manifest, report)``.

    Raises:
        InputError: bad arguments (missing input, unknown dataset or geometry), or no case at all
            in the manifest (``report.json`` is still written).
    """
    if not inputs:
        raise InputError(None, "no --input given")
    geometry = resolve_geometry(geometry, size, xray_size)
    if int(xray_supersample) < 1:
        raise InputError(None, "--xray-supersample must be at least 1")
    options = PrepareOptions(body_mask=body_mask, seed=int(seed), augment=augment or AugmentOptions(),
                             xray_supersample=int(xray_supersample))
    if options.augment.copies < 0 or (limit is not None and limit < 0):
        raise InputError(None, "--augment-copies and --limit must not be negative")
    found = discover(inputs, dataset)
    sources = found.cases[:limit] if limit is not None else found.cases
    cache_dir = Path(out)
    cache_dir.mkdir(parents=True, exist_ok=True)

    done = complete_cases(cache_dir, geometry.hash, options.xray_supersample)
    tasks, already, clashes = [], 0, []
    for source in sources:
        wanted = expected_case_ids(source, options)
        other = [i for i in wanted if i in done and Path(done[i].source) != Path(source.path)]
        if other:
            clashes.append({"case_id": other[0], "source": source.path,
                            "reason": f"case id already holds {done[other[0]].source} in the cache"})
            continue
        skip = frozenset(i for i in wanted if i in done)
        already += len(skip)
        if len(skip) < len(wanted):
            tasks.append((source, skip))

    results = _execute(tasks, geometry, str(cache_dir), options, workers, progress)
    failed = [{"case_id": r.source.case_id, "source": r.source.path, "reason": r.error} for r in results if r.error]
    prepared = sum(len(r.records) for r in results)

    cases = sorted(complete_cases(cache_dir, geometry.hash, options.xray_supersample).values(), key=lambda c: c.case_id)
    report: dict[str, Any] = {
        "geometry_hash": geometry.hash, "dataset": dataset, "inputs": [str(i) for i in inputs],
        "sources_found": len(found.cases), "sources_used": len(sources), "cases_prepared": prepared,
        "cases_already_complete": already, "cases_in_manifest": len(cases),
        "skipped": [dict(asdict(s), case_id=s.case_id or None) for s in found.skipped] + clashes,
        "failed": sorted(failed, key=lambda f: f["case_id"]),
    }
    with atomic_file(cache_dir / REPORT_NAME) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    if not cases:
        raise InputError(cache_dir, f"no case could be prepared ({len(failed)} failed, {len(report['skipped'])} "
                                    f"skipped; see {cache_dir / REPORT_NAME})")
    split = make_splits(cases, seed, val_fraction, test_fraction, test_groups)
    manifest = CacheManifest(geometry=geometry, cases=cases, splits=split.splits, split_method=split.method,
                             xray_supersample=options.xray_supersample,
                             split_params=split.params, software=f"DiffuX2CTLib {__version__} (training.prepare_data)")
    manifest.save(cache_dir)
    return manifest, report


def summary(manifest: CacheManifest, report: dict[str, Any], cache_dir: str | os.PathLike) -> str:
    """The lines printed at the end of a run."""
    counts = {s: sum(1 for v in manifest.splits.values() if v == s) for s in ("train", "val", "test")}
    lines = [f"prepared {report['cases_prepared']} case(s); {report['cases_already_complete']} already complete "
             f"(skipped); {len(report['skipped'])} input(s) skipped; {len(report['failed'])} failed"]
    lines += [f"  skipped {s['source']}: {s['reason']}" for s in report["skipped"]]
    lines += [f"  FAILED {f['case_id']} ({f['source']}): {f['reason']}" for f in report["failed"]]
    lines.append(f"manifest {Path(cache_dir) / 'manifest.json'}: {len(manifest.cases)} case(s) (train "
                 f"{counts['train']}, val {counts['val']}, test {counts['test']}; {manifest.split_method}), "
                 f"geometry {manifest.geometry.name} {manifest.geometry.hash}")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m training.prepare_data", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", action="append", required=True, help="CT file or folder (repeatable)")
    p.add_argument("--out", required=True, help="cache folder")
    p.add_argument("--dataset", choices=DATASETS, default="folder")
    p.add_argument("--geometry", default="x2ct", help="x2ct, clinical or a geometry JSON file")
    p.add_argument("--size", type=int, default=None, help="model volume size N (N^3; default 128 for presets)")
    p.add_argument("--xray-size", type=int, default=None, help="detector size M (M x M; default N)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (0: in this process)")
    p.add_argument("--xray-supersample", type=int, default=2,
                   help="render DRRs on a detector this many times finer per side, then average (match the "
                        "training config's data.xray_supersample)")
    p.add_argument("--body-mask", action=argparse.BooleanOptionalAction, default=True,
                   help="set voxels outside the body (couch, clothes) to air")
    p.add_argument("--augment-copies", type=int, default=0, help="extra augmented cases per scan")
    p.add_argument("--aug-rotate-deg", type=float, default=5.0)
    p.add_argument("--aug-scale", type=float, default=0.05)
    p.add_argument("--aug-shift-mm", type=float, default=15.0)
    p.add_argument("--aug-z-cut-probability", type=float, default=0.5)
    p.add_argument("--aug-z-keep-min", type=float, default=0.7)
    p.add_argument("--aug-intensity", type=float, default=0.03)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--test-groups", default="", help="comma-separated groups forced into test")
    p.add_argument("--limit", type=int, default=None, help="prepare at most N source scans")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    augment = AugmentOptions(copies=args.augment_copies, rotate_deg=args.aug_rotate_deg, scale=args.aug_scale,
                             shift_mm=args.aug_shift_mm, z_cut_probability=args.aug_z_cut_probability,
                             z_keep_min=args.aug_z_keep_min, intensity=args.aug_intensity)
    try:
        manifest, report = prepare(
            args.input, args.out, dataset=args.dataset, geometry=args.geometry, size=args.size,
            xray_size=args.xray_size, workers=args.workers, body_mask=args.body_mask, augment=augment,
            seed=args.seed, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
            test_groups=args.test_groups.split(","), limit=args.limit, progress=not args.no_progress,
            xray_supersample=args.xray_supersample)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(manifest, report, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
