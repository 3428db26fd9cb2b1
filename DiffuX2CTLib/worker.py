"""Background reconstruction process run by the Slicer module (and usable from any shell).

    python -m DiffuX2CTLib.worker --ap AP --lateral LAT --checkpoint MODEL.safetensors \
        --steps 25 --sampler dpmsolver++-sde --seed 0 --device auto --output ct.nrrd [--std std.nrrd] \
        [--parent-pid PID] [--xray-encoding auto|line-integral|intensity|display] [--apply-voi] \
        [--display-gamma 1] [--scatter-to-primary 0.3] [--log-units-per-decade N] \
        [--pixel-spacing ROW,COL | --field-of-view-mm W[,H]] [--no-detect-overlays]

Protocol on stdout (each line flushed at once):

* ``PROGRESS i/N`` after each sampler step;
* one final JSON line: ``{"status": "ok", "output": ..., "std": ..., "details": {...}, "warnings": [...]}``
  or ``{"status": "error" | "cancelled", "error": "...", "exit_code": K, "warnings": [...]}``.
  ``warnings`` is always present (possibly empty): the assumptions made while reading the
  radiographs, e.g. ``"ap (film.dcm): a PA film is used as the AP view: ..."``.
  ``details["xrays"]`` says per view how its radiograph was read (encoding path, orientation,
  magnification, pixel size at the isocentre). See README "How a real radiograph is read".

Exit codes (also in ``--help``): 0 success; 2 bad input (arguments, X-ray files, output path);
3 bad checkpoint; 4 runtime failure (e.g. out of memory); 5 cancelled by SIGTERM or SIGINT, which
stops sampling before the next network evaluation (on Windows also by CTRL_BREAK_EVENT, i.e.
SIGBREAK), or by a closed stdout (the next ``PROGRESS`` write fails: the reader is gone). Every
exit, argparse usage errors and unexpected exceptions included, ends with the final JSON line
(unless stdout is closed) and never with a traceback.

Before any heavy work: the argument values (seed in [0, 2**63-1], device syntax and CUDA
availability, positive counts, finite numbers), the outputs (:mod:`DiffuX2CTLib.io.outputs`: not a
folder, writable folder, ``--std`` not ``--output``, no output equal to an input), the input files
and the checkpoint's description. Outputs are written to temporary files and renamed only when
all are complete and no cancel arrived meanwhile, so a failed or cancelled run (SIGTERM during the
final write included) leaves no output file behind.

A ``geometry.json`` beside ``--ap`` (written by ``diffux2ct simulate``) supplies the isocentre only
when its geometry is the checkpoint's physical set-up (:meth:`BiplanarGeometry.same_setup`: the same
hash, or the same set-up sampled on other grids); otherwise it is ignored with a warning.

``--parent-pid PID`` (optional) names the process that started the worker, e.g. 3D Slicer: a
watchdog thread checks about once a second whether that process still exists and, once it is gone,
cancels the run exactly like SIGTERM (exit code 5), so a worker whose application died does not
keep sampling as an orphan. On POSIX a process is gone when ``os.kill(pid, 0)`` fails, when it is
a zombie, or, if it was the worker's direct parent, when ``os.getppid()`` changed; on Windows the
worker waits on a handle of the process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
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


#: Set once a write to stdout failed (the reader, e.g. the parent process, is gone).
_STDOUT_BROKEN = threading.Event()
#: The run's cancel event, set by :func:`_emit` when stdout breaks.
_CANCEL_ON_BROKEN_STDOUT: list[threading.Event] = []


def _emit(line: str) -> None:
    """Write one protocol line; a closed stdout (BrokenPipeError) cancels the run instead of raising."""
    if _STDOUT_BROKEN.is_set():
        return
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):  # BrokenPipeError, EIO, or a closed file object
        _STDOUT_BROKEN.set()
        try:  # later writes and the interpreter's final flush go nowhere instead of raising again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass
        for event in _CANCEL_ON_BROKEN_STDOUT:
            event.set()


def _parse_isocenter(text: str) -> tuple[float, float, float]:
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected x,y,z in LPS millimetres, got {text!r}") from None
    if len(parts) != 3 or not all(math.isfinite(v) for v in parts):
        raise argparse.ArgumentTypeError(f"expected three finite numbers x,y,z in LPS millimetres, got {text!r}")
    return tuple(parts)  # type: ignore[return-value]


def _parse_eta(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _parse_pid(text: str) -> int:
    pid = int(text)
    if pid <= 0:
        raise argparse.ArgumentTypeError("expected a positive process id")
    return pid


def _mm_values(counts: tuple[int, ...], what: str):
    """argparse type: comma-separated positive millimetres, ``counts`` values allowed."""

    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} in mm, got {text!r}") from None
        if len(values) not in counts or not all(v > 0 and v != float("inf") for v in values):
            raise argparse.ArgumentTypeError(f"expected {what}: positive mm, got {text!r}")
        return values

    return parse


def _encoding_spec(text: str):
    """``ENCODING`` (both views) or ``VIEW=ENCODING[,VIEW=ENCODING]`` (a dict) for ``--xray-encoding``."""
    from .geometry import VIEW_NAMES
    from .io.xray_encoding import ENCODINGS

    choices = ("auto", *ENCODINGS)
    if "=" not in text:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from {', '.join(choices)}, "
                                             "or VIEW=ENCODING,...)")
        return text
    spec: dict[str, str] = {}
    for part in text.split(","):
        view, _, encoding = (x.strip() for x in part.partition("="))
        if view not in VIEW_NAMES or encoding not in choices or view in spec:
            raise argparse.ArgumentTypeError(f"expected VIEW=ENCODING pairs with VIEW in {', '.join(VIEW_NAMES)} (each "
                                             f"once) and ENCODING in {', '.join(choices)}, got {text!r}")
        spec[view] = encoding
    return spec


def add_reading_arguments(p: argparse.ArgumentParser) -> None:
    """The radiograph-reading options (README "How a real radiograph is read")."""
    from .io.xray_encoding import DEFAULT_DISPLAY_GAMMA, ENCODINGS
    from .io.xray_scatter import DEFAULT_SCATTER_FWHM_MM, DEFAULT_SCATTER_TO_PRIMARY

    g = p.add_argument_group("reading real radiographs")
    g.add_argument("--xray-encoding", default="auto", type=_encoding_spec, metavar="ENCODING | VIEW=ENCODING,...",
                   help=f"how pixel values relate to the X-rays ({', '.join(('auto', *ENCODINGS))}): auto (default: "
                        "DICOM PixelIntensityRelationship; NRRD, PNG, TIFF, JPEG taken as line integrals), "
                        "line-integral (bright = dense, linear), intensity (linear detector signal: -ln) or display "
                        "(a film for viewing, bright = dense). One for both views, or per view, e.g. "
                        "lateral=display (views left out: auto)")
    g.add_argument("--apply-voi", action=argparse.BooleanOptionalAction, default=False,
                   help="apply a DICOM VOI LUT/window before reading (default: no; never on LIN data)")
    g.add_argument("--display-gamma", type=float, default=DEFAULT_DISPLAY_GAMMA, metavar="GAMMA",
                   help=f"gamma undone by --xray-encoding display (default {DEFAULT_DISPLAY_GAMMA:g}: grey levels "
                        "linear in the processed film, as viewers export them; 2.2 for an sRGB-encoded image)")
    g.add_argument("--pixel-spacing", type=_mm_values((2,), "ROW,COL"), default=None, metavar="ROW,COL",
                   help="detector pixel pitch in mm for films whose file has no spacing (else they are refused)")
    g.add_argument("--field-of-view-mm", type=_mm_values((1, 2), "W[,H]"), default=None, metavar="W[,H]",
                   help="width (and height) of the whole image at the detector in mm, for films without spacing")
    g.add_argument("--detect-overlays", action=argparse.BooleanOptionalAction, default=True,
                   help="find burned-in labels and collimation borders in films and leave them out (default: yes)")
    g.add_argument("--scatter-to-primary", type=float, default=DEFAULT_SCATTER_TO_PRIMARY, metavar="SPR",
                   help=f"scatter removed from films, as a fraction of the primary, in [0, 1) (default "
                        f"{DEFAULT_SCATTER_TO_PRIMARY:g}: a chest film with a grid; 0 = off); the scale of log and "
                        "display films is estimated from a body prior")
    g.add_argument("--scatter-fwhm-mm", type=float, default=DEFAULT_SCATTER_FWHM_MM, metavar="MM",
                   help=f"FWHM of the scatter kernel at the detector (default {DEFAULT_SCATTER_FWHM_MM:g} mm)")
    g.add_argument("--log-units-per-decade", type=float, default=None, metavar="N",
                   help="stored units per factor 10 of exposure of LOG films, when the system's value is known "
                        "(e.g. 1000); default: estimated from a body prior")


def reading_options(args: argparse.Namespace):
    """:class:`~DiffuX2CTLib.io.radiograph.RadiographOptions` from parsed arguments."""
    from .io.radiograph import RadiographOptions

    return RadiographOptions(
        xray_encoding=args.xray_encoding, apply_voi=args.apply_voi, display_gamma=args.display_gamma,
        pixel_spacing_mm=args.pixel_spacing, field_of_view_mm=args.field_of_view_mm,
        detect_overlays=args.detect_overlays, scatter_to_primary=args.scatter_to_primary,
        scatter_fwhm_mm=args.scatter_fwhm_mm, log_units_per_decade=args.log_units_per_decade)


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


EPILOG = """\
exit codes (the last line on stdout is always one JSON object with "status", "exit_code" and "warnings"):
  0  success: the output CT (and --std) written
  2  bad input: an argument (also a usage error, a seed outside [0, 2**63-1], --device banana or cuda
     without a GPU), an X-ray file (missing, unreadable, too many pixels), an output path (a folder,
     not writable, --std equal to --output, one of the inputs); all checked before sampling
  3  bad checkpoint: missing, corrupt, edited (digest), incompatible, or a bad geometry in its JSON
  4  runtime failure, e.g. out of memory
  5  cancelled: SIGTERM, SIGINT, --parent-pid gone, or stdout closed; nothing is written
"""


def build_parser() -> argparse.ArgumentParser:
    from . import arguments

    p = arguments.RaisingArgumentParser(prog="python -m DiffuX2CTLib.worker (or: diffux2ct reconstruct)",
                                        description="DiffuX2CT reconstruction worker.", epilog=EPILOG,
                                        formatter_class=arguments.HelpFormatter)
    p.add_argument("--ap", required=True, type=Path, help="AP radiograph (DICOM, PNG, TIFF, JPEG or NRRD)")
    p.add_argument("--lateral", required=True, type=Path, help="lateral radiograph")
    p.add_argument("--checkpoint", required=True, type=Path, help="NAME.safetensors (with NAME.json beside it)")
    p.add_argument("--steps", type=arguments.positive_int, default=25, help="sampler steps")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, choices=SAMPLERS,
                   help="dpmsolver++-sde (stochastic DPM-Solver++ 2M), dpmsolver++ (its deterministic "
                        "ODE form), ddim or ddpm")
    p.add_argument("--seed", type=arguments.seed, default=0, help="seed of the initial noise, 0 to 2**63-1")
    p.add_argument("--device", type=arguments.device, default="auto",
                   help="auto (CUDA if available, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--num-samples", type=arguments.positive_int, default=1,
                   help="samples to average; >1 enables --std")
    p.add_argument("--eta", type=_parse_eta, default=0.0, help="DDIM eta (0 = deterministic)")
    p.add_argument("--isocenter", type=_parse_isocenter, default=None,
                   help="x,y,z LPS mm of the volume centre (default: from a geometry.json beside --ap, else 0,0,0)")
    p.add_argument("--output", required=True, type=Path, help="output CT in HU (.nrrd, .nii.gz, .nii, .mha)")
    p.add_argument("--std", type=Path, default=None, help="per-voxel standard deviation output (needs --num-samples > 1)")
    p.add_argument("--parent-pid", type=_parse_pid, default=None, metavar="PID",
                   help="process that started the worker (e.g. 3D Slicer): checked about every "
                        f"{PARENT_CHECK_INTERVAL_S:g} s; once it is gone the run is cancelled as by SIGTERM "
                        "(exit code 5), so no orphan keeps sampling")
    add_reading_arguments(p)
    return p


def _check_outputs(args: argparse.Namespace) -> None:
    """Before any heavy work: each output is a writable file path with a CT suffix, not a folder,
    not an input, and ``--std`` is not ``--output`` (paths compared after resolving)."""
    from .io.ct import WRITE_SUFFIXES
    from .io.outputs import check_distinct_outputs, check_output_file

    checkpoint = Path(args.checkpoint)
    inputs = [("--ap", args.ap), ("--lateral", args.lateral), ("--checkpoint", checkpoint.with_suffix(".safetensors")),
              ("--checkpoint", checkpoint.with_suffix(".json"))]
    check_distinct_outputs([("--output", args.output), ("--std", args.std)])
    for flag, path in (("--output", args.output), ("--std", args.std)):
        if path is not None:
            check_output_file(path, flag, WRITE_SUFFIXES, inputs)


def _sidecar_isocenter(sidecar: Path, geometry, notes: list[str]) -> tuple[float, float, float] | None:
    """The isocentre of a ``geometry.json`` beside ``--ap``, used only when its geometry is the
    checkpoint's (same hash, or the same physical set-up sampled on other grids, as the demo's
    DRRs); otherwise ``None`` and a warning in ``notes`` (the volume is then centred at 0,0,0)."""
    from .geometry import BiplanarGeometry

    def ignored(why: str) -> None:
        notes.append(f"{sidecar}: ignored ({why}); the output is centred at the LPS origin unless --isocenter is given")

    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        recorded = BiplanarGeometry.from_dict(data["geometry"])
        isocenter = tuple(float(v) for v in data["isocenter_lps_mm"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        ignored(f"not a readable geometry sidecar: {' '.join(str(exc).split())[:120] or type(exc).__name__}")
        return None
    if len(isocenter) != 3 or not all(math.isfinite(v) for v in isocenter):
        ignored("isocenter_lps_mm is not three finite numbers")
        return None
    if not recorded.same_setup(geometry):
        ignored(f"it describes geometry {recorded.name!r} ({recorded.hash}), not the checkpoint's "
                f"{geometry.name!r} ({geometry.hash}): these radiographs were not made for this model")
        return None
    return isocenter  # type: ignore[return-value]


@contextlib.contextmanager
def _checkpoint_warnings_to(notes: list[str]):
    """Collect :class:`~DiffuX2CTLib.checkpoint.CheckpointWarning` messages into ``notes`` (the
    JSON's ``warnings``); other Python warnings still go to stderr."""
    import warnings

    from .checkpoint import CheckpointWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            yield
        finally:
            for item in caught:
                if issubclass(item.category, CheckpointWarning):
                    if str(item.message) not in notes:
                        notes.append(str(item.message))
                else:
                    warnings.showwarning(item.message, item.category, item.filename, item.lineno)


def run(args: argparse.Namespace, cancel_event: threading.Event, notes: list[str] | None = None) -> dict:
    """Do the reconstruction; raises DiffuX2CT errors for the caller to map to exit codes.

    Cheap checks come first, in this order, so a bad argument never costs a sampling run: the
    device, the outputs (:func:`_check_outputs`), ``--std`` needs samples, the input files exist,
    the checkpoint's description (exit code 3). ``notes`` (if given) receives warnings for the
    JSON line, also when the run fails.
    """
    from .arguments import check_device_available
    from .checkpoint import read_checkpoint_info
    from .inference import reconstruct
    from .io.atomic import atomic_file
    from .io.ct import write_ct

    notes = [] if notes is None else notes
    check_device_available(args.device)
    _check_outputs(args)
    if args.std is not None and args.num_samples < 2:
        raise InputError(args.std, "--std needs --num-samples of 2 or more")
    for flag, path in (("--ap", args.ap), ("--lateral", args.lateral)):
        if not path.exists():
            raise InputError(path, f"{flag} file not found")
        if path.is_dir():
            raise InputError(path, f"{flag} is a folder, not an image file")
    with _checkpoint_warnings_to(notes):
        info = read_checkpoint_info(args.checkpoint)
    isocenter = args.isocenter
    sidecar = args.ap.parent / "geometry.json"
    if isocenter is None and sidecar.is_file():
        isocenter = _sidecar_isocenter(sidecar, info.geometry, notes)

    def progress(i: int, n: int) -> None:
        _emit(f"PROGRESS {i}/{n}")

    with _checkpoint_warnings_to(notes):
        result = reconstruct(
            args.ap, args.lateral, args.checkpoint, steps=args.steps, sampler=args.sampler, seed=args.seed,
            device=args.device, num_samples=args.num_samples, progress=progress, cancel=cancel_event.is_set,
            isocenter_lps=isocenter or (0.0, 0.0, 0.0), eta=args.eta, reading=reading_options(args),
        )
    if cancel_event.is_set():
        raise CancelledError("cancelled after sampling; nothing written")
    outputs = [(result.ct, args.output)]
    if args.std is not None and result.std is not None:
        outputs.append((result.std, args.std))
    with contextlib.ExitStack() as stack:  # all outputs or none: each renamed into place only at the end
        for image, path in outputs:
            write_ct(image, stack.enter_context(atomic_file(path)))
        if cancel_event.is_set():  # SIGTERM while writing: the complete temporary files are removed too
            raise CancelledError("cancelled while writing; nothing written")
    return {"status": "ok", "output": str(args.output), "std": str(args.std) if args.std else None,
            "details": result.details, "warnings": [*notes, *result.warnings]}


def _final_line(outcome: dict, code: int) -> int:
    """Emit the final JSON line (always with ``exit_code`` and ``warnings``); one ``error:`` line on stderr."""
    outcome["exit_code"] = code
    outcome.setdefault("warnings", [])  # always present (README "worker protocol")
    _emit(json.dumps(outcome))
    if code not in (EXIT_OK,):
        try:
            print(f"error: {outcome['error']}", file=sys.stderr, flush=True)
        except (OSError, ValueError):  # stderr may be closed with the parent
            pass
    return code


def main(argv: Sequence[str] | None = None) -> int:
    from .arguments import ArgumentError, exception_line, os_error_line

    cancel_event = threading.Event()
    _STDOUT_BROKEN.clear()
    _CANCEL_ON_BROKEN_STDOUT[:] = [cancel_event]

    def on_signal(signum, _frame) -> None:
        cancel_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if hasattr(signal, "SIGBREAK"):  # Windows: CTRL_BREAK_EVENT sent to the worker's process group
        signal.signal(signal.SIGBREAK, on_signal)
    try:
        args = build_parser().parse_args(argv)
    except ArgumentError as exc:  # usage errors get the final JSON line too
        try:
            print(exc.usage, file=sys.stderr)
        except (OSError, ValueError):
            pass
        return _final_line({"status": "error", "error": f"bad argument: {exc}"}, EXIT_BAD_INPUT)
    except SystemExit as exc:  # --help
        return EXIT_BAD_INPUT if exc.code else EXIT_OK
    stop_watchdog, watchdog, cancel_reason = threading.Event(), None, []
    if args.parent_pid is not None:
        watchdog = _watch_parent(args.parent_pid, cancel_event, stop_watchdog, cancel_reason)
    notes: list[str] = []
    try:
        outcome = run(args, cancel_event, notes)
        code = EXIT_OK
    except CancelledError as exc:
        if _STDOUT_BROKEN.is_set():
            cancel_reason.insert(0, "stdout was closed (whoever read it is gone)")
        message = f"{cancel_reason[0]}; {exc}" if cancel_reason else str(exc)
        outcome, code = {"status": "cancelled", "error": message}, EXIT_CANCELLED
    except CheckpointError as exc:
        outcome, code = {"status": "error", "error": str(exc)}, EXIT_BAD_CHECKPOINT
    except InputError as exc:
        outcome, code = {"status": "error", "error": str(exc)}, EXIT_BAD_INPUT
    except OSError as exc:  # a file of the user's that could not be read or written
        outcome, code = {"status": "error", "error": os_error_line(exc)}, EXIT_BAD_INPUT
    except (DiffuX2CTError, RuntimeError, MemoryError) as exc:
        outcome, code = {"status": "error", "error": exception_line(exc)}, EXIT_RUNTIME
    except Exception as exc:  # noqa: BLE001 - a JSON line and an exit code, never a traceback
        outcome, code = {"status": "error", "error": f"unexpected {exception_line(exc)}"}, EXIT_RUNTIME
    finally:
        stop_watchdog.set()
        if watchdog is not None:
            watchdog.join(timeout=2 * PARENT_CHECK_INTERVAL_S)
    if code != EXIT_OK:
        outcome["warnings"] = list(notes)
    return _final_line(outcome, code)


if __name__ == "__main__":
    sys.exit(main())
