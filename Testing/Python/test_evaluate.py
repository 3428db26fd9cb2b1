"""training.metrics, training.perceptual and the training.evaluate CLI on tiny synthetic data."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from DiffuX2CTLib.geometry import BiplanarGeometry
from DiffuX2CTLib.io.intensity import CTIntensity
from training import metrics as M

torch.set_num_threads(1)
GEOMETRY = BiplanarGeometry.preset("x2ct", volume_size=16, xray_size=16)


def _phantom(seed: int = 0, shape=(16, 16, 16)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d, h, w = shape
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    v = np.full(shape, -1000.0)
    body = x**2 + y**2 + z**2 < 0.7
    v[body] = 40 + rng.normal(0, 20, body.sum())
    v[body & (x**2 + (y - 0.2) ** 2 < 0.05)] = 700.0
    return v.astype(np.float32)


# --- metrics -------------------------------------------------------------------------------
def test_identical_volumes_give_perfect_scores():
    v = _phantom()
    m = M.case_metrics(v, v, intensity=CTIntensity())
    assert m["psnr_db"] == M.PSNR_CAP_DB and m["psnr_x2ct_db"] == M.PSNR_CAP_DB
    assert m["mae_hu"] == 0 and m["rmse_hu"] == 0 and m["bone_dice"] == 1.0
    assert m["ssim3d"] == pytest.approx(1.0, abs=1e-5) and m["ssim2d_slices"] == pytest.approx(1.0, abs=1e-5)


def test_shift_gives_known_mae_psnr_and_x2ct_offset():
    v = _phantom()
    shifted = v + 10.0  # stays inside [-1024, 1476]: nothing is clipped by either convention
    mae, rmse = M.mae_rmse_hu(shifted, v)
    assert mae == pytest.approx(10.0) and rmse == pytest.approx(10.0)
    assert M.psnr_window(shifted, v) == pytest.approx(20 * math.log10(3072 / 10))
    assert M.psnr_x2ct(shifted, v) == pytest.approx(20 * math.log10(4095 / 10))
    assert M.psnr_x2ct(shifted, v) - M.psnr_window(shifted, v) == pytest.approx(20 * math.log10(4095 / 3072))


def test_x2ct_psnr_clips_to_its_range():
    a = np.full((4, 4, 4), 1476.0)
    b = np.full((4, 4, 4), 3000.0)  # both clip to 2500 on the HU + 1024 scale
    assert M.psnr_x2ct(a, b) == M.PSNR_CAP_DB
    assert M.psnr_window(a, b) == pytest.approx(20 * math.log10(3072 / (2048 - 1476)))


def test_ssim2d_slices_matches_monai_slice_by_slice():
    from monai.metrics import SSIMMetric

    v, w = _phantom(0), _phantom(1) + 30
    intensity = CTIntensity()
    pu, tu = M.to_unit(v, intensity), M.to_unit(w, intensity)
    metric = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=11)
    per_axis = []
    for axis in range(3):
        values = [float(metric(torch.from_numpy(np.take(pu, i, axis))[None, None].contiguous(),
                               torch.from_numpy(np.take(tu, i, axis))[None, None].contiguous()))
                  for i in range(16)]
        per_axis.append(np.mean(values))
    assert M.ssim2d_slices(v, w, intensity) == pytest.approx(np.mean(per_axis), abs=1e-5)


def test_bone_dice():
    a = np.zeros((4, 4, 4))
    assert M.bone_dice(a, a) == 1.0
    b = a.copy()
    a[0, :2] = 500  # 8 voxels
    b[0, 1:3] = 500  # 8 voxels, 4 shared
    assert M.bone_dice(a, b) == pytest.approx(0.5)
    assert M.bone_dice(a, b, threshold_hu=600) == 1.0


def test_projection_error_is_zero_for_the_truth():
    from DiffuX2CTLib.drr import DRRProjector

    projector = DRRProjector(GEOMETRY, use_disk_cache=False)
    v = _phantom()
    li = projector(torch.from_numpy(v)[None, None])[0].numpy()
    m = M.case_metrics(v, v, intensity=CTIntensity(), projector=projector, input_line_integrals=li)
    assert m["proj_mae"] == pytest.approx(0, abs=1e-6) and m["proj_rel_l2"] == pytest.approx(0, abs=1e-6)
    worse = M.projection_metrics(v + 200, li, projector)
    assert worse["proj_rel_l2"] > 0.01


def test_uncertainty_correlates_on_constructed_data():
    rng = np.random.default_rng(0)
    target = np.zeros((16, 16, 16), np.float32)
    std = rng.uniform(1, 100, target.shape).astype(np.float32)
    pred = target + rng.normal(0, 1, target.shape) * std
    m = M.uncertainty_metrics(pred, target, std)
    assert m["unc_pearson"] > 0.3 and m["unc_spearman"] > 0.3
    assert m["coverage_2sigma"] == pytest.approx(0.954, abs=0.02)
    m = M.uncertainty_metrics(pred, np.full_like(target, -1000), std)  # no body voxels
    assert math.isnan(m["coverage_2sigma"])


# --- perceptual -------------------------------------------------------------------------------
def _random_weights(path: Path, lpips: bool = True, drop: str | None = None, seed: int = 0) -> Path:
    from safetensors.torch import save_file

    from training.perceptual import alexnet_shapes, lpips_shapes

    g = torch.Generator().manual_seed(seed)
    shapes = {**alexnet_shapes(), **(lpips_shapes() if lpips else {})}
    tensors = {}
    for name, shape in shapes.items():
        fan_in = max(1, int(np.prod(shape[1:])))
        t = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
        tensors[name] = t.abs() if name.startswith("lin") else t
    tensors.pop(drop, None)
    save_file(tensors, str(path))
    return path


def test_lpips_zero_for_identical_and_positive_otherwise(tmp_path):
    from training.perceptual import PerceptualMetrics

    w = _random_weights(tmp_path / "lpips.safetensors")
    pm = PerceptualMetrics.from_files(CTIntensity(), lpips_weights=w, fid_weights=w)
    v = _phantom()
    assert pm.lpips(v, v) == pytest.approx(0.0, abs=1e-7)
    assert pm.lpips(v + 300, v) > 0
    pm.add_fid_case(v, v)
    pm.add_fid_case(_phantom(2), _phantom(2))
    assert pm.fid() == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_matches_closed_form():
    from training.perceptual import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (4000, 3))
    b = rng.normal(0, 1, (4000, 3)) * 2 + 1  # mean shift 1 per axis, std 2: FD = 3 + 3 * (1 - 2)^2 = 6
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.05)


def test_weight_file_validation_names_file_and_key(tmp_path):
    from DiffuX2CTLib.errors import InputError
    from training.perceptual import PerceptualMetrics

    w = _random_weights(tmp_path / "bad.safetensors", drop="lin2.weight")
    with pytest.raises(InputError, match=r"bad\.safetensors.*missing tensor 'lin2\.weight'"):
        PerceptualMetrics.from_files(CTIntensity(), lpips_weights=w)
    from safetensors.torch import save_file

    save_file({"features.0.weight": torch.zeros(3, 3)}, str(tmp_path / "shape.safetensors"))
    with pytest.raises(InputError, match=r"shape\.safetensors.*'features\.0\.weight' has shape \(3, 3\)"):
        PerceptualMetrics.from_files(CTIntensity(), fid_weights=tmp_path / "shape.safetensors")
    (tmp_path / "w.pt").write_bytes(b"\x80\x04")
    with pytest.raises(InputError, match=r"w\.pt"):
        PerceptualMetrics.from_files(CTIntensity(), fid_weights=tmp_path / "w.pt")


# --- CLI ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    import SimpleITK as sitk

    from DiffuX2CTLib.drr import DRRProjector
    from DiffuX2CTLib.io.ct import body_center_lps, to_model_grid
    from DiffuX2CTLib.io.ct import model_array
    from training.cache import CacheManifest, CaseRecord, write_case

    root = tmp_path_factory.mktemp("cache")
    projector = DRRProjector(GEOMETRY, use_disk_cache=False)
    records = []
    for i in range(3):
        image = sitk.GetImageFromArray(_phantom(i, (40, 40, 40)))
        image.SetSpacing((8.0, 8.0, 8.0))
        center = body_center_lps(image)
        model_ct = to_model_grid(image, GEOMETRY, center)
        li = projector(torch.from_numpy(model_array(model_ct))[None, None])[0].numpy()
        record = CaseRecord(case_id=f"case{i}", group=f"case{i}", dataset="folder", source="synthetic",
                            geometry_hash=GEOMETRY.hash, center_lps=center)
        write_case(root, record, model_ct, li, GEOMETRY)
        records.append(record)
    CacheManifest(geometry=GEOMETRY, cases=records, splits={r.case_id: "test" for r in records}).save(root)
    return root


def _checkpoint(path: Path, geometry: BiplanarGeometry) -> Path:
    from DiffuX2CTLib.checkpoint import CheckpointInfo, save_checkpoint
    from DiffuX2CTLib.diffusion.config import DiffusionConfig
    from DiffuX2CTLib.network import DiffuX2CTNet, NetworkConfig

    torch.manual_seed(0)
    model = DiffuX2CTNet(NetworkConfig.tiny(), geometry)
    info = CheckpointInfo(network=NetworkConfig.tiny(), diffusion=DiffusionConfig(), geometry=geometry)
    return save_checkpoint(path, model.state_dict(), info)[0]


def test_cli_end_to_end(tiny_cache, tmp_path, capsys):
    from training.evaluate import main

    ckpt = _checkpoint(tmp_path / "model.safetensors", GEOMETRY)
    out = tmp_path / "eval"
    rc = main(["--checkpoint", str(ckpt), "--cache", str(tiny_cache), "--out", str(out), "--steps", "2",
               "--num-samples", "2", "--batch-size", "2", "--device", "cpu", "--save-predictions"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "LPIPS/FID skipped" in captured.err and "psnr_db" in captured.out
    with open(out / "per_case.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows] == ["case0", "case1", "case2"]
    for key in ("psnr_db", "psnr_x2ct_db", "ssim3d", "ssim2d_slices", "mae_hu", "bone_dice", "proj_mae",
                "proj_rel_l2", "unc_pearson", "coverage_2sigma", "seconds"):
        assert key in rows[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_cases"] == 3 and summary["steps"] == 2 and summary["sampler"] == "dpmsolver++-sde"
    assert summary["psnr_data_range"] == "window [-1024, 2048] HU (3072): both volumes clipped to the window"
    assert summary["metrics"]["mae_hu"]["count"] == 3 and summary["bone_threshold_hu"] == 200.0
    assert (out / "montage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "predictions").iterdir()) == [f"case{i}.nii.gz" for i in range(3)]


def test_evaluate_in_process_with_lpips(tiny_cache, tmp_path):
    from DiffuX2CTLib.checkpoint import load_checkpoint
    from training.evaluate import evaluate
    from training.perceptual import PerceptualMetrics

    loaded = load_checkpoint(_checkpoint(tmp_path / "m.safetensors", GEOMETRY))
    w = _random_weights(tmp_path / "w.safetensors")
    pm = PerceptualMetrics.from_files(loaded.info.intensity, lpips_weights=w, fid_weights=w)
    rows, summary = evaluate(loaded.model, loaded.info, "regression", tiny_cache, ["case1"], steps=1,
                             num_samples=1, seed=0, batch_size=1, perceptual=pm)
    assert len(rows) == 1 and rows[0]["lpips"] >= 0 and "unc_pearson" not in rows[0]
    assert "fid_alexnet" in summary and summary["metrics"]["lpips"]["count"] == 1


def test_cli_bad_geometry_exits_2_with_one_line(tiny_cache, tmp_path, capsys):
    from training.evaluate import main

    ckpt = _checkpoint(tmp_path / "clinical.safetensors", BiplanarGeometry.preset("clinical", 16, 16))
    rc = main(["--checkpoint", str(ckpt), "--cache", str(tiny_cache), "--out", str(tmp_path / "o"),
               "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "clinical.safetensors" in err[0] and "geometry" in err[0]
    assert not (tmp_path / "o").exists()
