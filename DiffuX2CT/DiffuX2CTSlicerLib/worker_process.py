"""The background reconstruction process: start it, follow it, cancel it, collect its outputs.

:class:`WorkerProcess` runs ``python -m DiffuX2CTLib.worker`` (see that module for the
command-line options and the stdout protocol) in a child process and never blocks the caller:

* :meth:`WorkerProcess.start` spawns the worker in its own process group (POSIX: a new session;
  Windows: ``CREATE_NEW_PROCESS_GROUP``) with unbuffered output, writing into a private temporary
  folder (``tempfile.mkdtemp(prefix="DiffuX2CT-")``); two reader threads push the worker's stdout
  and stderr lines into a queue.
* :meth:`WorkerProcess.poll` is called from the thread that owns the object -- a ``QTimer`` in
  Slicer's GUI thread, a loop in scripts (:meth:`WorkerProcess.wait`). It drains the queue,
  reports ``PROGRESS i/N`` lines to ``on_progress(i, n)``, every line to ``on_log(line)`` and,
  once the process has exited and its output is drained, parses the final JSON line, settles the
  state and calls ``on_finished(result)``. All callbacks run inside ``poll`` (so in the GUI thread).
* :meth:`WorkerProcess.cancel` asks the whole process group to stop (SIGTERM; on Windows
  ``CTRL_BREAK_EVENT``): the worker stops before its next network evaluation and exits with code 5.
  If the process is still there after the grace period, the next ``poll`` kills the group (SIGKILL;
  on Windows ``taskkill /T /F``), so no process of the tree is left.
* The outputs (``ct.nrrd``, and ``std.nrrd`` when ``num_samples > 1``) are reported only when the
  run SUCCEEDED and the files exist; :meth:`WorkerProcess.take_outputs` hands them to the caller,
  which loads them (or moves them elsewhere) and then calls :meth:`WorkerProcess.cleanup`.

The worker is given ``--parent-pid`` of this process, so it cancels itself if the application dies.

Life cycle: this module registers nothing global (no ``atexit`` hook, no signal handler). The
Slicer module that owns a ``WorkerProcess`` must call :meth:`WorkerProcess.cleanup` on scene close,
on module cleanup and on application exit; ``cleanup`` kills a running worker, removes the temporary
folder, and is safe to call more than once.

Only the standard library is imported here; nothing imports Qt or ``slicer``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

__all__ = ["WorkerProcess", "WorkerRequest", "WorkerResult", "WorkerState", "WORKER_MODULE"]

log = logging.getLogger(__name__)

#: The module run with ``python -m``.
WORKER_MODULE = "DiffuX2CTLib.worker"
#: File names of the outputs inside the temporary folder.
OUTPUT_NAME, STD_NAME = "ct.nrrd", "std.nrrd"

_PROGRESS = re.compile(r"^PROGRESS\s+(\d+)\s*/\s*(\d+)\s*$")
_WINDOWS = os.name == "nt"
_EXIT_CANCELLED = 5
_STDOUT, _STDERR = "stdout", "stderr"
_LOG_LINES_KEPT = 5000
_STDERR_TAIL_KEPT = 20


class WorkerState(enum.Enum):
    """``IDLE -> RUNNING -> (CANCELLING ->) SUCCEEDED | FAILED | CANCELLED``."""

    IDLE = "idle"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """A process is (or may still be) running."""
        return self in (WorkerState.RUNNING, WorkerState.CANCELLING)

    @property
    def finished(self) -> bool:
        return self in (WorkerState.SUCCEEDED, WorkerState.FAILED, WorkerState.CANCELLED)


@dataclass
class WorkerRequest:
    """What to reconstruct; mirrors the worker's command-line options.

    ``sampler=None`` leaves the choice to the worker (its default sampler). ``isocenter`` is the
    LPS position (mm) of the output volume's centre; ``None`` lets the worker read a
    ``geometry.json`` beside the AP image, else use 0,0,0. Reading real films:
    ``xray_encoding`` (``None`` = the worker's ``auto``: DICOM tags decide; or one per view,
    ``{"lateral": "display"}``), ``apply_voi`` (apply
    a DICOM VOI window), ``pixel_spacing`` (``(row, col)`` mm at the detector, for films that have
    none), ``scatter_to_primary`` (scatter removed from films; ``None`` = the worker's
    default), ``log_units_per_decade`` (stored units per decade of exposure of LOG films;
    ``None``: the worker estimates the scale).
    """

    ap: str | os.PathLike
    lateral: str | os.PathLike
    checkpoint: str | os.PathLike
    steps: int = 25
    sampler: str | None = None
    seed: int = 0
    device: str = "auto"
    num_samples: int = 1
    eta: float = 0.0
    isocenter: Sequence[float] | None = None
    xray_encoding: str | Mapping[str, str] | None = None
    apply_voi: bool = False
    pixel_spacing: Sequence[float] | None = None
    scatter_to_primary: float | None = None
    log_units_per_decade: float | None = None

    def to_args(self, output: str | os.PathLike, std: str | os.PathLike | None = None) -> list[str]:
        """The worker's command-line arguments (without the interpreter and ``-m``)."""
        args = ["--ap", os.fspath(self.ap), "--lateral", os.fspath(self.lateral),
                "--checkpoint", os.fspath(self.checkpoint), "--steps", str(int(self.steps))]
        if self.sampler:
            args += ["--sampler", str(self.sampler)]
        args += ["--seed", str(int(self.seed)), "--device", str(self.device),
                 "--num-samples", str(int(self.num_samples)), "--eta", repr(float(self.eta))]
        if self.isocenter is not None:
            values = [float(v) for v in self.isocenter]
            if len(values) != 3:
                raise ValueError(f"isocenter needs 3 LPS coordinates, got {len(values)}")
            # "--isocenter=..." so that a leading minus sign is not taken for an option
            args.append("--isocenter=" + ",".join(repr(v) for v in values))
        if isinstance(self.xray_encoding, Mapping):
            pairs = [f"{view}={encoding}" for view, encoding in sorted(self.xray_encoding.items())
                     if encoding and encoding != "auto"]
            if pairs:
                args += ["--xray-encoding", ",".join(pairs)]
        elif self.xray_encoding and self.xray_encoding != "auto":
            args += ["--xray-encoding", str(self.xray_encoding)]
        args.append("--apply-voi" if self.apply_voi else "--no-apply-voi")
        if self.pixel_spacing is not None:
            spacing = [float(v) for v in self.pixel_spacing]
            if len(spacing) != 2:
                raise ValueError(f"pixel spacing needs (row, col) mm, got {len(spacing)} values")
            args += ["--pixel-spacing", ",".join(repr(v) for v in spacing)]
        if self.scatter_to_primary is not None:
            args += ["--scatter-to-primary", repr(float(self.scatter_to_primary))]
        if self.log_units_per_decade is not None:
            args += ["--log-units-per-decade", repr(float(self.log_units_per_decade))]
        args += ["--output", os.fspath(output)]
        if std is not None:
            args += ["--std", os.fspath(std)]
        return args


@dataclass
class WorkerResult:
    """How a run ended.

    ``output``/``std`` are set only when ``state`` is SUCCEEDED and the files exist. ``error`` is
    one user-facing sentence (``None`` on success); the worker's stderr stays in the log.
    ``exit_code`` is the worker's exit code (from its JSON line when there is one, else the
    process's; negative on POSIX when killed by a signal).
    """

    state: WorkerState
    output: Path | None = None
    std: Path | None = None
    details: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    error: str | None = None
    exit_code: int | None = None


def _sentence(text: str) -> str:
    """First line of ``text``, ending with a full stop."""
    first = next((line.strip() for line in str(text).splitlines() if line.strip()), "")
    if not first:
        return ""
    return first if first[-1] in ".!?" else first + "."


class WorkerProcess:
    """Owns one background reconstruction process (see the module docstring).

    Args:
        python_executable: interpreter that runs the worker (PythonSlicer in Slicer,
            ``sys.executable`` in tests).
        env: base environment of the child (default: this process's environment).
        python_path: folders put in front of ``PYTHONPATH`` so the child finds ``DiffuX2CTLib``.
        on_progress: ``on_progress(i, n)`` for each ``PROGRESS i/N`` line.
        on_log: ``on_log(line)`` for every stdout and stderr line (without the newline).
        on_finished: ``on_finished(result)`` once, when the state settles.
        cancel_grace_s: seconds between the polite stop request and the kill.
        temp_root: where the temporary folder is created (default: the system's).

    Callbacks run inside :meth:`poll`; an exception raised by one is logged, not propagated.
    A ``WorkerProcess`` runs one request; make a new one for the next run.
    """

    def __init__(
        self,
        python_executable: str | os.PathLike,
        *,
        env: Mapping[str, str] | None = None,
        python_path: Sequence[str | os.PathLike] = (),
        on_progress: Callable[[int, int], Any] | None = None,
        on_log: Callable[[str], Any] | None = None,
        on_finished: Callable[[WorkerResult], Any] | None = None,
        cancel_grace_s: float = 5.0,
        temp_root: str | os.PathLike | None = None,
    ) -> None:
        self.python_executable = os.fspath(python_executable)
        self.env = dict(os.environ if env is None else env)
        self.python_path = [os.fspath(p) for p in python_path]
        self.on_progress, self.on_log, self.on_finished = on_progress, on_log, on_finished
        self.cancel_grace_s = float(cancel_grace_s)
        self.temp_root = None if temp_root is None else os.fspath(temp_root)

        self.state = WorkerState.IDLE
        self.result: WorkerResult | None = None
        self.request: WorkerRequest | None = None
        self.work_dir: Path | None = None
        self.output_path: Path | None = None
        self.std_path: Path | None = None
        self.progress: tuple[int, int] | None = None
        self.log_lines: deque[str] = deque(maxlen=_LOG_LINES_KEPT)

        self._process: subprocess.Popen | None = None
        self._queue: queue.Queue = queue.Queue()
        self._readers: list[threading.Thread] = []
        self._open_streams: set[str] = set()
        self._stdout_lines: deque[str] = deque(maxlen=50)  # the JSON line is among the last ones
        self._stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL_KEPT)
        self._cancel_requested = False
        self._kill_deadline: float | None = None
        self._killed = False
        self._exited_at: float | None = None
        self._cleaned = False

    # ------------------------------------------------------------------ properties

    @property
    def pid(self) -> int | None:
        """Process id of the child (also its process-group id on POSIX); ``None`` before start."""
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.returncode

    @property
    def stderr_tail(self) -> list[str]:
        """The last lines the worker wrote to stderr (they are also in the log)."""
        return list(self._stderr_tail)

    @property
    def command(self) -> list[str] | None:
        """The command line of the running or last process."""
        return None if self._process is None else list(self._process.args)

    # ------------------------------------------------------------------ start

    def start(self, request: WorkerRequest) -> None:
        """Spawn the worker for ``request``; returns at once (state RUNNING).

        Raises RuntimeError if this object already ran and ValueError for a malformed request. If
        the interpreter cannot be started, the run ends FAILED at once (``on_finished`` is called
        from ``start``); :meth:`cleanup` still removes the folder.
        """
        if self.state is not WorkerState.IDLE or self._cleaned:
            raise RuntimeError(f"a WorkerProcess runs one request; this one is {self.state.value}")
        request.to_args(OUTPUT_NAME)  # a malformed request raises here, before anything is created
        # the worker runs in the temporary folder: relative input paths are made absolute first
        request = dataclasses.replace(request, ap=os.path.abspath(request.ap), lateral=os.path.abspath(request.lateral),
                                      checkpoint=os.path.abspath(request.checkpoint))
        self.request = request
        self.work_dir = Path(tempfile.mkdtemp(prefix="DiffuX2CT-", dir=self.temp_root))
        self.output_path = self.work_dir / OUTPUT_NAME
        self.std_path = self.work_dir / STD_NAME if int(request.num_samples) > 1 else None
        command = [self.python_executable, "-u", "-m", WORKER_MODULE,
                   *request.to_args(self.output_path, self.std_path), "--parent-pid", str(os.getpid())]
        env = dict(self.env)
        paths = self.python_path + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        kwargs: dict[str, Any] = {}
        if _WINDOWS:
            kwargs["creationflags"] = (getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)
                                       | getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000))
        else:
            kwargs["start_new_session"] = True
        try:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=str(self.work_dir), env=env, text=True, encoding="utf-8", errors="replace", bufsize=1,
                **kwargs)
        except OSError as exc:
            message = _sentence(f"The reconstruction process could not be started ({exc})")
            self._log(f"could not start {command[0]}: {exc}")
            self._settle(WorkerResult(WorkerState.FAILED, error=message))
            return
        self.state = WorkerState.RUNNING
        for name, stream in ((_STDOUT, self._process.stdout), (_STDERR, self._process.stderr)):
            self._open_streams.add(name)
            reader = threading.Thread(target=self._read, args=(name, stream), daemon=True,
                                      name=f"DiffuX2CT-worker-{name}")
            reader.start()
            self._readers.append(reader)

    def _read(self, name: str, stream) -> None:
        try:
            for line in iter(stream.readline, ""):
                self._queue.put((name, line))
        except (OSError, ValueError):  # stream closed under us by cleanup
            pass
        finally:
            self._queue.put((name, None))

    # ------------------------------------------------------------------ poll / wait

    def poll(self) -> WorkerState:
        """Handle what the worker printed; settle the state once it has exited. Never blocks."""
        if not self.state.active:
            return self.state
        self._drain()
        process = self._process
        assert process is not None
        exited = process.poll() is not None
        now = time.monotonic()
        if exited and self._exited_at is None:
            self._exited_at = now
        if (self._kill_deadline is not None and now >= self._kill_deadline and not self._killed
                and (not exited or self._open_streams)):
            self._log(f"the worker did not stop within {self.cancel_grace_s:g} s; killing it")
            self._kill_tree()
        elif exited and self._open_streams and not self._killed and now - self._exited_at > max(self.cancel_grace_s, 1.0):
            # the direct child is gone but something it started still holds the pipes
            self._log("the worker exited but its output stays open; killing its process group")
            self._kill_tree()
        if exited and not self._open_streams:
            self._finish()
        return self.state

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> WorkerState:
        """Loop :meth:`poll` until the run settles or ``timeout`` seconds pass (for scripts and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.poll()
            if not state.active:
                return state
            if deadline is not None and time.monotonic() >= deadline:
                return state
            time.sleep(interval)

    def _drain(self) -> None:
        while True:
            try:
                name, line = self._queue.get_nowait()
            except queue.Empty:
                return
            if line is None:
                self._open_streams.discard(name)
                continue
            line = line.rstrip("\r\n")
            if name == _STDOUT:
                self._stdout_lines.append(line)
                match = _PROGRESS.match(line)
                if match:
                    self.progress = (int(match.group(1)), int(match.group(2)))
                    self._call(self.on_progress, *self.progress)
            else:
                self._stderr_tail.append(line)
            self._log(line)

    def _log(self, line: str) -> None:
        self.log_lines.append(line)
        self._call(self.on_log, line)

    @staticmethod
    def _call(callback: Callable | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:  # a broken callback must not wedge the state machine
            log.exception("DiffuX2CT worker callback %r failed", callback)

    # ------------------------------------------------------------------ settle

    def _final_json(self) -> dict | None:
        for line in reversed(self._stdout_lines):
            text = line.strip()
            if text.startswith("{"):
                try:
                    value = json.loads(text)
                except ValueError:
                    continue
                if isinstance(value, dict) and "status" in value:
                    return value
        return None

    def _finish(self) -> None:
        process = self._process
        assert process is not None
        for reader in self._readers:
            reader.join(timeout=1.0)
        self._close_pipes()
        if self._cancel_requested and not _WINDOWS:
            self._signal_group(signal.SIGKILL)  # leave nothing of the tree behind
        payload = self._final_json()
        code = process.returncode
        if payload is not None and isinstance(payload.get("exit_code"), int):
            code = payload["exit_code"]
        details = payload.get("details") if payload else None
        details = details if isinstance(details, dict) else {}
        warnings = payload.get("warnings") if payload and "warnings" in payload else details.get("warnings", [])
        warnings = list(warnings) if isinstance(warnings, (list, tuple)) else [str(warnings)]
        status = payload.get("status") if payload else None

        result = WorkerResult(WorkerState.FAILED, details=details, warnings=warnings, exit_code=code)
        if status == "ok":
            output = Path(payload.get("output") or self.output_path)
            std = payload.get("std") or (self.std_path and os.fspath(self.std_path))
            if output.is_file() and (std is None or Path(std).is_file()):
                result.state, result.output = WorkerState.SUCCEEDED, output
                result.std = Path(std) if std else None
            else:
                result.error = "The reconstruction finished but its output file is missing."
        elif status == "cancelled" or (payload is None and self._cancel_requested):
            result.state = WorkerState.CANCELLED
            result.error = "The reconstruction was cancelled."
        elif payload is not None:
            result.error = (_sentence(payload.get("error") or "")
                            or f"The reconstruction failed (exit code {code}).")
        else:
            result.error = f"The reconstruction process stopped unexpectedly (exit code {code})."
            self._log(f"the reconstruction process stopped unexpectedly (exit code {code}) without a result line"
                      + ("; its error output is above" if self._stderr_tail else ""))
        if result.state is not WorkerState.SUCCEEDED:  # never hand out a partial output
            result.output = result.std = None
        self._settle(result)

    def _settle(self, result: WorkerResult) -> None:
        self.state, self.result = result.state, result
        self._call(self.on_finished, result)

    # ------------------------------------------------------------------ cancel / kill

    def cancel(self, force: bool = False) -> bool:
        """Ask the worker's process group to stop; the kill follows from :meth:`poll` after the
        grace period (at once with ``force=True``). Never blocks. Returns False if nothing runs."""
        if not self.state.active or self._process is None:
            return False
        if self.state is WorkerState.RUNNING:
            self.state = WorkerState.CANCELLING
            self._cancel_requested = True
            self._kill_deadline = time.monotonic() + self.cancel_grace_s
            self._log("cancelling the reconstruction")
            if _WINDOWS:
                try:
                    self._process.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
                except (OSError, ValueError, AttributeError):
                    pass  # no shared console: the kill after the grace period stops it
            else:
                self._signal_group(signal.SIGTERM)
        if force:
            self._kill_deadline = time.monotonic()
        return True

    def _signal_group(self, signum: int) -> None:
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signum)  # the child leads its own session and group
        except (ProcessLookupError, PermissionError):
            pass

    def _kill_tree(self) -> None:
        process = self._process
        if process is None:
            return
        self._killed = True
        if _WINDOWS:
            try:
                subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10,
                               creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000))
            except (OSError, subprocess.SubprocessError):
                pass
            try:
                process.kill()
            except OSError:
                pass
        else:
            self._signal_group(signal.SIGKILL)

    def _close_pipes(self) -> None:
        if self._process is None:
            return
        for stream in (self._process.stdout, self._process.stderr):
            try:
                if stream is not None:
                    stream.close()
            except (OSError, ValueError):
                pass

    # ------------------------------------------------------------------ outputs / cleanup

    def take_outputs(self, destination: str | os.PathLike | None = None) -> tuple[Path, Path | None]:
        """``(ct, std)`` of a SUCCEEDED run (``std`` is ``None`` without ``num_samples > 1``).

        Without ``destination`` the files stay in the temporary folder: load them before
        :meth:`cleanup`. With a ``destination`` folder they are moved there and belong to the caller.
        Raises RuntimeError when there is nothing to take.
        """
        result = self.result
        if result is None or result.state is not WorkerState.SUCCEEDED or result.output is None:
            raise RuntimeError(f"no reconstruction to take (state: {self.state.value})")
        files = [result.output, result.std]
        if any(f is not None and not f.is_file() for f in files):
            raise RuntimeError("the reconstruction's output files were already taken or removed")
        if destination is not None:
            folder = Path(destination)
            folder.mkdir(parents=True, exist_ok=True)
            files = [None if f is None else Path(shutil.move(os.fspath(f), os.fspath(folder / f.name)))
                     for f in files]
            result.output, result.std = files
        return files[0], files[1]  # type: ignore[return-value]

    def cleanup(self) -> None:
        """Kill a running worker (with its process group) and remove the temporary folder.

        Safe to call more than once. A run stopped here ends CANCELLED without calling
        ``on_finished`` (the caller is going away).
        """
        process = self._process
        if process is not None and self.state.active:
            self._cancel_requested = True
            self._kill_tree()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self._close_pipes()
            self.state = WorkerState.CANCELLED
            self.result = WorkerResult(WorkerState.CANCELLED, error="The reconstruction was cancelled.",
                                       exit_code=process.returncode)
        elif process is not None:
            self._close_pipes()
        for reader in self._readers:
            reader.join(timeout=1.0)
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        if self.result is not None and self.result.output is not None and self.work_dir is not None:
            if self.work_dir in self.result.output.parents:  # outputs that were not moved are gone
                self.result.output = self.result.std = None
        self._cleaned = True

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.state.value} pid={self.pid} dir={self.work_dir}>"
