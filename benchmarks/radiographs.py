"""Radiograph benchmark: do real-looking films reach the network as the DRRs it was trained on?

    .venv/bin/python benchmarks/radiographs.py [--out .bench/radiographs]   (~20 min on 2 CPU cores)
    .venv/bin/python benchmarks/radiographs.py --without OLD.safetensors   (a few minutes: no training)
    .venv/bin/python benchmarks/radiographs.py --quick                        (smoke run, minutes)

Test volumes: the learning benchmark's held-out scans (the example chest CT and CRLM-1006; never
seen in training), as cleaned and centred by ``training.prepare_data`` (the caches of
``benchmarks/learning.py`` are reused or made). For each, AP and lateral views are rendered in the
demo model's ``clinical`` geometry at a realistic detector (256 x 256 from the CT on a 128^3 grid)
and stored in each style:

* ``clean``          -- the DRR line integrals (NRRD), as ``diffux2ct simulate`` writes them;
* ``presentation``   -- FOR PRESENTATION DX DICOM, MONOCHROME2, display curve, VOI window, lead
  marker, burned-in text, collimation; Poisson-Gaussian noise, scatter, heel effect, focal-spot and
  detector blur (``DiffuX2CTLib.radiograph``, preset ``presentation``);
* ``film_mono1``     -- the same, MONOCHROME1;
* ``processing_raw`` -- FOR PROCESSING linear raw detector data (LIN), as systems store it;
* ``processing_log`` -- FOR PROCESSING log-encoded data (LOG), MONOCHROME1;
* ``display_png``    -- the presentation film as an 8-bit PNG, read with ``--xray-encoding display``.

Figures:

* input correlation: Pearson r between the network input built from each style and the one
  built from the clean DRR (both views, both scans), through the reading chain of the worker
  (``DiffuX2CTLib.io.radiograph.prepare_radiograph``), and "before": the old reading, which took
  every file's pixels as line integrals (no encoding, overlay, orientation or scale handling);
* MAE (HU) of the reconstruction from each style against the CT, for the model trained with the
  radiograph-style augmentation (the committed demo model, ``--with``) and for the same training
  without it (``augment.film_prob=0``, trained here unless ``--without`` names a checkpoint, e.g.
  the demo model of commit a92f80e, trained without films: ``git show
  a92f80e:Resources/Models/diffux2ct-demo-clinical-32.safetensors`` and ``.json``).
  Sampler: the default, 25 steps, seed 0;
* scatter sensitivity: the input r of FOR PROCESSING raw films made with true scatter-to-primary
  ratios 0, 0.2, 0.4 and 0.8, read with the reader's scatter removal (its defaults, 0.3 and
  60 mm) and without it: what the assumed ratio costs when it is wrong;
* prior sensitivity: the same for presentation films, whose log scale the reader estimates from
  a body prior (``DiffuX2CTLib.io.xray_scatter.estimate_log_scale``), with other true ratios and
  with the line integrals scaled by 0.75 and 1.25 (a thinner or thicker patient).

Targets: every style's input correlation >= 0.98; with augmentation, the MAE on realistic films
within 10% of the MAE on clean DRRs. Ends with one JSON line ``{"radiographs": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import REPO_ROOT, cpu_name, ensure_repo_on_path, fmt_seconds, load_average

ensure_repo_on_path()

DEMO_MODEL = REPO_ROOT / "Resources" / "Models" / "diffux2ct-demo-clinical-32.safetensors"
#: style -> (film preset or None for the clean DRR, stored as "dicom" | "png" | "nrrd", reading encoding)
STYLES = {
    "clean": (None, "nrrd", None),
    "presentation": ("presentation", "dicom", None),
    "film_mono1": ("film-mono1", "dicom", None),
    "processing_raw": ("processing-raw", "dicom", None),
    "processing_log": ("processing-log", "dicom", None),
    "display_png": ("presentation", "png", "display"),
}
FILM_STYLES = tuple(s for s in STYLES if s != "clean")
DETECTOR = 256
RENDER_VOLUME = 128


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(".bench") / "radiographs", help="work folder")
    p.add_argument("--learning-out", type=Path, default=Path(".bench") / "learning",
                   help="the learning benchmark's work folder (its data caches are reused)")
    p.add_argument("--with", dest="with_model", type=Path, default=DEMO_MODEL,
                   help="model trained with the radiograph-style augmentation")
    p.add_argument("--without", type=Path, default=None,
                   help="model trained without it (default: trained here with augment.film_prob=0)")
    p.add_argument("--diffusion-steps", type=int, default=550, help="optimiser steps of the model trained here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny smoke run (figures meaningless)")
    return p.parse_args(argv)


def test_views(test_cache: Path, geometry, quick: bool):
    """(record, ground truth HU (D, H, W), SimulatedXRays at the realistic detector) per unaugmented test case."""
    import torch

    from DiffuX2CTLib.drr import DRRProjector
    from DiffuX2CTLib.io.body import clean_ct
    from DiffuX2CTLib.io.ct import model_array, read_ct, to_model_grid
    from DiffuX2CTLib.simulate import SimulatedXRays
    from training.cache import CacheManifest, read_case_volume

    manifest = CacheManifest.load(test_cache)
    render = geometry.with_sizes(volume_size=64 if quick else RENDER_VOLUME, xray_size=96 if quick else DETECTOR)
    projector = DRRProjector(render)
    out = []
    for record in manifest.cases_in("test"):
        if record.augmentation is not None:
            continue  # the variants' source volumes are resampled copies: keep the scans themselves
        ct = clean_ct(read_ct(record.source), record.body_mask, record.source).image
        grid = to_model_grid(ct, render, center_lps=record.center_lps)
        with torch.no_grad():
            line = projector(torch.from_numpy(model_array(grid))[None, None])
        sim = SimulatedXRays(line_integrals=line[0].numpy(), radiographs=projector.normalization(line)[0].numpy(),
                             geometry=render, ct_center_lps=tuple(record.center_lps), model_ct=grid,
                             mu_water_per_mm=projector.mu_water_per_mm)
        out.append((record, read_case_volume(test_cache, record), sim))
    return out


def write_styles(sim, folder: Path, seed: int) -> dict[str, dict[str, Path]]:
    """Every style's AP and lateral files for one scan: ``{style: {view: path}}``."""
    from DiffuX2CTLib.io.xray import write_xray_nrrd
    from DiffuX2CTLib.radiograph.simulation import simulate_films, write_film_files

    files: dict[str, dict[str, Path]] = {}
    for style, (preset, kind, _) in STYLES.items():
        target = folder / style
        target.mkdir(parents=True, exist_ok=True)
        if preset is None:
            files[style] = {}
            for i, view in enumerate(sim.geometry.views):
                write_xray_nrrd(target / f"{view}.nrrd", sim.line_integrals[i], sim.geometry.detector_spacing_mm)
                files[style][view] = target / f"{view}.nrrd"
            continue
        films = simulate_films(sim, preset, seed=seed)
        names = write_film_files(target, films)
        key = "dicom_dx_film" if kind == "dicom" else "png8_film"
        files[style] = {view: target / names[view][key] for view in sim.geometry.views}
    return files


def network_inputs(files: dict[str, Path], geometry, normalization, encoding: str | None):
    """(new reading, old reading) network inputs ``(V, rows, cols)`` of one style's two files."""
    import numpy as np

    from DiffuX2CTLib.io.radiograph import RadiographOptions, prepare_radiograph
    from DiffuX2CTLib.io.xray import fit_xray_to_detector, read_xray

    new, old = [], []
    for view in geometry.views:
        path = files[view]
        new.append(prepare_radiograph(path, view, geometry, normalization, RadiographOptions(xray_encoding=encoding)).pixels)
        raw = read_xray(path, apply_voi=True)  # the old chain: pixels taken as line integrals
        old.append(normalization.normalize_numpy(fit_xray_to_detector(raw, geometry, view).pixels))
    return np.stack(new), np.stack(old)


#: Scatter-to-primary ratios of the raw films in the scatter sensitivity table (0 = no scatter at all).
SENSITIVITY_SPR = (0.0, 0.2, 0.4, 0.8)
#: Presentation films of the prior sensitivity table: (label, true scatter-to-primary, body scale).
#: A body scale multiplies the line integrals: a patient that much thinner or thicker in water
#: equivalent (the clean network input, normalised per image, does not change).
PRIOR_CASES = (("spr 0", 0.0, 1.0), ("spr 0.2", 0.2, 1.0), ("spr 0.4", 0.4, 1.0), ("spr 0.8", 0.8, 1.0),
               ("body x0.75, spr 0.4", 0.4, 0.75), ("body x1.25, spr 0.4", 0.4, 1.25))


def _sensitivity_row(cases, geometry, normalization, clean_inputs, folder: Path, seed: int, config,
                     body_scale: float = 1.0) -> dict:
    """Input r of one film configuration over all cases, read with and without scatter removal."""
    import dataclasses

    import numpy as np

    from DiffuX2CTLib.io.radiograph import RadiographOptions, prepare_radiograph
    from DiffuX2CTLib.radiograph.simulation import simulate_films, write_film_files

    files = []
    for record, _, sim in cases:
        target = folder / record.case_id
        target.mkdir(parents=True, exist_ok=True)
        scaled = dataclasses.replace(sim, line_integrals=sim.line_integrals * body_scale)
        names = write_film_files(target, simulate_films(scaled, config, seed=seed))
        files += [(target / names[view]["dicom_dx_film"], view) for view in geometry.views]
    row = {}
    for label, options in (("corrected", RadiographOptions()), ("uncorrected", RadiographOptions(scatter_to_primary=0.0))):
        got = np.stack([prepare_radiograph(path, view, geometry, normalization, options).pixels for path, view in files])
        row[label] = round(correlation(got, np.stack(clean_inputs)), 4)
    return row


def scatter_sensitivity(cases, geometry, normalization, clean_inputs, folder: Path, seed: int) -> dict:
    """Input r of FOR PROCESSING raw films of several true scatter ratios, read with and without the
    reader's scatter removal (its defaults): ``{true spr: {"corrected": r, "uncorrected": r}}``."""
    from DiffuX2CTLib.radiograph.film import ScatterConfig
    from DiffuX2CTLib.radiograph.presets import film_preset

    table = {}
    for spr in SENSITIVITY_SPR:
        config = film_preset("processing-raw").replace(scatter=ScatterConfig(spr, 60.0) if spr > 0 else None)
        table[f"{spr:g}"] = _sensitivity_row(cases, geometry, normalization, clean_inputs,
                                             folder / f"raw_spr{spr:g}", seed, config)
    return table


def prior_sensitivity(cases, geometry, normalization, clean_inputs, folder: Path, seed: int) -> dict:
    """Input r of presentation films (scale estimated from the body prior) for :data:`PRIOR_CASES`,
    read with and without scatter removal: ``{label: {"corrected": r, "uncorrected": r}}``."""
    from DiffuX2CTLib.radiograph.film import ScatterConfig
    from DiffuX2CTLib.radiograph.presets import film_preset

    table = {}
    for label, spr, body in PRIOR_CASES:
        config = film_preset("presentation").replace(scatter=ScatterConfig(spr, 60.0) if spr > 0 else None)
        table[label] = _sensitivity_row(cases, geometry, normalization, clean_inputs,
                                        folder / f"presentation_spr{spr:g}_body{body:g}", seed, config, body)
    return table


def correlation(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def reconstruct_mae(loaded, inputs, truths, case_ids, seed: int) -> float:
    """Mean MAE (HU, clipped to the model's window) of the reconstructions of a batch of scans."""
    import numpy as np
    import torch

    from DiffuX2CTLib.diffusion import DEFAULT_SAMPLER
    from training.metrics import mae_rmse_hu
    from training.objective import predict_volumes, sample_seed

    volumes = predict_volumes(loaded.model, torch.from_numpy(np.stack(inputs)).float(), loaded.objective,
                              loaded.info.diffusion, sampler=DEFAULT_SAMPLER, steps=25,
                              seed=sample_seed(seed, *case_ids))
    hu = loaded.info.intensity.denormalize(volumes.float().numpy())[:, 0]
    return float(np.mean([mae_rmse_hu(h, t, loaded.info.intensity)[0] for h, t in zip(hu, truths)]))


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    import learning
    from training.state import load_model

    torch.set_num_threads(2)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"[radiographs] CPU: {cpu_name()}, load average {load_average()}", file=sys.stderr)
    # fp32, as the demo model (the model with films) was trained
    learning_args = learning.parse_args(["--out", str(args.learning_out), "--diffusion-steps", str(args.diffusion_steps),
                                         "--precision", "fp32", "--seed", str(args.seed)] + (["--quick"] if args.quick else []))
    train_cache, test_cache, _, _ = learning.prepare_caches(learning_args)

    with_model = load_model(args.with_model, "cpu")
    if args.without is None:
        learning_args.out = args.out
        run_dir, train_seconds = learning.train_run("no_film_augmentation", train_cache, learning_args,
                                                    ["augment.film_prob=0.0"])
        without_model = load_model(run_dir, "cpu", which="last")
    else:
        without_model, train_seconds = load_model(args.without, "cpu"), 0.0
    for loaded in (with_model, without_model):
        loaded.model.eval()
    geometry, normalization = with_model.info.geometry, with_model.info.xray_normalization
    if without_model.info.geometry.hash != geometry.hash:
        raise SystemExit("error: the two models were trained on different geometries")

    cases = test_views(test_cache, geometry, args.quick)
    inputs = {style: {"new": [], "old": []} for style in STYLES}
    for record, _, sim in cases:
        files = write_styles(sim, args.out / "films" / record.case_id, args.seed)
        for style, (_, _, encoding) in STYLES.items():
            new, old = network_inputs(files[style], geometry, normalization, encoding)
            inputs[style]["new"].append(new)
            inputs[style]["old"].append(old)

    clean = inputs["clean"]["new"]
    sensitivity = scatter_sensitivity(cases, geometry, normalization, clean, args.out / "films", args.seed)
    prior = prior_sensitivity(cases, geometry, normalization, clean, args.out / "films", args.seed)
    corr_after = {s: round(correlation(inputs[s]["new"], clean), 4) for s in FILM_STYLES}
    corr_before = {s: round(correlation(inputs[s]["old"], clean), 4) for s in FILM_STYLES}
    truths = [truth for _, truth, _ in cases]
    ids = [record.case_id for record, _, _ in cases]
    mae_with = {s: round(reconstruct_mae(with_model, inputs[s]["new"], truths, ids, args.seed), 1) for s in STYLES}
    mae_without = {s: round(reconstruct_mae(without_model, inputs[s]["new"], truths, ids, args.seed), 1) for s in STYLES}
    total = time.perf_counter() - started

    print()
    print(f"Radiograph benchmark: {len(cases)} held-out scans ({', '.join(ids)}), clinical geometry, films "
          f"{DETECTOR if not args.quick else 96}^2 read into the {geometry.detector_shape[0]}^2 model detector")
    print(f"CPU {cpu_name()}; load average at the end {load_average()}; total {fmt_seconds(total)}"
          + (f" (training without augmentation {fmt_seconds(train_seconds)})" if train_seconds else ""))
    print()
    print("| style | input r (new reading) | input r (old reading) | MAE HU, with augmentation | MAE HU, without |")
    print("|---|---:|---:|---:|---:|")
    for style in STYLES:
        after = f"{corr_after[style]:.4f}" if style in corr_after else "1 (reference)"
        before = f"{corr_before[style]:.4f}" if style in corr_before else "-"
        print(f"| {style} | {after} | {before} | {mae_with[style]:.1f} | {mae_without[style]:.1f} |")
    worst = max(mae_with[s] for s in FILM_STYLES)
    print()
    print(f"targets: every input r >= 0.98: {min(corr_after.values()) >= 0.98} (lowest {min(corr_after.values()):.4f}); "
          f"with augmentation the worst film MAE {worst:.1f} HU is within 10% of the clean {mae_with['clean']:.1f} HU: "
          f"{worst <= 1.1 * mae_with['clean']}")
    print()
    print("Scatter removal (defaults: scatter-to-primary 0.3, 60 mm) on FOR PROCESSING raw films of other true ratios:")
    print("| true scatter-to-primary | input r, corrected | input r, uncorrected |")
    print("|---:|---:|---:|")
    for spr, row in sensitivity.items():
        print(f"| {spr} | {row['corrected']:.4f} | {row['uncorrected']:.4f} |")
    print()
    print("Presentation films, scale estimated from the body prior, for other true ratios and body sizes:")
    print("| film | input r, corrected | input r, uncorrected |")
    print("|---|---:|---:|")
    for label, row in prior.items():
        print(f"| {label} | {row['corrected']:.4f} | {row['uncorrected']:.4f} |")
    print("reproduce: .venv/bin/python benchmarks/radiographs.py" + (" --quick" if args.quick else ""))
    print(json.dumps({"radiographs": {"input_correlation": corr_after, "input_correlation_before": corr_before,
                                      "mae_hu": mae_with, "mae_hu_without_augmentation": mae_without,
                                      "scatter_sensitivity": sensitivity, "prior_sensitivity": prior},
                      "total_seconds": round(total, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
