"""training.prepare_data: discovery, cleaning, DRRs, resumable cache, splits and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DiffuX2CTLib.errors import InputError
from DiffuX2CTLib.geometry import BiplanarGeometry
from training.cache import CaseRecord, complete_cases, read_case_line_integrals
from training.prepare_data import main, prepare
from training.preprocess import AugmentOptions, sample_augmentation
from training.sources import discover
from training.splits import load_id_list, make_splits, x2ct_gan_lidc_split, X2CT_TEST, X2CT_TRAIN

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
SIZE = 16


def _geometry() -> BiplanarGeometry:
    return BiplanarGeometry.preset("x2ct", SIZE)


# --- tiny DICOM writer (synthetic series) -------------------------------------------------
def write_dicom_series(folder: Path, n: int, modality: str = "CT", series_uid: str | None = None,
                       patient: str = "P1", study_date: str = "20000101", series_number: str = "1",
                       size: int = 16, image_type: str = "ORIGINAL\\PRIMARY\\AXIAL") -> str:
    """``n`` axial slices (1 mm pixels, 2 mm apart) of a disc of 40 HU in air; returns the series UID."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 <= (0.35 * size) ** 2
    pixels = np.where(disc, 1064, 0).astype(np.int16)  # stored value; HU = value - 1024
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.StudyDate = modality, patient, study_date
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SeriesNumber, ds.InstanceNumber = series_number, k + 1
        ds.ImageType = image_type.split("\\")
        ds.ImagePositionPatient = [-size / 2, -size / 2, 2.0 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.0
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)
    return series_uid


# --- one shared run on the real data -------------------------------------------------------
@pytest.fixture(scope="module")
def real_run(shared_data_dir, tmp_path_factory):
    """Three real scans + a truncated NIfTI + an MR series + a label map, prepared at 16^3."""
    import pydicom
    from pydicom.uid import generate_uid

    root = tmp_path_factory.mktemp("prep")
    inputs = root / "inputs"
    inputs.mkdir()
    for name in ("abdomen_ct.nii.gz", "chest_lung1.nrrd", "abdomen_crlm1004_dicom"):
        os.symlink(shared_data_dir / name, inputs / name)
    data = (shared_data_dir / "abdomen_ct.nii.gz").read_bytes()
    (inputs / "corrupt_ct.nii.gz").write_bytes(data[: len(data) // 3])
    mr = inputs / "mr_series"
    mr.mkdir()
    uid = generate_uid()
    for src in sorted((shared_data_dir / "abdomen_ct_dicom").iterdir())[:10]:
        ds = pydicom.dcmread(src)
        ds.Modality, ds.SeriesInstanceUID = "MR", uid
        ds.save_as(mr / src.name)
    labels = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 4, (12, 12, 12)).astype(np.uint8))
    sitk.WriteImage(labels, str(inputs / "abdomen_seg.nii.gz"))
    sitk.WriteImage(labels, str(inputs / "organs.nii.gz"))  # a label map whose name does not say so
    cache = root / "cache"
    manifest, report = prepare([inputs], cache, geometry="x2ct", size=SIZE, seed=3)
    return cache, manifest, report


def test_real_cases_enter_the_manifest_and_bad_inputs_are_reported(real_run):
    cache, manifest, report = real_run
    ids = {c.case_id for c in manifest.cases}
    assert ids == {"abdomen_ct", "chest_lung1", "abdomen_crlm1004_dicom"}
    assert all(c.geometry_hash == _geometry().hash for c in manifest.cases)
    saved = json.loads((cache / "manifest.json").read_text())
    assert saved["geometry"]["hash"] == _geometry().hash and len(saved["cases"]) == 3
    on_disk = json.loads((cache / "report.json").read_text())
    failed = {f["case_id"]: f["reason"] for f in on_disk["failed"]}
    assert set(failed) == {"corrupt_ct", "organs"}
    assert "corrupt_ct.nii.gz" in failed["corrupt_ct"] and "\n" not in failed["corrupt_ct"]
    assert "label map" in failed["organs"]
    reasons = " | ".join(f"{s['source']}: {s['reason']}" for s in on_disk["skipped"])
    assert "mr_series" in reasons and "Modality MR" in reasons
    assert "abdomen_seg.nii.gz" in reasons


def test_cached_case_files_are_air_floored_on_the_model_grid(real_run):
    cache, manifest, _ = real_run
    geometry = manifest.geometry
    for record in manifest.cases:
        ct = sitk.ReadImage(str(cache / "cases" / record.case_id / "ct.nii.gz"))
        assert ct.GetPixelID() == sitk.sitkInt16
        values = sitk.GetArrayViewFromImage(ct)
        assert values.shape == geometry.volume_shape and values.min() >= -1024 and values.max() > 0
        np.testing.assert_allclose(ct.GetSpacing(), geometry.volume_spacing_mm[::-1], rtol=1e-6)
        np.testing.assert_allclose(ct.GetOrigin(), geometry.volume_origin_lps(record.center_lps), atol=1e-3)
        np.testing.assert_allclose(ct.GetDirection(), np.eye(3).ravel(), atol=1e-6)
        drr = read_case_line_integrals(cache, record, geometry)
        assert drr.shape == (len(geometry.views), *geometry.detector_shape)
        assert np.all(np.isfinite(drr)) and drr.min() >= 0 and drr[:, SIZE // 2, SIZE // 2].min() > 0
        assert record.body_mask and set(record.hu_stats) >= {"min", "max", "mean", "std", "p01", "p99",
                                                             "padding_fraction"}
        assert record.hu_stats["min"] >= -1024
    crlm = manifest.case("abdomen_crlm1004_dicom")
    assert crlm.hu_stats["padding_fraction"] > 0.1 and crlm.series_uid
    assert manifest.case("chest_lung1").body_at_fov_edge > 0.05  # chest wall cut off by the FOV
    assert manifest.case("abdomen_crlm1004_dicom").body_at_fov_edge < 0.05


def test_second_run_skips_complete_cases(real_run):
    cache, manifest, _ = real_run
    ct = cache / "cases" / "chest_lung1" / "ct.nii.gz"
    before = ct.stat().st_mtime_ns
    inputs = [Path(manifest.case("chest_lung1").source).parent]
    again, report = prepare(inputs, cache, geometry="x2ct", size=SIZE, seed=3)
    assert report["cases_prepared"] == 0 and report["cases_already_complete"] == 3
    assert ct.stat().st_mtime_ns == before
    assert again.splits == manifest.splits and {c.case_id for c in again.cases} == set(manifest.splits)


# --- synthetic data ------------------------------------------------------------------------
@pytest.fixture
def synthetic_inputs(tmp_path, make_ct) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    sitk.WriteImage(make_ct(size=(24, 20, 16)), str(folder / "phantom.nii.gz"))
    return folder


def test_interrupted_write_leaves_no_partial_case(synthetic_inputs, tmp_path, monkeypatch):
    import DiffuX2CTLib.io.xray as xray

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(xray, "write_xray_nrrd", boom)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        prepare([synthetic_inputs], cache, size=SIZE)
    assert list((cache / "cases").iterdir()) == [] and complete_cases(cache, _geometry().hash) == {}

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(xray, "write_xray_nrrd", fail)
    with pytest.raises(InputError, match="no case could be prepared"):
        prepare([synthetic_inputs], cache, size=SIZE)
    report = json.loads((cache / "report.json").read_text())
    assert report["failed"][0]["reason"] == "RuntimeError: disk full"
    assert list((cache / "cases").iterdir()) == [] and not (cache / "manifest.json").exists()


def test_augmentations_are_seeded_and_share_the_group(synthetic_inputs, tmp_path):
    augment = AugmentOptions(copies=2, z_cut_probability=1.0)
    runs = [prepare([synthetic_inputs], tmp_path / f"c{i}", size=SIZE, augment=augment, seed=5)[0] for i in (0, 1)]
    ids = [c.case_id for c in runs[0].cases]
    assert ids == ["phantom", "phantom_aug01", "phantom_aug02"]
    assert [c.ct_sha256 for c in runs[0].cases] == [c.ct_sha256 for c in runs[1].cases]
    assert len({c.ct_sha256 for c in runs[0].cases}) == 3
    assert {c.group for c in runs[0].cases} == {"phantom"} and len(set(runs[0].splits.values())) == 1
    params = runs[0].case("phantom_aug01").augmentation
    assert params["source_case_id"] == "phantom" and max(map(abs, params["rotation_deg_lps"])) <= 5
    assert abs(params["scale"] - 1) <= 0.05 and max(map(abs, params["shift_mm_lps"])) <= 15
    assert 0.7 <= params["z_keep"]["fraction"] <= 1 and abs(params["intensity_a"]) <= 0.03
    assert sample_augmentation("phantom", 1, 5, augment) == params
    assert sample_augmentation("phantom", 1, 6, augment) != params


# --- splits --------------------------------------------------------------------------------
def _record(case_id: str, group: str, dataset: str = "folder", **extra) -> CaseRecord:
    return CaseRecord(case_id=case_id, group=group, dataset=dataset, source="x", geometry_hash="h",
                      center_lps=(0, 0, 0), extra=extra)


def test_x2ct_gan_split_lists():
    train, test = load_id_list(X2CT_TRAIN), load_id_list(X2CT_TEST)
    assert (len(train), len(test)) == (916, 102)
    assert len(set(train)) == 916 and not set(train) & set(test)
    assert all(i.startswith("LIDC-IDRI-") for i in train + test)
    assert len(x2ct_gan_lidc_split()) == 1018


def test_splits_are_deterministic_and_keep_groups_together():
    records = [_record(f"g{g}_c{c}", f"g{g}") for g in range(60) for c in range(3)]
    records += [_record("LIDC-IDRI-0001.20000101.3000566.1", "LIDC-IDRI-0001", "lidc"),
                _record("LIDC-IDRI-0256.20000101.8658.4.1", "LIDC-IDRI-0256", "lidc"),
                _record("LIDC-IDRI-0256.20000101.8658.4.1_aug01", "LIDC-IDRI-0256", "lidc",
                        source_case_id="LIDC-IDRI-0256.20000101.8658.4.1")]
    a = make_splits(records, seed=1, val_fraction=0.2, test_fraction=0.2, test_groups=["g7"])
    b = make_splits(records, seed=1, val_fraction=0.2, test_fraction=0.2, test_groups=["g7"])
    c = make_splits(records, seed=2, val_fraction=0.2, test_fraction=0.2, test_groups=["g7"])
    assert a.splits == b.splits and a.splits != c.splits
    assert a.method == "x2ct-gan-lidc+seeded-group" and a.params["seed"] == 1
    for split in (a, c):
        by_group: dict[str, set] = {}
        for r in records:
            by_group.setdefault(r.group, set()).add(split.splits[r.case_id])
        assert all(len(s) == 1 for s in by_group.values())
        assert {split.splits[r.case_id] for r in records if r.group == "g7"} == {"test"}
        assert set(split.splits.values()) == {"train", "val", "test"}
    assert a.splits["LIDC-IDRI-0256.20000101.8658.4.1_aug01"] == "test"
    assert a.splits["LIDC-IDRI-0001.20000101.3000566.1"] in ("train", "val")
    fewer = make_splits(records[:90], seed=1, val_fraction=0.2, test_fraction=0.2, test_groups=["g7"])
    assert all(fewer.splits[k] == a.splits[k] for k in fewer.splits)  # adding cases moves no group


# --- LIDC tree -----------------------------------------------------------------------------
def test_lidc_tree_discovery_keeps_the_largest_ct_series(tmp_path):
    root = tmp_path / "LIDC"
    p1 = root / "LIDC-IDRI-0001" / "01-01-2000-30178"
    big = write_dicom_series(p1 / "3000566", 10, series_number="3000566", patient="LIDC-IDRI-0001")
    write_dicom_series(p1 / "3000999", 9, series_number="3000999", patient="LIDC-IDRI-0001")
    write_dicom_series(root / "LIDC-IDRI-0001" / "01-01-2000-1" / "1", 1, modality="DX", patient="LIDC-IDRI-0001")
    write_dicom_series(root / "LIDC-IDRI-9999" / "s" / "2", 8, series_number="2", patient="LIDC-IDRI-9999")
    found = discover([root], "lidc")
    by_id = {c.case_id: c for c in found.cases}
    assert set(by_id) == {"LIDC-IDRI-0001.20000101.3000566.1", "LIDC-IDRI-9999.20000101.2"}
    case = by_id["LIDC-IDRI-0001.20000101.3000566.1"]
    assert case.series_uid == big and case.group == "LIDC-IDRI-0001" and case.extra["x2ct_gan_id_match"] == "series"
    reasons = " | ".join(s.reason for s in found.skipped)
    assert "Modality DX" in reasons and "more slices (10 > 9)" in reasons
    manifest, _ = prepare([root], tmp_path / "cache", dataset="lidc", size=SIZE)
    assert manifest.splits["LIDC-IDRI-0001.20000101.3000566.1"] in ("train", "val")
    assert manifest.case("LIDC-IDRI-9999.20000101.2").series_uid


def test_folder_discovery_skips_localizers_and_short_series(tmp_path):
    write_dicom_series(tmp_path / "a", 8, image_type="ORIGINAL\\PRIMARY\\LOCALIZER")
    write_dicom_series(tmp_path / "a", 3)
    write_dicom_series(tmp_path / "b", 9, series_number="4")
    found = discover([tmp_path])
    assert [c.case_id for c in found.cases] == ["b"]
    reasons = sorted(s.reason for s in found.skipped)
    assert reasons[0] == "localizer (scout) series" and reasons[1].startswith("only 3 slice(s)")


# --- command line --------------------------------------------------------------------------
def test_cli_missing_input_is_one_line_exit_2(tmp_path):
    missing = tmp_path / "nope"
    proc = subprocess.run([sys.executable, "-m", "training.prepare_data", "--input", str(missing), "--out",
                           str(tmp_path / "c")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "does not exist" in lines[0]


@pytest.mark.parametrize("argv, needle", [
    (["--out", "X"], "--input"),
    (["--input", "IN", "--out", "X", "--geometry", "nosuch"], "nosuch"),
    (["--input", "IN", "--out", "X", "--dataset", "bogus"], "bogus"),
])
def test_cli_bad_arguments_exit_2(tmp_path, capsys, argv, needle):
    (tmp_path / "IN").mkdir()
    argv = [str(tmp_path / a) if a in ("IN", "X") else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        code = main(argv)
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_cli_runs_and_prints_summary(synthetic_inputs, tmp_path, capsys):
    assert main(["--input", str(synthetic_inputs), "--out", str(tmp_path / "c"), "--size", str(SIZE),
                 "--no-progress", "--test-groups", "phantom"]) == 0
    out = capsys.readouterr().out
    assert "prepared 1 case(s)" in out and "test 1" in out
    shutil.rmtree(tmp_path / "c")
