"""Background reconstruction process run by the Slicer module (and usable from any shell).

    python -m DiffuX2CTLib.worker --ap AP --lateral LAT --checkpoint MODEL.safetensors \
        --steps 25 --sampler dpmsolver++-sde --seed 0 --device auto --output ct.nrrd [--std std.nrrd]

Protocol on stdout (each line flushed at once):

* ``PROGRESS i/N`` after each sampler step;
* one final JSON line: ``{"status": "ok", "output": ..., "std": ..., "details": {...}}`` or
  ``{"status": "error" | "cancelled", "error": "...", "exit_code": K}``.

Exit codes: 0 success; 2 bad input (arguments, X-ray files, output path); 3 bad checkpoint;
4 runtime failure (e.g. out of memory); 5 cancelled by SIGTERM or SIGINT, which stops sampling
before the next network evaluation. Outputs are written to temporary files and renamed only
when complete, so a failed or cancelled run leaves no output file behind.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from .diffusion.config import DEFAULT_SAMPLER, SAMPLERS
from .errors import CancelledError, CheckpointError, DiffuX2CTError, InputError

EXIT_OK, EXIT_BAD_INPUT, EXIT_BAD_CHECKPOINT, EXIT_RUNTIME, EXIT_CANCELLED = 0, 2, 3, 4, 5


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _parse_isocenter(text: str) -> tuple[float, float, float]:
    parts = [float(v) for v in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("expected x,y,z in LPS millimetres")
    return tuple(parts)  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m DiffuX2CTLib.worker (or: diffux2ct reconstruct)",
                                description="DiffuX2CT reconstruction worker.")
    p.add_argument("--ap", required=True, type=Path, help="AP radiograph (DICOM, PNG, TIFF, JPEG or NRRD)")
    p.add_argument("--lateral", required=True, type=Path, help="lateral radiograph")
    p.add_argument("--checkpoint", required=True, type=Path, help="NAME.safetensors (with NAME.json beside it)")
    p.add_argument("--steps", type=int, default=25, help="sampler steps")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, choices=SAMPLERS,
                   help="dpmsolver++-sde (default: stochastic DPM-Solver++ 2M), dpmsolver++ (its deterministic "
                        "ODE form), ddim or ddpm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--num-samples", type=int, default=1, help="samples to average; >1 enables --std")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    p.add_argument("--isocenter", type=_parse_isocenter, default=None,
                   help="x,y,z LPS mm of the volume centre (default: from a geometry.json beside --ap, else 0,0,0)")
    p.add_argument("--output", required=True, type=Path, help="output CT in HU (.nrrd, .nii.gz, .nii, .mha)")
    p.add_argument("--std", type=Path, default=None, help="per-voxel standard deviation output (needs --num-samples > 1)")
    return p


def _check_output(path: Path, flag: str) -> None:
    from .io.ct import WRITE_SUFFIXES

    if not str(path).endswith(WRITE_SUFFIXES):
        raise InputError(path, f"{flag} must end with one of {', '.join(WRITE_SUFFIXES)}")
    if path.parent and not path.parent.exists():
        raise InputError(path, f"folder of {flag} does not exist")


def run(args: argparse.Namespace, cancel_event: threading.Event) -> dict:
    """Do the reconstruction; raises DiffuX2CT errors for the caller to map to exit codes."""
    from .inference import read_isocenter, reconstruct
    from .io.ct import write_ct

    _check_output(args.output, "--output")
    if args.std is not None:
        _check_output(args.std, "--std")
        if args.num_samples < 2:
            raise InputError(args.std, "--std needs --num-samples of 2 or more")
    for flag, path in (("--ap", args.ap), ("--lateral", args.lateral)):
        if not path.exists():
            raise InputError(path, f"{flag} file not found")
    isocenter = args.isocenter
    sidecar = args.ap.parent / "geometry.json"
    if isocenter is None and sidecar.is_file():
        isocenter = read_isocenter(sidecar)

    def progress(i: int, n: int) -> None:
        _emit(f"PROGRESS {i}/{n}")

    result = reconstruct(
        args.ap, args.lateral, args.checkpoint, steps=args.steps, sampler=args.sampler, seed=args.seed,
        device=args.device, num_samples=args.num_samples, progress=progress, cancel=cancel_event.is_set,
        isocenter_lps=isocenter or (0.0, 0.0, 0.0), eta=args.eta,
    )
    if cancel_event.is_set():
        raise CancelledError("cancelled after sampling; nothing written")
    written = [write_ct(result.ct, args.output)]
    if args.std is not None and result.std is not None:
        try:
            written.append(write_ct(result.std, args.std))
        except BaseException:
            args.output.unlink(missing_ok=True)  # all outputs or none
            raise
    return {"status": "ok", "output": str(args.output), "std": str(args.std) if args.std else None,
            "details": result.details}


def main(argv: Sequence[str] | None = None) -> int:
    cancel_event = threading.Event()

    def on_signal(signum, _frame) -> None:
        cancel_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return EXIT_BAD_INPUT if exc.code else EXIT_OK
    try:
        outcome = run(args, cancel_event)
        code = EXIT_OK
    except CancelledError as exc:
        outcome, code = {"status": "cancelled", "error": str(exc)}, EXIT_CANCELLED
    except CheckpointError as exc:
        outcome, code = {"status": "error", "error": str(exc)}, EXIT_BAD_CHECKPOINT
    except InputError as exc:
        outcome, code = {"status": "error", "error": str(exc)}, EXIT_BAD_INPUT
    except (DiffuX2CTError, RuntimeError, MemoryError) as exc:
        outcome, code = {"status": "error", "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}, EXIT_RUNTIME
    outcome["exit_code"] = code
    _emit(json.dumps(outcome))
    if code not in (EXIT_OK,):
        print(f"error: {outcome['error']}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
