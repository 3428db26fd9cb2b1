"""The demo chain (CT -> DRRs -> untrained checkpoint -> worker -> metrics and montage) at 16^3."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from DiffuX2CTLib.demo import UNTRAINED_BANNER, main, orthogonal_slices

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_full_chain_and_says_model_is_untrained(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFUX2CT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    z, y, x = np.mgrid[:40, :40, :40]
    hu = np.where((x - 20) ** 2 + (y - 20) ** 2 < 15**2, 20.0, -1000.0).astype(np.float32)
    ct = sitk.GetImageFromArray(hu)
    ct.SetSpacing((3.0, 3.0, 3.0))
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--ct", str(tmp_path / "ct.nii.gz"), "--untrained", "--size", "16", "--steps", "2",
                 "--drr-size", "40", "--drr-volume-size", "24"]) == 0
    # DRRs are written at their own resolution; the worker resampled them to the 16 x 16 model input
    assert sitk.ReadImage(str(out / "xrays" / "ap.nrrd")).GetSize() == (40, 40)
    stdout = capsys.readouterr().out
    assert UNTRAINED_BANNER in stdout and "not meaningful" in stdout
    report = json.loads((out / "metrics.json").read_text())
    assert report["model_trained"] is False and report["note"] == UNTRAINED_BANNER
    assert set(report["metrics"]) == {"psnr_db", "ssim", "mae_hu", "rmse_hu"}
    assert report["worker"]["steps"] == 2
    recon = sitk.ReadImage(str(out / "reconstruction.nii.gz"))
    truth = sitk.ReadImage(str(out / "ground_truth.nii.gz"))
    assert recon.GetSize() == truth.GetSize() == (16, 16, 16)
    np.testing.assert_allclose(recon.GetOrigin(), truth.GetOrigin(), atol=1e-3)  # same place in the patient
    montage = np.asarray(Image.open(out / "montage.png"))
    assert montage.ndim == 2 and montage.shape[0] > 2 * 16 and montage.std() > 0


def test_orthogonal_slices_use_radiological_display():
    vol = np.zeros((4, 5, 6))
    vol[2, 0, 0] = 1  # mid-height, anterior, patient right
    assert orthogonal_slices(vol)[0][0, 0] == 1  # axial: anterior at the top, patient right on the left
    vol2 = np.zeros((4, 5, 6))
    vol2[3, 2, 0] = 1  # superior, mid-depth, patient right
    coronal = orthogonal_slices(vol2)[1]
    assert coronal[0, 0] == 1  # superior at the top, patient right on the image left
    vol3 = np.zeros((4, 5, 6))
    vol3[3, 0, 3] = 1  # superior, anterior, mid-width
    sagittal = orthogonal_slices(vol3)[2]
    assert sagittal[0, 0] == 1  # superior at the top, anterior on the image left


def _small_ct(tmp_path: Path) -> Path:
    z, y, x = np.mgrid[:40, :40, :40]
    hu = np.where((x - 20) ** 2 + (y - 20) ** 2 < 15**2, 20.0, -1000.0).astype(np.float32)
    hu[:, 18:22, 18:22] = 700.0  # a "spine"
    ct = sitk.GetImageFromArray(hu)
    ct.SetSpacing((6.0, 6.0, 6.0))
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ct, str(path))
    return path


def test_demo_uses_the_registry_default_model(tmp_path, monkeypatch, capsys):
    from DiffuX2CTLib.registry import default_registry_path, load_registry

    entry = load_registry(default_registry_path()).default_entry()
    assert entry is not None, "Resources/Models.json names no default model"
    monkeypatch.setenv("DIFFUX2CT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--ct", str(_small_ct(tmp_path)), "--steps", "3", "--drr-size", "64",
                 "--drr-volume-size", "48"]) == 0
    stdout = capsys.readouterr().out
    assert UNTRAINED_BANNER not in stdout and entry.name in stdout
    report = json.loads((out / "metrics.json").read_text())
    assert report["model_trained"] is True and report["note"] is None
    n = entry.resolution.volume_size
    recon = sitk.ReadImage(str(out / "reconstruction.nii.gz"))
    truth = sitk.ReadImage(str(out / "ground_truth.nii.gz"))
    assert recon.GetSize() == truth.GetSize() == (n, n, n)
    np.testing.assert_allclose(recon.GetOrigin(), truth.GetOrigin(), atol=1e-3)


def test_demo_refuses_a_default_model_whose_weights_do_not_match(tmp_path, monkeypatch, capsys):
    import shutil

    import DiffuX2CTLib.registry as registry_module

    resources = tmp_path / "Resources"
    shutil.copytree(REPO / "Resources", resources)
    entry = registry_module.load_registry(resources / "Models.json").default_entry()
    weights = resources / entry.file
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the weights
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(registry_module, "default_registry_path", lambda: resources / "Models.json")
    assert main(["--out", str(tmp_path / "demo"), "--ct", str(_small_ct(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and weights.name in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "demo" / "reconstruction.nii.gz").exists()
