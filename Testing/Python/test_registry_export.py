"""Model registry (DiffuX2CTLib.registry) and checkpoint export (training.export)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from DiffuX2CTLib.errors import CheckpointError, InputError
from DiffuX2CTLib.io.files import sha256_file
from DiffuX2CTLib.registry import (
    FORMAT_NAME, GeometryRef, Metrics, ModelEntry, ModelRegistry, Resolution, TrainingData, default_registry_path,
    load_registry, resolve_file, verify,
)

REPO = Path(__file__).resolve().parents[2]


def make_entry(**changes) -> ModelEntry:
    fields = dict(
        id="demo-16", name="Demo 16", version="1.0", description="A test model.", license="Apache-2.0",
        intended_use="demonstration only, not for clinical use",
        geometry=GeometryRef(preset="x2ct", hash="0123456789abcdef"),
        resolution=Resolution(volume_size=16, xray_size=16, voxel_mm=20.0),
        training_data=TrainingData(description="synthetic phantoms", datasets=("phantom",)),
        metrics=Metrics(values={"psnr": 20.5, "ssim3d": 0.5}, split="test", num_cases=2, cases=("a", "b"),
                        sampler="dpmsolver++", steps=25),
        sha256="a" * 64, json_sha256="b" * 64, size_bytes=10, created="2026-01-02T03:04:05+00:00",
        file="Models/demo-16.safetensors",
    )
    fields.update(changes)
    return ModelEntry(**fields)


def write_registry(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def registry_dict(**entry_changes) -> dict:
    entry = make_entry().to_dict()
    entry.update(entry_changes)
    return {"format": FORMAT_NAME, "format_version": 1, "default": "demo-16", "models": [entry]}


# --- registry ----------------------------------------------------------------------------------------
def test_shipped_registry_loads():
    registry = load_registry(default_registry_path())
    assert default_registry_path() == REPO / "Resources" / "Models.json"
    if registry.default is None:
        assert registry.default_entry() is None
    else:
        assert registry.default_entry().id == registry.default


def test_round_trip_and_upsert(tmp_path):
    registry = ModelRegistry()
    registry.upsert(make_entry())
    registry.upsert(make_entry(id="other", url="https://example.org/m/other.safetensors", file=None, metrics=None),
                    make_default=True)
    registry.upsert(make_entry(version="1.1"))  # replaces in place
    path = registry.save(tmp_path / "sub" / "Models.json")
    loaded = load_registry(path)
    assert loaded == registry
    assert loaded.ids() == ["demo-16", "other"]
    assert loaded.get("demo-16").version == "1.1"
    assert loaded.default_entry().url.endswith("other.safetensors")
    assert "url" not in loaded.to_dict()["models"][0] and "file" not in loaded.to_dict()["models"][1]
    assert not list(path.parent.glob(".*tmp*"))  # atomic write left no temporary file


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["models"][0].update(colour="red"), "unknown key 'colour'"),
    (lambda d: d.update(extra=1), "unknown key 'extra'"),
    (lambda d: d["models"][0].update(size_bytes="10"), "size_bytes: must be an integer, got string"),
    (lambda d: d["models"][0].update(size_bytes=True), "size_bytes: must be an integer, got boolean"),
    (lambda d: d["models"][0]["resolution"].update(voxel_mm="2"), "resolution.voxel_mm: must be a number"),
    (lambda d: d["models"][0]["metrics"]["values"].update(psnr="high"), "metrics.values: must be an object of numbers"),
    (lambda d: d["models"][0]["geometry"].pop("hash"), "geometry: missing key 'hash'"),
    (lambda d: d["models"][0].update(url="https://example.org/x.safetensors"), "exactly one of 'file' and 'url'"),
    (lambda d: d["models"][0].pop("file"), "exactly one of 'file' and 'url'"),
    (lambda d: d["models"][0].update(file="../../etc/x.safetensors"), "relative path"),
    (lambda d: d["models"][0].update(sha256="xyz"), "sha256: must be 64"),
    (lambda d: d.update(default="nope"), "'nope' is not the id of a listed model"),
    (lambda d: d.update(format_version=99), "format_version: 99 is not supported"),
    (lambda d: d.update(format="something-else"), "not a model registry"),
    (lambda d: d.update(models={}), "models: must be a list"),
    (lambda d: d["models"].append(dict(d["models"][0])), "id is listed twice"),
])
def test_strict_validation_names_file_and_key(tmp_path, mutate, expected):
    data = registry_dict()
    mutate(data)
    path = write_registry(tmp_path / "Models.json", data)
    with pytest.raises(InputError) as err:
        load_registry(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(path) + ": ")
    assert expected in message


def test_invalid_json_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_registry(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_registry(bad)


def test_entries_built_in_python_are_validated():
    with pytest.raises(InputError, match="exactly one of 'file' and 'url'"):
        make_entry(url="https://example.org/x.safetensors")
    with pytest.raises(InputError, match="size_bytes: must be an integer"):
        make_entry(size_bytes=1.5)
    with pytest.raises(InputError, match="id"):
        make_entry(id="Bad Id")


def test_verify_detects_sha_and_size_mismatch(tmp_path):
    models = tmp_path / "Models"
    models.mkdir()
    weights, desc = models / "demo-16.safetensors", models / "demo-16.json"
    weights.write_bytes(b"0123456789")
    desc.write_text("{}")
    registry_path = tmp_path / "Models.json"
    entry = make_entry(sha256=sha256_file(weights), json_sha256=sha256_file(desc), size_bytes=10)
    assert resolve_file(entry, registry_path) == weights.resolve()
    assert verify(entry, registry_path) == weights.resolve()

    weights.write_bytes(b"0123456780")  # same size, different bytes
    with pytest.raises(CheckpointError, match="SHA-256 .* does not match"):
        verify(entry, registry_path)
    weights.write_bytes(b"012345678")
    with pytest.raises(CheckpointError, match="has 9 bytes"):
        verify(entry, registry_path)
    weights.write_bytes(b"0123456789")
    desc.write_text('{"x": 1}')
    with pytest.raises(CheckpointError, match="demo-16.json: SHA-256"):
        verify(entry, registry_path)
    desc.unlink()
    with pytest.raises(CheckpointError, match="not found"):
        verify(entry, registry_path)


def test_registry_module_does_not_import_torch():
    code = "import sys, DiffuX2CTLib.registry; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --- export --------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_training_checkpoint(monkeypatch, tmp_path):
    """Replace training.state.inference_parts with a tiny random network and its description."""
    import torch

    from DiffuX2CTLib.checkpoint import CheckpointInfo
    from DiffuX2CTLib.diffusion.config import DiffusionConfig
    from DiffuX2CTLib.geometry import BiplanarGeometry
    from DiffuX2CTLib.network import DiffuX2CTNet, NetworkConfig
    from training import state

    geometry = BiplanarGeometry.preset("x2ct", volume_size=16, xray_size=16)
    config = NetworkConfig.tiny()
    torch.manual_seed(0)
    weights = DiffuX2CTNet(config, geometry).state_dict()
    calls = []

    def fake_inference_parts(path, which="best"):
        calls.append((Path(path), which))
        info = CheckpointInfo(network=config, diffusion=DiffusionConfig(), geometry=geometry, trained=True,
                              training={"name": "tiny", "objective": "diffusion", "step": 7}, weights="ema")
        return dict(weights), info

    monkeypatch.setattr(state, "inference_parts", fake_inference_parts)
    run = tmp_path / "run"
    run.mkdir()
    return run, calls, geometry


def export_args(tmp_path: Path, run: Path, *extra: str) -> list[str]:
    return ["--checkpoint", str(run), "--out", str(tmp_path / "Resources" / "Models" / "tiny.safetensors"),
            "--id", "tiny", "--name", "Tiny test model", "--model-version", "0.1", "--license", "Apache-2.0",
            "--description", "A tiny random network.", "--training-data", "nothing (random weights)",
            "--registry", str(tmp_path / "Resources" / "Models.json"), *extra]


def test_export_writes_loadable_checkpoint_and_verified_entry(tmp_path, tiny_training_checkpoint, capsys):
    from DiffuX2CTLib.checkpoint import load_checkpoint
    from training.export import main

    run, calls, geometry = tiny_training_checkpoint
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({
        "split": "test", "case_ids": ["c1", "c2"], "num_cases": 2, "sampler": "ddim", "steps": 10,
        "geometry_hash": geometry.hash, "metrics": {"psnr": {"mean": 21.5, "std": 1.0, "count": 2},
                                                     "ssim3d": {"mean": None, "std": None, "count": 0}},
    }))
    assert main(export_args(tmp_path, run, "--which", "last", "--default", "--dataset", "LIDC-IDRI",
                            "--metrics", str(summary))) == 0
    assert calls == [(run, "last")]
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["id"] == "tiny" and out["default"] == "tiny"

    registry_path = tmp_path / "Resources" / "Models.json"
    registry = load_registry(registry_path)
    entry = registry.default_entry()
    assert entry.file == "Models/tiny.safetensors" and entry.url is None
    assert entry.geometry == GeometryRef(preset="x2ct", hash=geometry.hash)
    assert entry.resolution == Resolution(volume_size=16, xray_size=16, voxel_mm=20.0)
    assert entry.training_data.datasets == ("LIDC-IDRI",)
    assert entry.metrics.values == {"psnr": 21.5} and entry.metrics.cases == ("c1", "c2")
    assert entry.metrics.sampler == "ddim" and entry.metrics.steps == 10 and entry.metrics.split == "test"
    weights = verify(entry, registry_path)
    assert entry.size_bytes == weights.stat().st_size

    loaded = load_checkpoint(weights)
    assert loaded.info.trained and loaded.info.license == "Apache-2.0"
    assert loaded.info.training["step"] == 7
    assert loaded.info.training["export"]["id"] == "tiny"
    assert loaded.info.training["export"]["metrics"]["values"] == {"psnr": 21.5}

    # re-export under the same id replaces the entry; the default stays
    assert main(export_args(tmp_path, run)) == 0
    again = load_registry(registry_path)
    assert again.ids() == ["tiny"] and again.default == "tiny" and again.get("tiny").metrics is None
    verify(again.get("tiny"), registry_path)


def test_export_url_entry(tmp_path, tiny_training_checkpoint):
    from training.export import main

    run, _, _ = tiny_training_checkpoint
    args = export_args(tmp_path, run, "--url", "https://example.org/models/tiny.safetensors")
    args[args.index("--out") + 1] = str(tmp_path / "elsewhere" / "tiny.safetensors")
    assert main(args) == 0
    entry = load_registry(tmp_path / "Resources" / "Models.json").get("tiny")
    assert entry.file is None and entry.url.endswith("/tiny.safetensors")
    assert entry.sha256 == sha256_file(tmp_path / "elsewhere" / "tiny.safetensors")


@pytest.mark.parametrize("change, expected", [
    (("--id", "Not Valid"), "id"),
    (("--out", "OUTSIDE"), "not inside the registry's folder"),
    (("--out", "x.pt"), "pickled"),
])
def test_export_errors_are_one_line_exit_2(tmp_path, tiny_training_checkpoint, capsys, change, expected):
    from training.export import main

    run, _, _ = tiny_training_checkpoint
    args = export_args(tmp_path, run)
    key, value = change
    if value == "OUTSIDE":
        value = str(tmp_path / "outside" / "tiny.safetensors")
    args[args.index(key) + 1] = value
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and expected in err
    assert not (tmp_path / "Resources" / "Models.json").exists()
    assert not (tmp_path / "outside").exists()


def test_export_refuses_metrics_of_another_geometry(tmp_path, tiny_training_checkpoint, capsys):
    from training.export import main

    run, _, _ = tiny_training_checkpoint
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"geometry_hash": "ffffffffffffffff", "metrics": {}}))
    assert main(export_args(tmp_path, run, "--metrics", str(summary))) == 2
    assert "computed for geometry ffffffffffffffff" in capsys.readouterr().err
    assert not (tmp_path / "Resources" / "Models").exists()
