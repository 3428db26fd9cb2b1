"""Issue 8, items 6 and 7: nothing fails silently or with a traceback.

Bad arguments, outputs, files and checkpoints end in one line (and for the worker one final JSON
line) with the documented exit code, before any heavy work; signals and a closed stdout leave
no output and no orphan; checkpoints carry a digest over the weights and the fields that change
how they are used; and the conventions page states what the tests check.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DiffuX2CTLib.checkpoint import (
    CheckpointInfo, CheckpointWarning, checkpoint_digest, load_checkpoint, read_checkpoint_info, save_checkpoint,
    upgrade_checkpoint,
)
from DiffuX2CTLib.diffusion.config import DiffusionConfig
from DiffuX2CTLib.errors import CheckpointError, InputError
from DiffuX2CTLib.geometry import BiplanarGeometry
from DiffuX2CTLib.io.ct import read_ct
from DiffuX2CTLib.io.files import sha256_file
from DiffuX2CTLib.network import DiffuX2CTNet, NetworkConfig
from DiffuX2CTLib.simulate import simulate_xrays, write_simulation
from DiffuX2CTLib.worker import (
    EXIT_BAD_CHECKPOINT, EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_OK,
)
from DiffuX2CTLib.worker import main as worker_main
from test_worker import case  # noqa: F401  (module-scoped fixture: phantom DRRs with geometry.json, tiny x2ct checkpoint)

REPO = Path(__file__).resolve().parents[2]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
LINUX = sys.platform.startswith("linux")


# --- fixtures and helpers ------------------------------------------------------------------------
def phantom(n: int = 30, spacing: float = 2.0, origin=(-40.0, 25.0, 300.0)) -> sitk.Image:
    z, y, x = np.mgrid[:n, :n, :n]
    hu = np.full((n, n, n), -1000.0, np.float32)
    hu[(x - n // 2) ** 2 + (y - n // 2) ** 2 < (0.4 * n) ** 2] = 0.0
    hu[(x - n // 2 - 3) ** 2 + (y - n // 2 + 3) ** 2 < 9] = 1200.0
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((spacing,) * 3)
    image.SetOrigin(origin)
    return image


def worker_args(case, output: Path, steps: int = 1, ap: Path | None = None, lateral: Path | None = None,
                checkpoint: Path | None = None) -> list[str]:
    return ["--ap", str(ap or case["ap"]), "--lateral", str(lateral or case["lateral"]),
            "--checkpoint", str(checkpoint or case["checkpoint"]), "--steps", str(steps), "--sampler", "ddim",
            "--seed", "7", "--device", "cpu", "--output", str(output)]


def run_worker(args: list[str], capsys) -> tuple[int, dict, str]:
    """The worker in-process; returns (exit code, final JSON line, all stdout)."""
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        code = worker_main(args)
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["exit_code"] == code and isinstance(result["warnings"], list)
    return code, result, out


def env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error")]


def png_claiming(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


# --- 1. arguments: a JSON line and exit code 2, also for argparse errors -------------------------------
@pytest.mark.parametrize("change, fragment", [
    (["--seed", str(2**64)], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["--device", "banana"], "--device"),
    (["--steps", "0"], "--steps"),
    (["--num-samples", "0"], "--num-samples"),
    (["--eta", "nan"], "--eta"),
    (["--isocenter", "1,2,inf"], "--isocenter"),
    (["--no-such-option"], "unrecognized arguments"),
])
def test_worker_argument_errors_end_with_a_json_line(case, tmp_path, capsys, change, fragment):
    code, result, out = run_worker([*worker_args(case, tmp_path / "ct.nrrd"), *change], capsys)
    assert code == EXIT_BAD_INPUT
    assert result["status"] == "error" and fragment in result["error"] and "\n" not in result["error"]
    assert "PROGRESS" not in out


def test_missing_required_argument_and_reconstruct_subcommand(tmp_path, capsys):
    from DiffuX2CTLib.cli import main as cli_main

    assert cli_main(["reconstruct", "--ap", "a.png"]) == EXIT_BAD_INPUT
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result == {"status": "error", "error": result["error"], "exit_code": 2, "warnings": []}
    assert "required" in result["error"] and "--lateral" in result["error"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_bad_argument(case, tmp_path, capsys):
    code, result, out = run_worker([*worker_args(case, tmp_path / "ct.nrrd"), "--device", "cuda:0"], capsys)
    assert code == EXIT_BAD_INPUT and "CUDA is not available" in result["error"] and "PROGRESS" not in out


def test_seed_beyond_64_bits_in_a_real_process_has_no_traceback(case, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "DiffuX2CTLib.worker", *worker_args(case, tmp_path / "ct.nrrd"),
                           "--seed", "123456789012345678901234567890"],
                          capture_output=True, text=True, env=env(), timeout=120)
    assert proc.returncode == EXIT_BAD_INPUT
    assert json.loads(proc.stdout.strip().splitlines()[-1])["exit_code"] == EXIT_BAD_INPUT
    assert "Traceback" not in proc.stderr and len(error_lines(proc.stderr)) == 1


# --- 1. outputs are checked before any heavy work -------------------------------------------------------
def _output_cases(case, tmp_path):
    folder = tmp_path / "folder.nrrd"
    folder.mkdir()
    (tmp_path / "plain.txt").write_text("a file")
    return {
        "a folder": (["--output", str(folder)], "--output is a folder"),
        "under a file": (["--output", str(tmp_path / "plain.txt" / "ct.nrrd")], "is not a folder"),
        "unwritable": (["--output", "/proc/diffux2ct-hardening.nrrd"], "cannot write in /proc"),
        "std is output": (["--num-samples", "2", "--std", str(tmp_path / "sub" / ".." / "ct.nrrd")],
                          "--std and --output are the same file"),
        "output is --ap": (["--output", str(case["ap"])], "--output is the same file as --ap"),
    }


@pytest.mark.parametrize("name", ["a folder", "under a file", "unwritable", "std is output", "output is --ap"])
def test_worker_output_checks(case, tmp_path, capsys, name):
    if name == "unwritable" and not LINUX:
        pytest.skip("uses /proc")
    (tmp_path / "sub").mkdir()
    change, message = _output_cases(case, tmp_path)[name]
    args = worker_args(case, tmp_path / "ct.nrrd")
    args += change
    before = sha256_file(case["ap"])
    code, result, out = run_worker(args, capsys)
    assert code == EXIT_BAD_INPUT and message in result["error"], result
    assert "PROGRESS" not in out  # refused before sampling
    assert not (tmp_path / "ct.nrrd").exists() and sha256_file(case["ap"]) == before


@pytest.mark.skipif(IS_ROOT or os.name == "nt", reason="root may write into a read-only folder")
def test_worker_read_only_folder(case, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, result, _ = run_worker(worker_args(case, locked / "ct.nrrd"), capsys)
    finally:
        locked.chmod(0o700)
    assert code == EXIT_BAD_INPUT and "cannot write in" in result["error"]


def _dicom_folder(tmp_path: Path, uids=("1.2.3.4.1",)) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_synthetic_ct
    from test_ct_io import write_dicom_series

    folder = tmp_path / "dicom"
    for n, uid in enumerate(uids):
        write_dicom_series(make_synthetic_ct(size=(12, 12, 6 + n), spacing=(8.0, 8.0, 8.0)), folder,
                           series_uid=uid, prefix=f"s{n}_")
    return folder


def test_simulate_out_checks_come_before_reading_the_ct(tmp_path, capsys):
    from DiffuX2CTLib.cli import main

    plain = tmp_path / "plain.txt"
    plain.write_text("keep me")
    missing_ct = str(tmp_path / "absent.nii.gz")
    cases = [([plain], "--out is a file"), ([plain / "sub"], "is a file, so the folder cannot be created")]
    if LINUX:
        cases.append(([Path("/proc/diffux2ct-hardening")], "cannot write in /proc"))
    for (out,), message in cases:
        assert main(["simulate", "--ct", missing_ct, "--out", str(out), "--size", "8"]) == 2
        err = error_lines(capsys.readouterr().err)
        assert len(err) == 1 and message in err[0] and "absent" not in err[0], err
    assert plain.read_text() == "keep me"
    dicom = _dicom_folder(tmp_path)
    assert main(["simulate", "--ct", str(dicom), "--out", str(dicom), "--size", "8"]) == 2
    assert "--out is the --ct folder" in capsys.readouterr().err
    assert main(["fetch-example", "--cache-dir", str(plain)]) == 2
    assert "--cache-dir is a file" in capsys.readouterr().err


def test_demo_out_is_checked_first(tmp_path, capsys):
    from DiffuX2CTLib.demo import main

    plain = tmp_path / "plain.txt"
    plain.write_text("keep me")
    assert main(["--out", str(plain), "--ct", str(tmp_path / "absent.nii.gz"), "--untrained"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--out is a file" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["--seed", str(2**63)])
    assert exc.value.code == 2


def test_cli_unexpected_and_os_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from DiffuX2CTLib import simulate as simulate_module
    from DiffuX2CTLib.cli import main

    ct = tmp_path / "ct.nrrd"
    sitk.WriteImage(phantom(12, 8.0), str(ct))

    def boom(*_args, **_kwargs):
        raise TypeError("boom\nsecond line")

    monkeypatch.setattr(simulate_module, "simulate_xrays", boom)
    assert main(["simulate", "--ct", str(ct), "--out", str(tmp_path / "a"), "--size", "8"]) == 2
    assert error_lines(capsys.readouterr().err) == ["error: unexpected TypeError: boom"]

    def denied(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied", "/somewhere/ap.png")

    monkeypatch.undo()
    monkeypatch.setattr(simulate_module, "write_simulation", denied)
    assert main(["simulate", "--ct", str(ct), "--out", str(tmp_path / "b"), "--size", "8"]) == 2
    assert error_lines(capsys.readouterr().err) == ["error: /somewhere/ap.png: Permission denied"]


# --- 2. truncated or corrupt files, all-air CTs, too many pixels -----------------------------------------
def _volume(tmp_path: Path, name: str, compress: bool = True) -> Path:
    path = tmp_path / name
    image = sitk.GetImageFromArray((np.random.default_rng(0).random((20, 22, 24)) * 1000 - 500).astype(np.int16))
    sitk.WriteImage(image, str(path), compress)
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _bad_crc(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # the gzip trailer's CRC-32
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("name, compress, damage, problem", [
    ("half.nii.gz", True, _truncate, "truncated"),
    ("half.nii", False, _truncate, "truncated"),
    ("crc.nii.gz", True, _bad_crc, "corrupt compressed data"),
    ("half.nrrd", True, _truncate, "truncated"),
    ("raw.nrrd", False, _truncate, "truncated"),
    ("half.mha", True, _truncate, "truncated"),
    ("raw.mha", False, _truncate, "truncated"),
])
def test_truncated_or_corrupt_ct_files_are_errors(tmp_path, name, compress, damage, problem):
    path = damage(_volume(tmp_path, name, compress))
    with pytest.raises(InputError) as info:
        read_ct(path)
    message = str(info.value)
    assert name in message and problem in message, message
    assert ".cxx" not in message and "0x" not in message and "\n" not in message


def test_truncated_nifti_through_simulate_and_the_worker(case, tmp_path, capsys):
    from DiffuX2CTLib.cli import main

    ct = tmp_path / "ct.nii.gz"
    sitk.WriteImage(phantom(), str(ct))
    _truncate(ct)
    assert main(["simulate", "--ct", str(ct), "--out", str(tmp_path / "out"), "--size", "8"]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "ct.nii.gz: is truncated" in err[0]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())

    xray = tmp_path / "ap.nii.gz"
    image = sitk.GetImageFromArray(np.random.default_rng(1).random((64, 64)).astype(np.float32))
    sitk.WriteImage(image, str(xray), True)
    _truncate(xray)
    code, result, _ = run_worker(worker_args(case, tmp_path / "ct.nrrd", ap=xray), capsys)
    assert code == EXIT_BAD_INPUT and "ap.nii.gz" in result["error"] and "truncated" in result["error"]


def test_all_air_ct_is_refused(tmp_path, capsys):
    from DiffuX2CTLib.cli import main

    path = tmp_path / "air.nrrd"
    image = sitk.GetImageFromArray(np.full((10, 10, 10), -1000.0, np.float32))
    sitk.WriteImage(image, str(path))
    with pytest.raises(InputError, match="air.nrrd: holds only air"):
        read_ct(path)
    assert read_ct(path, allow_air_only=True).GetSize() == (10, 10, 10)
    assert main(["simulate", "--ct", str(path), "--out", str(tmp_path / "out"), "--size", "8"]) == 2
    assert "holds only air" in capsys.readouterr().err


def _big_dicom(path: Path) -> Path:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 65535, 65535, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = b"\0\0" * 16
    ds.save_as(path, enforce_file_format=True)
    return path


def _big_nrrd(path: Path) -> Path:
    path.write_bytes(b"NRRD0004\ntype: float\ndimension: 2\nsizes: 100000 100000\nencoding: raw\n"
                     b"endian: little\n\n" + b"\0" * 64)
    return path


@pytest.mark.parametrize("make", [
    lambda d: png_claiming(d / "huge.png", 100000, 100000),
    lambda d: png_claiming(d / "wide.png", 20000, 10),
    lambda d: png_claiming(d / "bomb.png", 10000, 10000),
    lambda d: _big_dicom(d / "huge.dcm"),
    lambda d: _big_nrrd(d / "huge.nrrd"),
], ids=["png-100000", "png-wide", "png-over-pillow-limit", "dicom", "nrrd"])
def test_too_large_radiographs_are_refused_from_the_header(tmp_path, make):
    from DiffuX2CTLib.io.xray import read_xray

    path = make(tmp_path)
    started = time.monotonic()
    with pytest.raises(InputError) as info:
        read_xray(path)
    assert time.monotonic() - started < 5  # nothing was decoded
    message = str(info.value)
    assert path.name in message and ("pixels" in message) and "\n" not in message


def test_huge_png_in_a_real_worker_process(case, tmp_path):
    png = png_claiming(tmp_path / "huge.png", 100000, 100000)
    proc = subprocess.run([sys.executable, "-m", "DiffuX2CTLib.worker", *worker_args(case, tmp_path / "ct.nrrd", ap=png)],
                          capture_output=True, text=True, env=env(), timeout=120)
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "error" and "huge.png" in result["error"]
    assert "Traceback" not in proc.stderr


# --- 3. signals and a closed stdout --------------------------------------------------------------------
def test_atomic_file_removes_its_temporary_file_on_keyboard_interrupt(tmp_path):
    from DiffuX2CTLib.io.atomic import atomic_file

    with pytest.raises(KeyboardInterrupt):
        with atomic_file(tmp_path / "ct.nrrd") as tmp:
            tmp.write_bytes(b"half a file")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_sigterm_during_the_workers_final_write_leaves_nothing(case, tmp_path, capsys, monkeypatch):
    import DiffuX2CTLib.io.ct as ct_module

    original = ct_module.write_ct

    def write_then_sigterm(image, path, *args, **kwargs):
        written = original(image, path, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # the worker's handler sets the cancel event
        return written

    monkeypatch.setattr(ct_module, "write_ct", write_then_sigterm)
    out = tmp_path / "out"
    out.mkdir()
    code, result, _ = run_worker([*worker_args(case, out / "ct.nrrd"), "--num-samples", "2", "--std",
                                  str(out / "std.nrrd")], capsys)
    assert code == EXIT_CANCELLED and result["status"] == "cancelled" and "while writing" in result["error"]
    assert list(out.iterdir()) == []


def test_sigterm_during_simulate_writing_leaves_nothing(tmp_path, capsys, monkeypatch):
    from DiffuX2CTLib.cli import EXIT_TERMINATED, main
    from DiffuX2CTLib.io import xray

    ct = tmp_path / "ct.nrrd"
    sitk.WriteImage(phantom(12, 8.0), str(ct))
    original = xray.write_xray_nrrd

    def write_then_sigterm(*args, **kwargs):
        original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(xray, "write_xray_nrrd", write_then_sigterm)
    handler = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    assert main(["simulate", "--ct", str(ct), "--out", str(out), "--size", "8"]) == EXIT_TERMINATED
    assert signal.getsignal(signal.SIGTERM) == handler  # restored
    assert "terminated; no output written" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # the staging folder is gone too


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _catches_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(re.search(r"SigCgt:\s*([0-9a-f]+)", status).group(1), 16)
    return bool(mask & (1 << (signal.SIGTERM - 1)))


def _gone_or_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.mark.skipif(not LINUX, reason="uses /proc")
def test_demo_forwards_sigterm_to_its_worker(tmp_path):
    ct = tmp_path / "ct.nii.gz"
    sitk.WriteImage(phantom(24, 6.0, (0.0, 0.0, 0.0)), str(ct))
    cmd = [sys.executable, "-m", "DiffuX2CTLib.demo", "--out", str(tmp_path / "demo"), "--ct", str(ct), "--untrained",
           "--size", "16", "--steps", "1000", "--sampler", "ddpm", "--drr-size", "24", "--drr-volume-size", "16"]
    demo = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(env(), DIFFUX2CT_CACHE=str(tmp_path / "cache")))
    try:
        deadline = time.monotonic() + 60
        worker = None
        while time.monotonic() < deadline and demo.poll() is None:
            kids = [k for k in _children(demo.pid) if "DiffuX2CTLib.worker" in
                    Path(f"/proc/{k}/cmdline").read_bytes().decode(errors="replace")]
            if kids and _catches_sigterm(kids[0]):  # the worker runs and handles SIGTERM
                worker = kids[0]
                break
            time.sleep(0.05)
        assert worker is not None, demo.stderr.read() if demo.poll() is not None else "worker not started"
        demo.send_signal(signal.SIGTERM)
        _, err = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 143, err
    assert "interrupted by SIGTERM" in err and "Traceback" not in err
    deadline = time.monotonic() + 5
    while not _gone_or_zombie(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone_or_zombie(worker)  # no orphan
    assert not (tmp_path / "demo" / "reconstruction.nii.gz").exists()


def test_closed_stdout_cancels_the_worker_without_traceback(case, tmp_path):
    out = tmp_path / "ct.nrrd"
    args = worker_args(case, out, steps=1000)
    args[args.index("--sampler") + 1] = "ddpm"
    proc = subprocess.Popen([sys.executable, "-m", "DiffuX2CTLib.worker", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env())
    try:
        first = proc.stdout.readline()
        assert first.startswith("PROGRESS 1/1000"), first + proc.stderr.read()
        proc.stdout.close()  # the reader is gone: the next PROGRESS write breaks the pipe
        err = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_CANCELLED, err
    assert "Traceback" not in err and "stdout was closed" in err
    assert not out.exists()


# --- 4. checkpoints: strict JSON, one digest, weights checked ----------------------------------------------
@pytest.fixture
def saved(tmp_path, case):
    """A fresh copy of the tiny checkpoint: (weights, json, description dict)."""
    weights, json_path = tmp_path / "model.safetensors", tmp_path / "model.json"
    weights.write_bytes(case["checkpoint"].read_bytes())
    json_path.write_text(case["checkpoint"].with_suffix(".json").read_text())
    return weights, json_path, json.loads(json_path.read_text())


def _geometry_hash(geometry: dict) -> str:
    fields = {k: v for k, v in geometry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _rewrite(json_path: Path, data: dict, redigest: bool = False, text: str | None = None) -> None:
    if redigest:
        data["geometry"]["hash"] = _geometry_hash(data["geometry"])
        data["digest"] = checkpoint_digest(data)
    json_path.write_text(text if text is not None else json.dumps(data))


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(trained="false"), "trained must be true or false"),
    (lambda d: d.update(mu_water_per_mm="0.02"), "mu_water_per_mm must be a number"),
    (lambda d: d["network"].update(dropout="0"), "network config.dropout must be a number"),
    (lambda d: d["diffusion"].update(num_train_timesteps=1000.0), "num_train_timesteps must be an integer"),
    (lambda d: d["geometry"].update(detector_shape=[16, "16"]), "detector_shape[1] must be an integer"),
    (lambda d: d.update(colour="red"), "unknown top-level fields ['colour']"),
    (lambda d: d["diffusion"].pop("prediction_type"), "diffusion config lacks the fields ['prediction_type']"),
    (lambda d: d.pop("digest"), "lacks the field 'digest'"),
    (lambda d: d.update(weights="fp16"), "weights must be one of"),
    (lambda d: d.update(weights_sha256="abc"), "weights_sha256 must be 64"),
    (lambda d: d["training"].update(loss=12345.5), "training.loss holds the non-finite number inf"),
])
def test_description_fields_are_strictly_typed(saved, edit, message):
    weights, json_path, data = saved
    edit(data)
    _rewrite(json_path, data, text=json.dumps(data).replace("12345.5", "1e999"))  # 1e999 parses as inf
    with pytest.raises(CheckpointError) as info:
        read_checkpoint_info(weights)
    assert message in str(info.value) and "model.json" in str(info.value)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_constants_are_refused(saved, constant):
    weights, json_path, data = saved
    text = json.dumps(data).replace('"mu_water_per_mm": 0.01937', f'"mu_water_per_mm": {constant}')
    assert constant in text
    json_path.write_text(text)
    with pytest.raises(CheckpointError, match=f"not valid JSON .*{constant}"):
        read_checkpoint_info(weights)
    json_path.write_text(json.dumps(data).replace('"hu_max": 2048.0', '"hu_max": 1e999'))
    with pytest.raises(CheckpointError, match="finite"):
        read_checkpoint_info(weights)


@pytest.mark.parametrize("edit", [
    lambda d: d["diffusion"].update(prediction_type="v_prediction"),
    lambda d: d["diffusion"].update(beta_schedule="cosine"),
    lambda d: d["diffusion"].update(clip_sample=False),
    lambda d: d["intensity"].update(hu_min=-1000.0),
    lambda d: d["xray_normalization"].update(low_percentile=1.0),
    lambda d: d.update(mu_water_per_mm=0.02),
    lambda d: d.update(trained=True),
    lambda d: d.update(weights="raw"),
    lambda d: d["network"].update(decoder_chunk_size=2048),
    lambda d: (d["geometry"].update(source_to_detector_mm=950.0), d["geometry"].update(hash=_geometry_hash(d["geometry"]))),
], ids=["prediction", "schedule", "clip", "intensity", "normalisation", "mu", "trained", "weights", "network",
        "geometry"])
def test_an_edit_of_a_usage_field_is_detected_by_the_digest(saved, edit):
    weights, json_path, data = saved
    edit(data)
    _rewrite(json_path, data)
    with pytest.raises(CheckpointError, match="digest .* does not match the description"):
        load_checkpoint(weights)


def test_descriptive_fields_may_change_and_the_digest_is_canonical(saved):
    weights, json_path, data = saved
    data["license"] = "CC-BY-4.0"
    data["training"]["note"] = "edited by hand"
    data["intensity"]["hu_min"] = -1024  # an integer for a float: the same value
    json_path.write_text(json.dumps(data, indent=4, sort_keys=True))
    info = load_checkpoint(weights).info
    assert info.license == "CC-BY-4.0" and info.intensity.hu_min == -1024.0


@pytest.mark.parametrize("change, message", [
    (dict(source_to_isocenter_mm=-541.0), "0 < source_to_isocenter_mm < source_to_detector_mm"),
    (dict(source_to_detector_mm=400.0), "0 < source_to_isocenter_mm < source_to_detector_mm"),  # detector inside
    (dict(source_to_isocenter_mm=100.0, source_to_detector_mm=200.0), "inside or on the volume"),
    (dict(detector_spacing_mm=[0.0, 31.25]), "spacings must be positive"),
])
def test_bad_geometry_in_the_description_is_a_checkpoint_error(saved, case, tmp_path, capsys, change, message):
    weights, json_path, data = saved
    data["geometry"].update(change)
    _rewrite(json_path, data, redigest=True)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        read_checkpoint_info(weights)
    code, result, _ = run_worker(worker_args(case, tmp_path / "ct.nrrd", checkpoint=weights), capsys)
    assert code == EXIT_BAD_CHECKPOINT and "model.json" in result["error"]


def _rewrite_weights(weights: Path, json_path: Path, data: dict, change) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(weights))
    change(tensors)
    save_file(tensors, str(weights))
    data["weights_sha256"] = sha256_file(weights)
    _rewrite(json_path, data, redigest=True)


def _first_float(tensors: dict) -> str:
    return next(k for k, v in tensors.items() if v.is_floating_point())


@pytest.mark.parametrize("change, message", [
    (lambda t: t.update({(k := _first_float(t)): t[k].half()}), "is float16, the network expects float32"),
    (lambda t: t.update({(k := _first_float(t)): t[k].to(torch.float64)}), "is float64"),
    (lambda t: t.update({(k := _first_float(t)): t[k].to(torch.int64)}), "is int64, the network expects float32"),
    (lambda t: next(v for v in t.values() if v.is_floating_point()).view(-1).__setitem__(0, float("nan")), "NaN"),
    (lambda t: next(v for k, v in t.items() if "relative_position_index" in k).view(-1).__setitem__(0, 10**6),
     "constant buffer"),
])
def test_weights_of_an_unexpected_dtype_or_non_finite_are_refused(saved, change, message):
    weights, json_path, data = saved
    _rewrite_weights(weights, json_path, data, change)
    read_checkpoint_info(weights)  # the description is consistent: the weights themselves are refused
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(weights)
    assert "model.safetensors" in str(info.value)


def test_saving_refuses_non_finite_weights(tmp_path, case):
    geometry = case["geometry"]
    state = DiffuX2CTNet(NetworkConfig.tiny(), geometry).state_dict()
    next(v for v in state.values() if v.is_floating_point()).view(-1)[0] = float("inf")
    info = CheckpointInfo(network=NetworkConfig.tiny(), diffusion=DiffusionConfig(), geometry=geometry)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        save_checkpoint(tmp_path / "bad.safetensors", state, info)
    assert list(tmp_path.iterdir()) == []


def test_version_1_loads_with_a_warning_and_upgrades_in_place(saved, case, tmp_path, capsys):
    weights, json_path, data = saved
    data["format_version"] = 1
    data.pop("digest")
    json_path.write_text(json.dumps(data))
    before = sha256_file(weights)
    with pytest.warns(CheckpointWarning, match="format version 1 has no digest"):
        info = load_checkpoint(weights).info
    assert info.format_version == 1 and info.digest == ""
    code, result, _ = run_worker(worker_args(case, tmp_path / "ct.nrrd", checkpoint=weights), capsys)
    assert code == EXIT_OK and any("format version 1" in w for w in result["warnings"])
    upgrade_checkpoint(weights)
    assert sha256_file(weights) == before  # the weights keep their exact bytes
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        upgraded = read_checkpoint_info(weights)
    assert upgraded.format_version == 2 and upgraded.digest == json.loads(json_path.read_text())["digest"]
    data["trained"] = True  # an edit after the upgrade is caught
    stored = json.loads(json_path.read_text())
    stored["trained"] = True
    json_path.write_text(json.dumps(stored))
    with pytest.raises(CheckpointError, match="digest"):
        read_checkpoint_info(weights)


def test_the_committed_demo_model_and_registry_carry_the_digest():
    from DiffuX2CTLib.registry import default_registry_path, load_registry, verify

    registry = load_registry(default_registry_path())
    entry = registry.default_entry()
    weights = verify(entry, default_registry_path())
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        info = read_checkpoint_info(weights)
    assert info.format_version == 2 and entry.digest == info.digest
    assert json.loads(default_registry_path().read_text())["format_version"] == 2


def test_registry_verify_checks_the_digest(saved, tmp_path):
    import dataclasses

    from DiffuX2CTLib.registry import GeometryRef, ModelEntry, Resolution, TrainingData, verify

    weights, json_path, data = saved
    entry = ModelEntry(id="tiny", name="Tiny", version="1", description="x", license="Apache-2.0",
                       intended_use="tests", geometry=GeometryRef(preset="x2ct", hash=data["geometry"]["hash"]),
                       resolution=Resolution(volume_size=16, xray_size=16, voxel_mm=20.0),
                       training_data=TrainingData(description="none"), sha256=sha256_file(weights),
                       json_sha256=sha256_file(json_path), size_bytes=weights.stat().st_size,
                       created="2026-01-01T00:00:00+00:00", file="model.safetensors", digest=data["digest"])
    registry_path = tmp_path / "Models.json"
    assert verify(entry, registry_path) == weights.resolve()
    with pytest.raises(CheckpointError, match="digest"):
        verify(dataclasses.replace(entry, digest="0" * 64), registry_path)


# --- geometry.json beside the inputs --------------------------------------------------------------------
def test_sidecar_of_the_same_setup_is_used_and_of_another_is_ignored(case, tmp_path, capsys):
    g = case["geometry"]
    same = simulate_xrays(phantom(), g.with_sizes(volume_size=24, xray_size=24))  # other sampling, same set-up
    write_simulation(same, tmp_path / "same")
    code, result, _ = run_worker(worker_args(case, tmp_path / "a.nrrd", ap=tmp_path / "same" / "ap.nrrd",
                                             lateral=tmp_path / "same" / "lateral.nrrd"), capsys)
    assert code == EXIT_OK and not [w for w in result["warnings"] if "geometry.json" in w]
    np.testing.assert_allclose(sitk.ReadImage(str(tmp_path / "a.nrrd")).GetOrigin(),
                               g.volume_origin_lps(same.ct_center_lps), atol=1e-4)

    other = simulate_xrays(phantom(), BiplanarGeometry.preset("clinical", volume_size=16, xray_size=16))
    write_simulation(other, tmp_path / "other")
    code, result, _ = run_worker(worker_args(case, tmp_path / "b.nrrd", ap=tmp_path / "other" / "ap.nrrd",
                                             lateral=tmp_path / "other" / "lateral.nrrd"), capsys)
    assert code == EXIT_OK
    (warning,) = [w for w in result["warnings"] if "geometry.json" in w]
    assert "ignored" in warning and "'clinical'" in warning and g.hash in warning
    np.testing.assert_allclose(sitk.ReadImage(str(tmp_path / "b.nrrd")).GetOrigin(), g.volume_origin_lps(),
                               atol=1e-4)


# --- 5. item 7: help, names, ITK messages, series UID, conventions ------------------------------------------
def test_reconstruct_help_shows_defaults_and_exit_codes(capsys):
    from DiffuX2CTLib.cli import main

    assert main(["reconstruct", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "sampler steps (default: 25)" in text and "(default: dpmsolver++-sde)" in text
    assert "exit codes" in text and "3 bad checkpoint" in text and "5 cancelled" in text


def test_itk_errors_are_described_without_source_files(tmp_path):
    from DiffuX2CTLib.io.ct import write_ct

    (tmp_path / "text.nii.gz").write_text("not an image")
    (tmp_path / "notes.mha").write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\n"
                                        "ElementType = MET_SHORT\nElementDataFile = missing.raw\n")
    messages = []
    for name in ("text.nii.gz", "notes.mha"):
        with pytest.raises(InputError) as info:
            read_ct(tmp_path / name)
        messages.append(str(info.value))
    assert "not in an image format SimpleITK can read" in messages[0]
    image = sitk.GetImageFromArray(np.zeros((4, 4, 4), np.float32))
    if LINUX:
        with pytest.raises(InputError) as info:
            write_ct(image, "/proc/diffux2ct-hardening.nrrd")
        messages.append(str(info.value))
    for message in messages:
        assert ".cxx" not in message and "0x" not in message and "ITK ERROR" not in message, message


def test_mixed_series_message_and_series_uid_option(tmp_path, capsys):
    from DiffuX2CTLib.cli import main

    folder = _dicom_folder(tmp_path, uids=("1.2.3.4.1", "1.2.3.4.2"))
    with pytest.raises(InputError) as info:
        read_ct(folder)
    message = str(info.value)
    assert "--series-uid" in message and "1.2.3.4.1 (6 files)" in message and "1.2.3.4.2 (7 files)" in message
    assert main(["simulate", "--ct", str(folder), "--out", str(tmp_path / "a"), "--size", "8"]) == 2
    assert "choose one with --series-uid" in capsys.readouterr().err
    assert main(["simulate", "--ct", str(folder), "--series-uid", "1.2.3.4.2", "--out", str(tmp_path / "b"),
                 "--size", "8", "--write-ct"]) == 0
    assert (tmp_path / "b" / "ap.png").is_file()


def test_files_without_a_series_uid_are_listed_usably(tmp_path):
    import pydicom

    folder = _dicom_folder(tmp_path, uids=("1.2.3.4.1", "1.2.3.4.2"))
    for path in folder.glob("s1_*.dcm"):
        ds = pydicom.dcmread(path)
        del ds.SeriesInstanceUID
        ds.save_as(path)
    with pytest.raises(InputError) as info:
        read_ct(folder)
    assert "'' (7 files without a SeriesInstanceUID: --series-uid '')" in str(info.value)
    assert read_ct(folder, series_uid="").GetSize()[2] == 7


def test_conventions_document_exists_and_links_existing_tests():
    doc = REPO / "docs" / "CONVENTIONS.md"
    text = doc.read_text()
    assert "docs/CONVENTIONS.md" in (REPO / "DiffuX2CTLib" / "geometry" / "biplanar.py").read_text()
    links = re.findall(r"`(Testing/Python/\w+\.py)::(\w+)`", text)
    assert len(links) >= 6
    for path, name in links:
        assert re.search(rf"^def {name}\(", (REPO / path).read_text(), re.M), f"{path}::{name} does not exist"
    for phrase in ("LPS", "RAS", "patient **right on the image left**", "**anterior on the image left**",
                   "(row, col)", "(x, y) = (col, row)"):
        assert phrase in text


def test_simulated_files_follow_the_conventions(tmp_path, capsys):
    """What docs/CONVENTIONS.md states, through the files ``diffux2ct simulate`` writes."""
    from DiffuX2CTLib.cli import main
    from DiffuX2CTLib.io.xray import read_xray

    n = 40
    hu = np.full((n, n, n), -1000.0, np.float32)
    hu[8:32, 8:32, 8:32] = 0.0  # a water block around the centre
    hu[25:31, 9:15, 9:15] = 2000.0  # k superior, j anterior, i patient right: the marker
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((4.0, 4.0, 4.0))  # identity direction: i -> L, j -> P, k -> S
    ct = tmp_path / "marker.nrrd"
    sitk.WriteImage(image, str(ct))
    out = tmp_path / "out"
    assert main(["simulate", "--ct", str(ct), "--out", str(out), "--size", "32", "--xray-size", "32"]) == 0
    capsys.readouterr()
    sidecar = json.loads((out / "geometry.json").read_text())
    for view, extension in (("ap", "nrrd"), ("lateral", "nrrd"), ("ap", "png"), ("lateral", "png")):
        pixels = read_xray(out / f"{view}.{extension}").pixels
        row, col = np.unravel_index(int(np.argmax(pixels)), pixels.shape)
        # AP: patient right on the image left; lateral: anterior on the image left; head at the top
        assert col < pixels.shape[1] / 2 and row < pixels.shape[0] / 2, (view, extension, row, col)
    assert "patient right on image left" in sidecar["orientation"]["ap"]
    assert "anterior on image left" in sidecar["orientation"]["lateral"]
    raw = sitk.ReadImage(str(out / "ap.nrrd"))
    rows, cols = sidecar["image_size"]
    assert raw.GetSize() == (cols, rows)  # SimpleITK (x, y) = (col, row)
    assert raw.GetSpacing() == pytest.approx(tuple(sidecar["detector_spacing_mm"][::-1]))


def test_upgrade_script_updates_the_registry_entry(saved, tmp_path, capsys):
    from DiffuX2CTLib.registry import GeometryRef, ModelEntry, ModelRegistry, Resolution, TrainingData, load_registry
    from training.upgrade_checkpoint import main

    weights, json_path, data = saved
    data["format_version"] = 1
    data.pop("digest")
    json_path.write_text(json.dumps(data))
    registry = ModelRegistry()
    registry.upsert(ModelEntry(
        id="tiny", name="Tiny", version="1", description="x", license="Apache-2.0", intended_use="tests",
        geometry=GeometryRef(preset="x2ct", hash=data["geometry"]["hash"]),
        resolution=Resolution(volume_size=16, xray_size=16, voxel_mm=20.0), training_data=TrainingData("none"),
        sha256=sha256_file(weights), json_sha256=sha256_file(json_path), size_bytes=weights.stat().st_size,
        created="2026-01-01T00:00:00+00:00", file="model.safetensors"), make_default=True)
    registry.save(tmp_path / "Models.json")
    before = sha256_file(weights)
    assert main([str(weights), "--registry", str(tmp_path / "Models.json")]) == 0
    result = json.loads(capsys.readouterr().out)
    entry = load_registry(tmp_path / "Models.json").get("tiny")
    assert entry.digest == result["digest"] == json.loads(json_path.read_text())["digest"]
    assert entry.json_sha256 == sha256_file(json_path) and entry.sha256 == before == sha256_file(weights)
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")  # a damaged pair is refused, not blessed
    assert main([str(weights)]) == 2
    assert "SHA-256" in capsys.readouterr().err
