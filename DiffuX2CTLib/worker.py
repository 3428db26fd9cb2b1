"""Background reconstruction process run by the Slicer module (and usable from any shell).

    python -m DiffuX2CTLib.worker --ap AP --lateral LAT --checkpoint MODEL.safetensors \
        --steps 25 --sampler dpmsolver++-sde --seed 0 --device auto --output ct.nrrd [--std std.nrrd] \
        [--parent-pid PID]

Protocol on stdout (each line flushed at once):

* ``PROGRESS i/N`` after each sampler step;
* one final JSON line: ``{"status": "ok", "output": ..., "std": ..., "details": {...}}`` or
  ``{"status": "error" | "cancelled", "error": "...", "exit_code": K}``.

Exit codes: 0 success; 2 bad input (arguments, X-ray files, output path); 3 bad checkpoint;
4 runtime failure (e.g. out of memory); 5 cancelled by SIGTERM or SIGINT, which stops sampling
before the next network evaluation (on Windows also by CTRL_BREAK_EVENT, i.e. SIGBREAK). Outputs
are written to temporary files and renamed only when complete, so a failed or cancelled run leaves
no output file behind.

``--parent-pid PID`` (optional) names the process that started the worker, e.g. 3D Slicer: a
watchdog thread checks about once a second whether that process still exists and, once it is gone,
cancels the run exactly like SIGTERM (exit code 5), so a worker whose application died does not
keep sampling as an orphan. On POSIX a process is gone when ``os.kill(pid, 0)`` fails, when it is
a zombie, or, if it was the worker's direct parent, when ``os.getppid()`` changed; on Windows the
worker waits on a handle of the process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from .diffusion.config import DEFAULT_SAMPLER, SAMPLERS
from .errors import CancelledError, CheckpointError, DiffuX2CTError, InputError

EXIT_OK, EXIT_BAD_INPUT, EXIT_BAD_CHECKPOINT, EXIT_RUNTIME, EXIT_CANCELLED = 0, 2, 3, 4, 5

#: Seconds between two checks of ``--parent-pid``.
PARENT_CHECK_INTERVAL_S = 1.0


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _parse_isocenter(text: str) -> tuple[float, float, float]:
    parts = [float(v) for v in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("expected x,y,z in LPS millimetres")
    return tuple(parts)  # type: ignore[return-value]


def _parse_pid(text: str) -> int:
    pid = int(text)
    if pid <= 0:
        raise argparse.ArgumentTypeError("expected a positive process id")
    return pid


class _ProcessProbe:
    """Tells whether process ``pid`` has ended (best effort; never raises)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._was_parent = os.name != "nt" and os.getppid() == pid
        self._handle = None
        self._gone_at_start = False
        if os.name == "nt":
            try:
                import ctypes

                kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
                kernel32.OpenProcess.restype = ctypes.c_void_p
                synchronize = 0x00100000
                self._kernel32 = kernel32
                self._handle = kernel32.OpenProcess(synchronize, False, pid)
                # no handle: the process does not exist (or we may not see it; then stay quiet)
                self._gone_at_start = not self._handle and ctypes.get_last_error() == 87  # ERROR_INVALID_PARAMETER
            except (ImportError, OSError, AttributeError):
                self._handle = None

    def gone(self) -> bool:
        if os.name == "nt":
            if self._gone_at_start:
                return True
            if not self._handle:
                return False
            try:
                import ctypes

                return self._kernel32.WaitForSingleObject(ctypes.c_void_p(self._handle), 0) == 0  # WAIT_OBJECT_0
            except (OSError, AttributeError):
                return False
        if self._was_parent and os.getppid() != self.pid:
            return True  # re-parented: the parent has exited
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # e.g. PermissionError: it exists under another user
            return False
        try:  # an exited process not yet reaped (zombie) still answers kill(pid, 0)
            with open(f"/proc/{self.pid}/stat", encoding="ascii", errors="replace") as stat:
                return stat.read().rpartition(")")[2].split()[0] in ("Z", "X")
        except (OSError, IndexError):
            return False


def _watch_parent(pid: int, cancel_event: threading.Event, stop_event: threading.Event,
                  reason: list) -> threading.Thread:
    """Start a daemon thread that sets ``cancel_event`` once process ``pid`` is gone."""
    probe = _ProcessProbe(pid)

    def loop() -> None:
        while True:
            if probe.gone():
                reason.append(f"parent process {pid} ended")
                try:
                    print(f"parent process {pid} ended; cancelling", file=sys.stderr, flush=True)
                except (OSError, ValueError):  # stderr may be closed with the parent
                    pass
                cancel_event.set()
                return
            if stop_event.wait(PARENT_CHECK_INTERVAL_S):
                return

    thread = threading.Thread(target=loop, name="DiffuX2CT-parent-watchdog", daemon=True)
    thread.start()
    return thread


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
    p.add_argument("--parent-pid", type=_parse_pid, default=None, metavar="PID",
                   help="process that started the worker (e.g. 3D Slicer): checked about every "
                        f"{PARENT_CHECK_INTERVAL_S:g} s; once it is gone the run is cancelled as by SIGTERM "
                        "(exit code 5), so no orphan keeps sampling")
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
    if hasattr(signal, "SIGBREAK"):  # Windows: CTRL_BREAK_EVENT sent to the worker's process group
        signal.signal(signal.SIGBREAK, on_signal)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return EXIT_BAD_INPUT if exc.code else EXIT_OK
    stop_watchdog, watchdog, cancel_reason = threading.Event(), None, []
    if args.parent_pid is not None:
        watchdog = _watch_parent(args.parent_pid, cancel_event, stop_watchdog, cancel_reason)
    try:
        outcome = run(args, cancel_event)
        code = EXIT_OK
    except CancelledError as exc:
        message = f"{cancel_reason[0]}; {exc}" if cancel_reason else str(exc)
        outcome, code = {"status": "cancelled", "error": message}, EXIT_CANCELLED
    except CheckpointError as exc:
        outcome, code = {"status": "error", "error": str(exc)}, EXIT_BAD_CHECKPOINT
    except InputError as exc:
        outcome, code = {"status": "error", "error": str(exc)}, EXIT_BAD_INPUT
    except (DiffuX2CTError, RuntimeError, MemoryError) as exc:
        outcome, code = {"status": "error", "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}, EXIT_RUNTIME
    finally:
        stop_watchdog.set()
        if watchdog is not None:
            watchdog.join(timeout=2 * PARENT_CHECK_INTERVAL_S)
    outcome["exit_code"] = code
    _emit(json.dumps(outcome))
    if code not in (EXIT_OK,):
        print(f"error: {outcome['error']}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
