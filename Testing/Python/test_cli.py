"""``diffux2ct simulate``: outputs with geometry, progress, and bad input without partial output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DiffuX2CTLib.cli import main
from DiffuX2CTLib.io.xray import read_xray

REPO = Path(__file__).resolve().parents[2]


def write_phantom(path: Path, hu: np.ndarray | None = None, spacing=(2.0, 2.0, 2.0)) -> Path:
    if hu is None:
        z, y, x = np.mgrid[:24, :24, :24]
        hu = np.where((x - 12) ** 2 + (y - 12) ** 2 < 81, 0.0, -1000.0).astype(np.float32)
        hu[4:8, 10:14, 14:18] = 1500.0
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def test_simulate_writes_views_with_geometry(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFUX2CT_CACHE", str(tmp_path / "cache"))
    ct = write_phantom(tmp_path / "ct.nrrd")
    out = tmp_path / "out"
    assert main(["simulate", "--ct", str(ct), "--out", str(out), "--size", "16", "--xray-size", "24", "--write-ct"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["ap.nrrd", "ap.png", "ct_model_grid.nii.gz", "geometry.json", "lateral.nrrd", "lateral.png"]
    sidecar = json.loads((out / "geometry.json").read_text())
    assert sidecar["geometry"]["name"] == "x2ct" and sidecar["image_size"] == [24, 24]
    pitch = 500.0 / 24
    for view in ("ap", "lateral"):
        png = read_xray(out / f"{view}.png")
        assert png.pixels.shape == (24, 24) and png.pixels.max() > 60000  # 16-bit range used
        nrrd = read_xray(out / f"{view}.nrrd")
        assert nrrd.spacing_mm == pytest.approx((pitch, pitch))
        # ~36 mm of water (0.7) plus a bone block, blurred by the 20 mm model voxels
        assert 0.3 < nrrd.pixels.max() < 1.5
    assert str(out / "ap.png") in capsys.readouterr().out


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "DiffuX2CTLib", *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_process_exit_code_and_one_line_error(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("simulate", "--ct", str(tmp_path / "absent.nii.gz"), "--out", str(out))
    assert proc.returncode == 2
    error_lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(error_lines) == 1 and "absent.nii.gz" in error_lines[0]
    assert not out.exists() or list(out.iterdir()) == []


def _nan_ct(tmp_path):
    hu = np.zeros((8, 8, 8), np.float32)
    hu[2, 2, 2] = np.nan
    return write_phantom(tmp_path / "nan.nrrd", hu)


def _flat_ct(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((16, 16), np.float32))
    sitk.WriteImage(image, str(tmp_path / "flat.nrrd"))
    return tmp_path / "flat.nrrd"


def _text_file(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_text("not an image")
    return path


def _empty_folder(tmp_path):
    (tmp_path / "dicom").mkdir()
    return tmp_path / "dicom"


@pytest.mark.parametrize(
    "make, problem",
    [(_nan_ct, "nan.nrrd"), (_flat_ct, "flat.nrrd"), (_text_file, "notes.nii.gz"), (_empty_folder, "dicom")],
)
def test_bad_ct_leaves_output_untouched(tmp_path, capsys, make, problem):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("existing file")
    assert main(["simulate", "--ct", str(make(tmp_path)), "--out", str(out), "--size", "8"]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error")]  # besides the progress bar
    assert len(err) == 1 and err[0].startswith("error: ") and problem in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    """A crash after some files were written must not leave them behind."""
    from DiffuX2CTLib import simulate as simulate_module
    from DiffuX2CTLib.io import xray

    monkeypatch.setenv("DIFFUX2CT_CACHE", str(tmp_path / "cache"))
    calls = []

    def failing_nrrd(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(path, *args, **kwargs)

    original = xray.write_xray_nrrd
    monkeypatch.setattr(xray, "write_xray_nrrd", failing_nrrd)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        simulate_module.write_simulation(
            simulate_module.simulate_xrays(sitk.ReadImage(str(write_phantom(tmp_path / "ct.nrrd"))),
                                           simulate_module.BiplanarGeometry.preset("x2ct", 8, 8)), out)
    assert list(out.iterdir()) == []


def test_geometry_from_json_sidecar_and_bad_geometry(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFUX2CT_CACHE", str(tmp_path / "cache"))
    ct = write_phantom(tmp_path / "ct.nrrd")
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["simulate", "--ct", str(ct), "--out", str(first), "--geometry", "clinical", "--size", "12"]) == 0
    # the sidecar of one run is a valid --geometry for the next, giving the identical set-up
    assert main(["simulate", "--ct", str(ct), "--out", str(second), "--geometry", str(first / "geometry.json")]) == 0
    a, b = (json.loads((d / "geometry.json").read_text())["geometry"] for d in (first, second))
    assert a == b and a["name"] == "clinical"
    np.testing.assert_array_equal(read_xray(first / "ap.nrrd").pixels, read_xray(second / "ap.nrrd").pixels)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "source_to_isocenter_mm": 10}))
    assert main(["simulate", "--ct", str(ct), "--out", str(tmp_path / "o"), "--geometry", str(bad)]) == 2
    assert main(["simulate", "--ct", str(ct), "--out", str(tmp_path / "o"), "--geometry", "lidc"]) == 2
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error")]
    assert "bad.json: missing geometry fields" in errors[0] and "'lidc'" in errors[1]


def test_reconstruct_subcommand_is_the_worker(tmp_path, capsys):
    """``diffux2ct reconstruct`` forwards to the worker: same JSON result line and exit codes."""
    from DiffuX2CTLib.worker import EXIT_BAD_INPUT

    args = ["reconstruct", "--ap", str(tmp_path / "ap.png"), "--lateral", str(tmp_path / "lat.png"),
            "--checkpoint", str(tmp_path / "m.safetensors"), "--output", str(tmp_path / "ct.nrrd")]
    assert main(args) == EXIT_BAD_INPUT
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "error" and "ap.png: --ap file not found" in result["error"]
