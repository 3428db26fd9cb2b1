"""``make demo``: example chest CT -> AP and lateral DRRs -> reconstruction -> metrics and montage.

    python -m DiffuX2CTLib.demo --out demo_output [--checkpoint MODEL.safetensors] [--ct CT]

Without ``--checkpoint`` the demo uses the default model of ``Resources/Models.json`` (the
committed demo model, checked against its SHA-256) and reconstructs through the worker process,
exactly as the Slicer module does. The example chest CT is not among that model's training
scans, so the printed metrics are on a CT it never saw. The CT is cleaned first
(:mod:`DiffuX2CTLib.io.body`: padding to air, couch removed), as the training data were: the
radiographs are those of an upright radiograph room. ``--untrained`` builds a randomly
initialised model instead (the chain runs, the result is noise, and the demo says so).

Outputs in ``--out``: ``xrays/`` (``ap.png``, ``lateral.png`` and NRRD line integrals at
256 x 256, ``geometry.json``), ``ground_truth.nii.gz`` (the CT on the model grid),
``reconstruction.nii.gz``, ``montage.png`` (axial, coronal and sagittal slices, ground truth
above reconstruction) and ``metrics.json``.

Two grids, two geometry hashes: the DRRs are computed from the CT on a 128^3 grid and written at
256 x 256 (``--drr-volume-size``, ``--drr-size``) in the model's physical set-up, so
``xrays/geometry.json`` records that sampling and its hash. The model (the committed demo model:
32^3 voxels of 10 mm, 32 x 32 radiographs) has its own sampling of the same set-up, and
``metrics.json`` (``worker.geometry_hash``) carries the model's hash. A geometry hash covers the
sampling too; :meth:`~DiffuX2CTLib.geometry.BiplanarGeometry.same_setup` is what the worker checks
before it uses the isocentre of ``geometry.json``.

Exit codes: 0 success; 2 any error (one ``error:`` line naming the file and the problem; the
output folder is checked before any work); 130 interrupted by SIGINT (Ctrl-C), 143 by SIGTERM.
Both signals are forwarded to the reconstruction worker, which stops within one sampling step and
writes nothing, so no orphan keeps running; the worker also gets ``--parent-pid`` and cancels
itself if the demo is killed outright.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .diffusion.config import DEFAULT_SAMPLER, SAMPLERS

UNTRAINED_BANNER = (
    "NOTE: this demo uses an UNTRAINED randomly initialised model, so the reconstruction is "
    "noise-like and its metrics are not meaningful. Without --untrained the demo uses the trained "
    "default model of Resources/Models.json, or pass --checkpoint MODEL.safetensors."
)


def build_untrained_checkpoint(geometry, out_dir: Path, seed: int = 0) -> Path:
    """Save a randomly initialised small network for ``geometry`` as a real checkpoint."""
    import torch

    from .checkpoint import CheckpointInfo, save_checkpoint
    from .diffusion.config import DiffusionConfig
    from .network import DiffuX2CTNet, NetworkConfig

    size = geometry.volume_shape[0]
    config = NetworkConfig.tiny().replace(volume_size=size, xray_size=geometry.detector_shape[0])
    torch.manual_seed(seed)
    model = DiffuX2CTNet(config, geometry)
    info = CheckpointInfo(network=config, diffusion=DiffusionConfig(), geometry=geometry, trained=False,
                          weights="raw", training={"note": "untrained: random initialisation for the demo"})
    weights, _ = save_checkpoint(out_dir / f"untrained-tiny-{size}.safetensors", model.state_dict(), info)
    return weights


def default_model() -> Path | None:
    """The weights of the registry's default model (SHA-256 verified), or ``None`` if it names none."""
    from .registry import default_registry_path, load_registry, verify

    registry_path = default_registry_path()
    if not registry_path.is_file():
        return None
    registry = load_registry(registry_path)
    entry = registry.default_entry()
    if entry is None:
        return None
    print(f"default model: {entry.name} (version {entry.version}; {entry.intended_use})")
    return verify(entry, registry_path)


EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 2, 130, 143


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached the demo (after being forwarded to a running worker)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


#: The running worker process (for signal forwarding) and the signals received while it ran.
_WORKERS: list[subprocess.Popen] = []
_PENDING: list[int] = []


def _on_signal(signum: int, _frame: Any) -> None:
    """Forward SIGINT/SIGTERM to a running worker (a second one kills it) and let
    :func:`run_worker` stop once the worker has exited; with no worker running, stop at once."""
    running = [proc for proc in _WORKERS if proc.poll() is None]
    if not running:
        raise Interrupted(signum)
    for proc in running:
        try:
            proc.kill() if _PENDING else proc.send_signal(signum)
        except OSError:
            pass
    _PENDING.append(signum)


def run_worker(ap: Path, lateral: Path, checkpoint: Path, output: Path, steps: int, sampler: str, seed: int) -> dict:
    """Run the reconstruction worker as the Slicer module does, with a progress bar.

    Raises:
        DiffuX2CTError: the worker failed (its error line and exit code in the message).
        Interrupted: SIGINT/SIGTERM arrived; it was forwarded and the worker has exited.
    """
    import os

    from tqdm import tqdm

    from .errors import DiffuX2CTError

    cmd = [sys.executable, "-m", "DiffuX2CTLib.worker", "--ap", str(ap), "--lateral", str(lateral),
           "--checkpoint", str(checkpoint), "--steps", str(steps), "--sampler", sampler, "--seed", str(seed),
           "--device", "auto", "--output", str(output), "--parent-pid", str(os.getpid())]
    result: dict = {}
    _PENDING.clear()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc, \
            tqdm(total=steps, desc=f"reconstruct ({sampler})", unit="step", file=sys.stderr) as bar:
        _WORKERS.append(proc)
        try:
            for line in proc.stdout:  # type: ignore[union-attr]
                if line.startswith("PROGRESS "):
                    done, total = (int(v) for v in line.split()[1].split("/"))
                    bar.total = total
                    bar.n = done
                    bar.refresh()
                elif line.startswith("{"):
                    result = json.loads(line)
            proc.wait()
        finally:
            _WORKERS.remove(proc)
    if _PENDING:
        raise Interrupted(_PENDING[0])
    if proc.returncode != 0:
        raise DiffuX2CTError(f"reconstruction worker failed with exit code {proc.returncode}: "
                             f"{result.get('error', 'no result line')}")
    return result


def _window(a: np.ndarray, lo: float = -1000.0, hi: float = 1000.0) -> np.ndarray:
    return (np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def orthogonal_slices(volume: np.ndarray) -> list[np.ndarray]:
    """Central axial, coronal and sagittal slices of a ``(D, H, W)`` LPS-aligned volume, in the
    radiological display convention (patient right on image left, anterior/superior at the top)."""
    d, h, w = volume.shape
    axial = volume[d // 2]  # rows anterior -> posterior, columns right -> left
    coronal = volume[::-1, h // 2, :]  # rows superior -> inferior, columns right -> left
    sagittal = volume[::-1, :, w // 2]  # rows superior -> inferior, columns anterior -> posterior
    return [axial, coronal, sagittal]


def save_montage(path: Path, rows: list[tuple[str, np.ndarray]], min_tile_px: int = 192) -> None:
    """A labelled PNG grid: one row per (label, volume), columns axial / coronal / sagittal.

    Slices are shown with a [-1000, 1000] HU window, enlarged (nearest neighbour) to at least
    ``min_tile_px`` pixels so that small model grids stay readable.
    """
    from PIL import Image, ImageDraw

    from .io.atomic import atomic_file

    tiles = [[_window(s) for s in orthogonal_slices(v)] for _, v in rows]
    scale = max(1, -(-min_tile_px // max(max(t.shape) for row in tiles for t in row)))
    th = max(t.shape[0] for row in tiles for t in row) * scale
    tw = max(t.shape[1] for row in tiles for t in row) * scale
    label_h, pad = 18, 4
    canvas = Image.new("L", (3 * (tw + pad) + pad, len(rows) * (th + label_h + pad) + pad), 0)
    draw = ImageDraw.Draw(canvas)
    for r, ((label, _), row) in enumerate(zip(rows, tiles)):
        y = pad + r * (th + label_h + pad)
        for c, (name, tile) in enumerate(zip(("axial", "coronal", "sagittal"), row)):
            x = pad + c * (tw + pad)
            img = Image.fromarray(tile).resize((tile.shape[1] * scale, tile.shape[0] * scale), Image.NEAREST)
            canvas.paste(img, (x, y + label_h))
            draw.text((x + 2, y + 2), f"{label} - {name}", fill=255)
    with atomic_file(path) as tmp:
        canvas.save(tmp, format="PNG")


#: Files the demo writes into ``--out`` (none of them may be an input).
WRITTEN = ("xrays/ap.png", "xrays/ap.nrrd", "xrays/lateral.png", "xrays/lateral.nrrd", "xrays/geometry.json",
           "ground_truth.nii.gz", "reconstruction.nii.gz", "montage.png", "metrics.json")


def build_parser() -> argparse.ArgumentParser:
    from . import arguments

    parser = argparse.ArgumentParser(prog="python -m DiffuX2CTLib.demo", description=__doc__.splitlines()[0],
                                     formatter_class=arguments.HelpFormatter,
                                     epilog="exit codes: 0 success, 2 error, 130 SIGINT, 143 SIGTERM (forwarded to "
                                            "the worker, which writes nothing)")
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    parser.add_argument("--ct", type=Path, default=None, help="CT to use instead of the example chest CT")
    parser.add_argument("--series-uid", default=None, metavar="UID",
                        help="SeriesInstanceUID when --ct is a folder holding several DICOM series")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="trained checkpoint (default: the default model of Resources/Models.json)")
    parser.add_argument("--untrained", action="store_true", help="use a randomly initialised model (chain test)")
    parser.add_argument("--no-body-mask", action="store_true", help="keep the couch and padding in the CT")
    parser.add_argument("--size", type=arguments.positive_int, default=32,
                        help="volume/X-ray size of the --untrained model")
    parser.add_argument("--drr-size", type=arguments.positive_int, default=256, help="pixels of the written DRRs (M x M)")
    parser.add_argument("--drr-volume-size", type=arguments.positive_int, default=128,
                        help="CT grid the DRRs are computed from (N^3)")
    parser.add_argument("--steps", type=arguments.positive_int, default=25, help="sampler steps")
    parser.add_argument("--sampler", default=DEFAULT_SAMPLER, choices=SAMPLERS, help="sampler")
    parser.add_argument("--seed", type=arguments.seed, default=0, help="seed, 0 to 2**63-1")
    return parser


def check_outputs(args: argparse.Namespace) -> None:
    """``--out`` is a writable folder and none of the demo's files in it is an input; before any work."""
    from .io.outputs import check_output_folder

    inputs: list[tuple[str, Any]] = [("--ct", args.ct)]
    if args.checkpoint is not None:
        inputs += [("--checkpoint", args.checkpoint.with_suffix(".safetensors")),
                   ("--checkpoint", args.checkpoint.with_suffix(".json"))]
    check_output_folder(args.out, "--out", inputs=inputs, written=WRITTEN)


def run_demo(args: argparse.Namespace) -> tuple[Path, dict, bool]:
    """The chain; returns ``(reconstruction path, metrics, trained)``."""
    from .checkpoint import read_checkpoint_info
    from .data import fetch_example_ct
    from .errors import InputError
    from .geometry import BiplanarGeometry
    from .io.atomic import atomic_file
    from .io.body import clean_ct
    from .io.ct import model_array, read_ct, to_model_grid, write_ct
    from .metrics import volume_metrics
    from .simulate import simulate_xrays, write_simulation

    check_outputs(args)
    if args.series_uid is not None and args.ct is None:
        raise InputError(None, "--series-uid needs --ct (a folder holding DICOM series)")
    ct_path = args.ct or fetch_example_ct().ct
    print(f"CT: {ct_path}")
    checkpoint = args.checkpoint
    if checkpoint is None and not args.untrained:
        checkpoint = default_model()
    if checkpoint is not None:
        info = read_checkpoint_info(checkpoint)
        geometry, trained = info.geometry, info.trained
        spacing = geometry.volume_spacing_mm[0]
        print(f"model: {checkpoint} ({'trained' if trained else 'UNTRAINED'}, geometry {geometry.name} "
              f"{geometry.hash}, {geometry.volume_shape[0]}^3 CT of {spacing:g} mm voxels from "
              f"{geometry.detector_shape[0]}^2 radiographs)")
    else:
        geometry = BiplanarGeometry.preset("x2ct", volume_size=args.size, xray_size=args.size)
        trained = False
    # DRRs at full detector resolution in the model's physical set-up (another sampling, so another
    # geometry hash in xrays/geometry.json); the worker resamples them to the model's detector
    # keeping the millimetre scale (NRRD spacing).
    drr_geometry = geometry.with_sizes(volume_size=args.drr_volume_size, xray_size=args.drr_size)
    xray_dir = args.out / "xrays"
    ct = read_ct(ct_path, args.series_uid)
    if not args.no_body_mask:
        ct = clean_ct(ct, use_body_mask=True, path=str(ct_path)).image
    sim = simulate_xrays(ct, drr_geometry)
    write_simulation(sim, xray_dir, source=str(ct_path))
    print(f"DRRs ({drr_geometry.name} {drr_geometry.hash}, {args.drr_size}x{args.drr_size} from a "
          f"{args.drr_volume_size}^3 grid): {xray_dir}/ap.png, {xray_dir}/lateral.png")
    if checkpoint is None:
        checkpoint = build_untrained_checkpoint(geometry, args.out / "model", seed=args.seed)
    if not trained:
        print(UNTRAINED_BANNER)
    truth_path = args.out / "ground_truth.nii.gz"
    write_ct(to_model_grid(ct, geometry, center_lps=sim.ct_center_lps), truth_path)
    recon_path = args.out / "reconstruction.nii.gz"
    result = run_worker(xray_dir / "ap.nrrd", xray_dir / "lateral.nrrd", Path(checkpoint), recon_path,
                        args.steps, args.sampler, args.seed)
    truth = model_array(read_ct(truth_path, allow_air_only=True))
    recon = model_array(read_ct(recon_path, allow_air_only=True))
    metrics = volume_metrics(recon, truth)
    save_montage(args.out / "montage.png", [("truth", truth), ("recon", recon)])
    report = {"model_trained": trained, "note": None if trained else UNTRAINED_BANNER, "metrics": metrics,
              "reconstruction": str(recon_path), "ct": str(ct_path), "worker": result.get("details", {}),
              "warnings": result.get("warnings", [])}
    with atomic_file(args.out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    return recon_path, metrics, trained


def main(argv: Sequence[str] | None = None) -> int:
    from .arguments import exception_line, os_error_line
    from .errors import DiffuX2CTError

    args = build_parser().parse_args(argv)
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, _on_signal)
        except ValueError:  # not the main thread: no forwarding
            break
    try:
        recon_path, metrics, trained = run_demo(args)
    except DiffuX2CTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except Interrupted as exc:
        name = "SIGINT" if exc.signum == signal.SIGINT else "SIGTERM"
        print(f"interrupted by {name}; the reconstruction worker (if it was running) was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED if exc.signum == signal.SIGINT else EXIT_TERMINATED
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        print(f"error: unexpected {exception_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"reconstruction: {recon_path}\nmontage: {args.out / 'montage.png'}\nmetrics: {args.out / 'metrics.json'}")
    print("metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
          + ("" if trained else "   (untrained model: not meaningful)"))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
