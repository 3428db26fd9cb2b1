"""WorkerProcess: the background reconstruction process the Slicer module owns (no Slicer needed)."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DiffuX2CTSlicerLib.worker_process import WorkerProcess, WorkerRequest, WorkerResult, WorkerState
from test_worker import REPO, case  # noqa: F401  (the module-scoped fixture: X-rays + tiny checkpoint)

posix_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX process groups, /proc, shell scripts")


class Recorder:
    """Collects the callbacks of one WorkerProcess."""

    def __init__(self) -> None:
        self.progress: list[tuple[int, int]] = []
        self.log: list[str] = []
        self.finished: list[WorkerResult] = []

    def make(self, python: str = sys.executable, **kwargs) -> WorkerProcess:
        worker = WorkerProcess(python, python_path=[str(REPO)], on_progress=lambda i, n: self.progress.append((i, n)),
                               on_log=self.log.append, on_finished=self.finished.append, **kwargs)
        _made.append(worker)
        return worker


_made: list[WorkerProcess] = []


@pytest.fixture(autouse=True)
def _cleanup_workers():
    """Even a failing test leaves no worker process or temporary folder behind."""
    yield
    while _made:
        _made.pop().cleanup()


def request(case, **overrides) -> WorkerRequest:
    values = dict(ap=case["ap"], lateral=case["lateral"], checkpoint=case["checkpoint"], steps=3, sampler="ddim",
                  seed=7, device="cpu")
    values.update(overrides)
    return WorkerRequest(**values)


def wait_for_progress(worker: WorkerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while worker.poll() is WorkerState.RUNNING and worker.progress is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert worker.progress is not None, "\n".join(worker.log_lines)


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def live_group_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies (those only wait for init to reap them)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(entry))
    return members


def process_gone(pid: int) -> bool:
    """No such process, or only an exited one waiting to be reaped by init."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_request_arguments():
    req = WorkerRequest("a.png", "l.png", "m.safetensors", steps=4, seed=2, device="cuda:1", num_samples=3,
                        eta=0.5, isocenter=(-40, 25.5, 300))
    assert req.to_args("o.nrrd", "s.nrrd") == [
        "--ap", "a.png", "--lateral", "l.png", "--checkpoint", "m.safetensors", "--steps", "4",
        "--seed", "2", "--device", "cuda:1", "--num-samples", "3", "--eta", "0.5",
        "--isocenter=-40.0,25.5,300.0", "--no-apply-voi", "--output", "o.nrrd", "--std", "s.nrrd"]
    assert ["--sampler", "ddpm"] == WorkerRequest("a", "l", "m", sampler="ddpm").to_args("o")[8:10]
    with pytest.raises(ValueError, match="3 LPS"):
        WorkerRequest("a", "l", "m", isocenter=(1, 2)).to_args("o")
    # the worker's own parser accepts what to_args writes (negative isocentre included)
    from DiffuX2CTLib.worker import build_parser

    args = build_parser().parse_args([*req.to_args("o.nrrd", "s.nrrd"), "--parent-pid", "12"])
    assert args.isocenter == (-40.0, 25.5, 300.0) and args.parent_pid == 12 and args.num_samples == 3


def test_full_reconstruction(case):
    rec = Recorder()
    worker = rec.make()
    g = case["geometry"]
    worker.start(request(case, num_samples=2, isocenter=tuple(case["isocenter"])))
    assert worker.state is WorkerState.RUNNING
    folder = worker.work_dir
    assert folder.is_dir() and folder.name.startswith("DiffuX2CT-")
    assert worker.command[worker.command.index("--parent-pid") + 1] == str(os.getpid())
    assert worker.wait(timeout=120) is WorkerState.SUCCEEDED, "\n".join(rec.log)

    assert rec.progress == [(1, 3), (2, 3), (3, 3)]
    assert len(rec.finished) == 1 and rec.finished[0] is worker.result
    result = worker.result
    assert result.state is WorkerState.SUCCEEDED and result.exit_code == 0 and result.error is None
    assert result.details["num_samples"] == 2 and result.details["model_trained"] is False
    assert result.warnings == []
    assert "PROGRESS 3/3" in rec.log and any(line.startswith("{\"status\": \"ok\"") for line in rec.log)
    ct_path, std_path = worker.take_outputs()
    assert ct_path == folder / "ct.nrrd" and std_path == folder / "std.nrrd"
    ct = sitk.ReadImage(str(ct_path))
    assert ct.GetDimension() == 3 and ct.GetSize() == (16, 16, 16)
    np.testing.assert_allclose(ct.GetOrigin(), g.volume_origin_lps(case["isocenter"]), atol=1e-4)
    assert sitk.ReadImage(str(std_path)).GetSize() == (16, 16, 16)
    assert worker.poll() is WorkerState.SUCCEEDED and len(rec.finished) == 1  # settles once

    worker.cleanup()
    assert not folder.exists()
    worker.cleanup()  # twice is fine
    with pytest.raises(RuntimeError):
        worker.take_outputs()
    with pytest.raises(RuntimeError):
        worker.start(request(case))


@posix_only
def test_cancel_during_sampling(case):
    rec = Recorder()
    worker = rec.make()
    worker.start(request(case, steps=1000, sampler="ddpm"))
    folder, pid = worker.work_dir, worker.pid
    wait_for_progress(worker)
    assert worker.cancel()
    assert worker.state is WorkerState.CANCELLING
    started = time.monotonic()
    assert worker.wait(timeout=30) is WorkerState.CANCELLED, "\n".join(rec.log)
    assert time.monotonic() - started < 10  # stopped within a step, without the kill
    result = worker.result
    assert result.exit_code == 5 and result.output is None and result.std is None
    assert result.error == "The reconstruction was cancelled."
    assert rec.finished == [result] and rec.progress[-1][0] < 1000
    assert not (folder / "ct.nrrd").exists()
    with pytest.raises(RuntimeError):
        worker.take_outputs()
    assert process_gone(pid) and not group_exists(pid) and live_group_members(pid) == []
    assert not worker.cancel()  # nothing left to cancel
    worker.cleanup()
    assert not folder.exists()


@posix_only
def test_cancel_kills_a_tree_that_ignores_sigterm(tmp_path):
    """A launcher that ignores SIGTERM and has a child: killed (with the child) after the grace period."""
    python = script(tmp_path, "stubborn", 'trap "" TERM\nsleep 60 &\necho "CHILD $!"\necho "PROGRESS 1/9"\nwait\n')
    rec = Recorder()
    worker = rec.make(python, cancel_grace_s=0.5)
    worker.start(WorkerRequest("a", "l", "m"))
    wait_for_progress(worker, timeout=10)
    child = int(next(line for line in rec.log if line.startswith("CHILD")).split()[1])
    worker.cancel()
    time.sleep(0.2)
    assert worker.poll() is WorkerState.CANCELLING  # still within the grace period
    assert worker.wait(timeout=10) is WorkerState.CANCELLED
    assert worker.result.exit_code == -9 and worker.result.error == "The reconstruction was cancelled."
    assert live_group_members(worker.pid) == []
    deadline = time.monotonic() + 5
    while not process_gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_gone(child)
    worker.cleanup()
    assert not worker.work_dir.exists()


@pytest.mark.parametrize("bad, code, message", [
    ("ap", 2, "missing.png: --ap file not found."),
    ("checkpoint", 3, "missing.safetensors: checkpoint file not found."),  # named as given
])
def test_worker_failure(case, tmp_path, bad, code, message):
    rec = Recorder()
    worker = rec.make()
    name = "missing.png" if bad == "ap" else "missing.safetensors"
    worker.start(request(case, **{bad: tmp_path / name}))
    assert worker.wait(timeout=60) is WorkerState.FAILED
    result = worker.result
    assert result.exit_code == code and message in result.error
    assert len(result.error.splitlines()) == 1 and result.error.endswith(".")
    assert result.output is None and rec.finished == [result]
    assert any(line.startswith("error:") for line in rec.log)  # the worker's stderr is in the log
    worker.cleanup()
    assert not worker.work_dir.exists()


@posix_only
def test_launcher_crash_without_result_line(tmp_path):
    python = script(tmp_path, "broken-python", 'echo "fatal: cannot load the interpreter" >&2\nexit 7\n')
    rec = Recorder()
    worker = rec.make(python)
    worker.start(WorkerRequest("a", "l", "m", num_samples=2))
    assert worker.wait(timeout=10) is WorkerState.FAILED
    result = worker.result
    assert result.error == "The reconstruction process stopped unexpectedly (exit code 7)."
    assert result.exit_code == 7 and result.output is None and result.std is None
    assert "fatal: cannot load the interpreter" in rec.log and "fatal" not in result.error
    assert worker.stderr_tail == ["fatal: cannot load the interpreter"]
    worker.cleanup()
    assert not worker.work_dir.exists()


def test_missing_interpreter(tmp_path):
    rec = Recorder()
    worker = rec.make(str(tmp_path / "no-such-python"))
    worker.start(WorkerRequest("a", "l", "m"))
    assert worker.state is WorkerState.FAILED and rec.finished == [worker.result]
    assert worker.result.error.startswith("The reconstruction process could not be started")
    assert worker.poll() is WorkerState.FAILED and not worker.cancel()
    worker.cleanup()
    assert not worker.work_dir.exists()


@posix_only
def test_cleanup_while_running_kills_the_worker(tmp_path):
    python = script(tmp_path, "slow", 'echo "PROGRESS 1/2"\nexec sleep 60\n')
    rec = Recorder()
    worker = rec.make(python)
    worker.start(WorkerRequest("a", "l", "m"))
    wait_for_progress(worker, timeout=10)
    pid, folder = worker.pid, worker.work_dir
    worker.cleanup()
    assert worker.state is WorkerState.CANCELLED and rec.finished == []  # no callback at teardown
    assert process_gone(pid) and live_group_members(pid) == [] and not folder.exists()
    worker.cleanup()


def test_relative_input_paths_are_resolved_before_the_worker_changes_folder(case, monkeypatch):
    monkeypatch.chdir(case["ap"].parent)
    worker = Recorder().make(sys.executable)
    worker.start(request(case, ap="ap.nrrd", steps=1000))
    assert worker.command[worker.command.index("--ap") + 1] == str(case["ap"])
    assert worker.request.ap == str(case["ap"])
    worker.cleanup()
    assert worker.state is WorkerState.CANCELLED and not worker.work_dir.exists()


def test_request_reading_options_are_accepted_by_the_worker(tmp_path):
    from DiffuX2CTLib.worker import build_parser

    request = WorkerRequest(ap="a.dcm", lateral="l.dcm", checkpoint="m.safetensors", xray_encoding="intensity",
                            apply_voi=True, pixel_spacing=(0.15, 0.15), isocenter=(-1.5, 2.0, -300.0),
                            scatter_to_primary=0.0, log_units_per_decade=1000.0)
    args = build_parser().parse_args(request.to_args(tmp_path / "ct.nrrd"))
    assert args.xray_encoding == "intensity" and args.apply_voi is True and args.scatter_to_primary == 0.0
    assert args.log_units_per_decade == 1000.0
    assert tuple(args.pixel_spacing) == (0.15, 0.15) and tuple(args.isocenter) == (-1.5, 2.0, -300.0)
    default = build_parser().parse_args(WorkerRequest(ap="a", lateral="l", checkpoint="m").to_args(tmp_path / "c.nrrd"))
    assert default.xray_encoding == "auto" and default.apply_voi is False and default.pixel_spacing is None
    assert default.scatter_to_primary == 0.3  # the worker's default
    assert default.log_units_per_decade is None  # estimated from a body prior
    # one encoding per view (the Slicer module's lateral encoding); "auto" views are left out
    mixed = WorkerRequest(ap="a", lateral="l", checkpoint="m", xray_encoding={"ap": "auto", "lateral": "display"})
    assert "lateral=display" in mixed.to_args(tmp_path / "c.nrrd")
    assert build_parser().parse_args(mixed.to_args(tmp_path / "c.nrrd")).xray_encoding == {"lateral": "display"}
    both_auto = WorkerRequest(ap="a", lateral="l", checkpoint="m", xray_encoding={"ap": "auto", "lateral": "auto"})
    assert "--xray-encoding" not in both_auto.to_args(tmp_path / "c.nrrd")
