"""The reconstruction worker and the inference API end to end at 16^3 with a tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DiffuX2CTLib.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
from DiffuX2CTLib.diffusion.config import DiffusionConfig
from DiffuX2CTLib.errors import CancelledError, DiffuX2CTError, InputError
from DiffuX2CTLib.geometry import BiplanarGeometry
from DiffuX2CTLib.inference import reconstruct
from DiffuX2CTLib.network import DiffuX2CTNet, NetworkConfig
from DiffuX2CTLib.simulate import simulate_xrays, write_simulation
from DiffuX2CTLib.worker import main as worker_main
from DiffuX2CTLib.worker import EXIT_BAD_CHECKPOINT, EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_OK

REPO = Path(__file__).resolve().parents[2]


def phantom_ct() -> sitk.Image:
    """A 60^3 mm body-like phantom (water cylinder with a bone rod) off the LPS origin."""
    n = 30
    z, y, x = np.mgrid[:n, :n, :n]
    hu = np.full((n, n, n), -1000.0, np.float32)
    hu[(x - 15) ** 2 + (y - 15) ** 2 < 12**2] = 0.0
    hu[(x - 18) ** 2 + (y - 12) ** 2 < 3**2] = 1200.0
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((2.0, 2.0, 2.0))
    image.SetOrigin((-40.0, 25.0, 300.0))
    return image


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """Simulated X-rays of the phantom (with geometry.json) and an untrained tiny checkpoint."""
    root = tmp_path_factory.mktemp("worker")
    geometry = BiplanarGeometry.preset("x2ct", volume_size=16, xray_size=16)
    sim = simulate_xrays(phantom_ct(), geometry)
    write_simulation(sim, root / "xrays")
    torch.manual_seed(0)
    config = NetworkConfig.tiny()
    info = CheckpointInfo(network=config, diffusion=DiffusionConfig(), geometry=geometry, trained=False)
    weights, _ = save_checkpoint(root / "tiny.safetensors", DiffuX2CTNet(config, geometry).state_dict(), info)
    return {"root": root, "geometry": geometry, "checkpoint": weights, "isocenter": sim.ct_center_lps,
            "ap": root / "xrays" / "ap.nrrd", "lateral": root / "xrays" / "lateral.nrrd"}


def worker(*args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "DiffuX2CTLib.worker", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def base_args(case, output: Path, steps: int = 3, sampler: str = "ddim") -> list[str]:
    return ["--ap", str(case["ap"]), "--lateral", str(case["lateral"]), "--checkpoint", str(case["checkpoint"]),
            "--steps", str(steps), "--sampler", sampler, "--seed", "7", "--device", "cpu", "--output", str(output)]


def test_worker_end_to_end(case, tmp_path):
    out, std = tmp_path / "ct.nrrd", tmp_path / "std.nrrd"
    proc = worker(*base_args(case, out), "--num-samples", "2", "--std", str(std))
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_OK, stderr
    lines = stdout.strip().splitlines()
    assert lines[:-1] == ["PROGRESS 1/3", "PROGRESS 2/3", "PROGRESS 3/3"]
    result = json.loads(lines[-1])
    assert result["status"] == "ok" and result["exit_code"] == 0
    assert result["details"]["model_trained"] is False and result["details"]["num_samples"] == 2

    g = case["geometry"]
    ct = sitk.ReadImage(str(out))
    assert ct.GetSize() == (16, 16, 16)
    np.testing.assert_allclose(ct.GetSpacing(), g.volume_spacing_mm[::-1])
    np.testing.assert_allclose(ct.GetDirection(), np.eye(3).ravel())
    # the isocentre recorded by simulate (geometry.json beside --ap) is the volume centre
    np.testing.assert_allclose(ct.GetOrigin(), g.volume_origin_lps(case["isocenter"]), atol=1e-4)
    hu = sitk.GetArrayFromImage(ct)
    assert np.isfinite(hu).all() and hu.min() >= -1024 - 1e-3 and hu.max() <= 2048 + 1e-3
    sd = sitk.GetArrayFromImage(sitk.ReadImage(str(std)))
    assert sd.shape == hu.shape and (sd >= 0).all() and sd.max() > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nrrd", "std.nrrd"]  # no temp files left


def test_worker_cancellation_leaves_nothing(case, tmp_path):
    out = tmp_path / "ct.nrrd"
    proc = worker(*base_args(case, out, steps=1000, sampler="ddpm"))
    first = proc.stdout.readline()
    assert first.startswith("PROGRESS 1/1000"), first + proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_CANCELLED
    assert time.monotonic() - started < 10  # stops within a step, not after 1000
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["status"] == "cancelled"
    progress = [l for l in stdout.splitlines() if l.startswith("PROGRESS")]
    assert len(progress) < 50
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "change, code, message",
    [
        (lambda a, c, t: a.__setitem__(1, str(t / "missing.png")), EXIT_BAD_INPUT, "missing.png: --ap file not found"),
        (lambda a, c, t: a.__setitem__(a.index("--output") + 1, str(t / "ct.txt")), EXIT_BAD_INPUT, "ct.txt: --output must end with"),
        (lambda a, c, t: a.extend(["--std", str(t / "s.nrrd")]), EXIT_BAD_INPUT, "--std needs --num-samples"),
        (lambda a, c, t: a.__setitem__(5, str(t / "none.safetensors")), EXIT_BAD_CHECKPOINT, "none.safetensors: checkpoint file not found"),
        (lambda a, c, t: a.__setitem__(1, str(_not_an_image(t))), EXIT_BAD_INPUT, "notes.png"),
        (lambda a, c, t: a.__setitem__(a.index("--steps") + 1, "0"), EXIT_BAD_INPUT, "steps"),
    ],
)
def test_worker_bad_inputs(case, tmp_path, capsys, change, code, message):
    """Same entry point as the process, run in-process (no torch start-up per case)."""
    args = base_args(case, tmp_path / "ct.nrrd")
    change(args, case, tmp_path)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        assert worker_main(args) == code
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    stdout = capsys.readouterr().out
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["status"] == "error" and message in result["error"]
    assert len(result["error"].splitlines()) == 1
    assert not (tmp_path / "ct.nrrd").exists()


def _not_an_image(folder: Path) -> Path:
    path = folder / "notes.png"
    path.write_text("this is not an image")
    return path


def test_reconstruct_api_determinism_and_uncertainty(case):
    loaded = load_checkpoint(case["checkpoint"])
    kwargs = dict(checkpoint=loaded, steps=2, sampler="dpmsolver++", device="cpu")
    a = reconstruct(case["ap"], case["lateral"], seed=3, **kwargs)
    b = reconstruct(case["ap"], case["lateral"], seed=3, **kwargs)
    c = reconstruct(case["ap"], case["lateral"], seed=4, **kwargs)
    arr = sitk.GetArrayFromImage
    np.testing.assert_array_equal(arr(a.ct), arr(b.ct))
    assert not np.array_equal(arr(a.ct), arr(c.ct))
    assert a.std is None
    calls = []
    multi = reconstruct(case["ap"], case["lateral"], seed=3, num_samples=3, progress=lambda i, n: calls.append((i, n)), **kwargs)
    assert calls == [(1, 2), (2, 2)]
    assert multi.std is not None and multi.std.GetSize() == multi.ct.GetSize()
    assert multi.std.GetOrigin() == multi.ct.GetOrigin()


def test_reconstruct_cancel_and_errors(case):
    with pytest.raises(CancelledError):
        reconstruct(case["ap"], case["lateral"], case["checkpoint"], steps=5, device="cpu", cancel=lambda: True)
    with pytest.raises(InputError, match="num_samples"):
        reconstruct(case["ap"], case["lateral"], case["checkpoint"], num_samples=0)
    if not torch.cuda.is_available():
        with pytest.raises(DiffuX2CTError, match="CUDA is not available"):
            reconstruct(case["ap"], case["lateral"], case["checkpoint"], device="cuda")
    with pytest.raises(InputError, match="expected \\(16, 16\\)"):
        reconstruct(np.zeros((8, 8)), np.zeros((16, 16)), case["checkpoint"], device="cpu")


def test_simulated_png_and_nrrd_enter_the_network_the_same_way(case):
    """One normalisation path: the 16-bit PNG DRRs (display images) and the NRRD line integrals
    give the same network input, up to 16-bit quantisation."""
    from DiffuX2CTLib.inference import prepare_xrays
    from DiffuX2CTLib.io.xray import XRayNormalization, read_xray

    folder = case["ap"].parent
    assert read_xray(folder / "ap.png").spacing_mm == pytest.approx(case["geometry"].detector_spacing_mm)
    norm = XRayNormalization()
    from_png = prepare_xrays(folder / "ap.png", folder / "lateral.png", case["geometry"], norm)
    from_nrrd = prepare_xrays(case["ap"], case["lateral"], case["geometry"], norm)
    assert from_png.shape == from_nrrd.shape == (2, 16, 16)
    np.testing.assert_allclose(from_png, from_nrrd, atol=2e-3)


# --- --parent-pid watchdog ---------------------------------------------------------------------

_INTERMEDIATE = r"""
import os, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-u", "-m", "DiffuX2CTLib.worker", *sys.argv[1:],
                           "--parent-pid", str(os.getpid())], stdin=subprocess.DEVNULL)
print(f"WORKER {worker.pid}", flush=True)
time.sleep(600)  # until the test terminates it, leaving the worker behind
"""


def _gone_or_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_worker_cancels_itself_when_its_parent_dies(case, tmp_path):
    out = tmp_path / "ct.nrrd"
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    with open(tmp_path / "stderr.txt", "w") as errors:
        parent = subprocess.Popen([sys.executable, "-c", _INTERMEDIATE, *base_args(case, out, steps=1000, sampler="ddpm")],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
        try:
            worker_pid = int(parent.stdout.readline().split()[1])
            first = parent.stdout.readline()
            assert first.startswith("PROGRESS 1/1000"), first + (tmp_path / "stderr.txt").read_text()
            parent.terminate()  # the intermediate process exits; the worker is now an orphan
            parent.wait(timeout=10)
            started = time.monotonic()
            rest, _ = parent.communicate(timeout=30)  # EOF once the worker, which shares the pipe, exits
            elapsed = time.monotonic() - started
        finally:
            if parent.poll() is None:
                parent.kill()
    result = json.loads(rest.strip().splitlines()[-1])
    assert result["status"] == "cancelled" and result["exit_code"] == EXIT_CANCELLED
    assert f"parent process {parent.pid} ended" in result["error"]
    assert elapsed < 10  # about one check interval plus one step, not 1000 steps
    deadline = time.monotonic() + 5
    while not _gone_or_zombie(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone_or_zombie(worker_pid)
    assert "ended; cancelling" in (tmp_path / "stderr.txt").read_text()
    assert not out.exists()


def test_worker_parent_pid_in_process(case, tmp_path, capsys):
    """A parent that is already gone cancels at once; a bad pid is bad input; the thread stops."""
    import threading

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        assert worker_main([*base_args(case, tmp_path / "ct.nrrd"), "--parent-pid", str(dead.pid)]) == EXIT_CANCELLED
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["status"] == "cancelled" and f"parent process {dead.pid} ended" in result["error"]
        assert worker_main([*base_args(case, tmp_path / "ct.nrrd"), "--parent-pid", "0"]) == EXIT_BAD_INPUT
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    assert not (tmp_path / "ct.nrrd").exists()
    assert not [t for t in threading.enumerate() if t.name == "DiffuX2CT-parent-watchdog"]
