"""The Slicer module's model catalogue: registry listing, downloads into the per-user cache
(served by a local HTTP server), checksum refusals, cancel, imported checkpoints, cache deletion."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from DiffuX2CTLib.errors import CancelledError, CheckpointError, InputError
from DiffuX2CTLib.io.files import sha256_file
from DiffuX2CTLib.registry import (
    GeometryRef, Metrics, ModelEntry, ModelRegistry, Resolution, TrainingData, default_registry_path, load_registry,
)
from DiffuX2CTSlicerLib import model_catalog
from DiffuX2CTSlicerLib.model_catalog import ModelCatalog, default_model_cache_dir, sidecar_url


# --- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real (untrained) tiny checkpoint NAME.safetensors + NAME.json at 16^3."""
    torch = pytest.importorskip("torch")
    from DiffuX2CTLib.checkpoint import CheckpointInfo, save_checkpoint
    from DiffuX2CTLib.diffusion.config import DiffusionConfig
    from DiffuX2CTLib.geometry import BiplanarGeometry
    from DiffuX2CTLib.network import DiffuX2CTNet, NetworkConfig

    root = tmp_path_factory.mktemp("tiny-checkpoint")
    geometry = BiplanarGeometry.preset("x2ct", volume_size=16, xray_size=16)
    config = NetworkConfig.tiny()
    torch.manual_seed(0)
    info = CheckpointInfo(network=config, diffusion=DiffusionConfig(), geometry=geometry, trained=True,
                          training={"datasets": ["phantom"], "data_description": "synthetic phantoms",
                                    "export": {"model_version": "0.3", "metrics": {
                                        "values": {"psnr_db": 21.5}, "split": "test", "num_cases": 1,
                                        "cases": ["p1"], "sampler": "ddim", "steps": 10}}})
    weights, _ = save_checkpoint(root / "Tiny Model.safetensors", DiffuX2CTNet(config, geometry).state_dict(), info)
    return weights


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("DIFFUX2CT_CACHE", str(path))
    return path


class _Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    s = _Server(root)
    yield s
    s.close()


def entry_for(weights: Path, model_id: str = "tiny-16", **changes) -> ModelEntry:
    from DiffuX2CTLib.checkpoint import read_checkpoint_info

    info = read_checkpoint_info(weights)
    fields = dict(
        id=model_id, name="Tiny test model", version="2", description="A tiny untrained test model.",
        license="Apache-2.0", intended_use="tests only",
        geometry=GeometryRef(preset=info.geometry.name, hash=info.geometry.hash),
        resolution=Resolution(volume_size=16, xray_size=16, voxel_mm=20.0),
        training_data=TrainingData(description="nothing", datasets=("phantom",)),
        metrics=Metrics(values={"psnr_db": 10.0}, split="test", num_cases=1, cases=("x",), sampler="ddim", steps=3),
        sha256=sha256_file(weights), json_sha256=sha256_file(weights.with_suffix(".json")),
        size_bytes=weights.stat().st_size, created="2026-01-02T03:04:05+00:00",
    )
    fields.update(changes)
    return ModelEntry(**fields)


def serve_and_register(tmp_path: Path, server: _Server, weights: Path, served_weights: bytes | None = None,
                       served_json: bytes | None = None) -> Path:
    """Serve the checkpoint at ``<server>/models/tiny.safetensors`` (+ .json); write a registry with
    that url entry (recording the true checksums) and a shipped file entry as default; return its path."""
    folder = server.root / "models"
    folder.mkdir(exist_ok=True)
    (folder / "tiny.safetensors").write_bytes(weights.read_bytes() if served_weights is None else served_weights)
    (folder / "tiny.json").write_bytes(weights.with_suffix(".json").read_bytes() if served_json is None
                                       else served_json)
    reg_dir = tmp_path / "registry"
    (reg_dir / "Models").mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):
        (reg_dir / "Models" / f"shipped{suffix}").write_bytes(weights.with_suffix(suffix).read_bytes())
    registry = ModelRegistry(models=[
        entry_for(weights, "tiny-url", url=f"{server.url}/models/tiny.safetensors"),
        entry_for(weights, "tiny-shipped", file="Models/shipped.safetensors"),
    ], default="tiny-shipped")
    return registry.save(reg_dir / "Models.json")


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


# --- listing --------------------------------------------------------------------------------------------
def test_lists_the_shipped_registry_with_its_default_first(cache):
    catalog = ModelCatalog()
    assert catalog.registry_path == default_registry_path()
    assert catalog.cache_dir == cache / "models" == default_model_cache_dir()
    entries = catalog.entries()
    registry = load_registry(default_registry_path())
    assert [e.id for e in entries if e.source == "registry"][0] == registry.default == "diffux2ct-demo-clinical-32"
    demo = entries[0]
    assert demo.is_default and demo.available and demo.source == "registry" and not demo.is_download
    assert catalog.default_entry() == demo
    assert "[default]" in demo.label and demo.display_name.endswith(f"(version {registry.get(demo.entry.id).version})")
    assert demo.license == "Apache-2.0" and demo.geometry_preset == "clinical"
    assert demo.resolution_text.startswith("32^3 voxels of 10 mm from 32 x 32")
    assert "CRLM-CT-1004" in demo.training_data_text
    shipped = registry.get(registry.default)
    assert demo.metrics["ssim3d"] == pytest.approx(shipped.metrics.values["ssim3d"])
    tip = demo.tooltip()
    for text in ("Licence: Apache-2.0", "Geometry: clinical (hash 653281f32f6f6d38)",
                 f"psnr_db {shipped.metrics.values['psnr_db']:.2f}",
                 "test split, 4 cases", demo.sha256, "shipped with the extension", "not for clinical use"):
        assert text in tip, text
    assert demo.to_dict()["file"] == "Models/diffux2ct-demo-clinical-32.safetensors"
    # the shipped weights verify against their SHA-256, and nothing was written to the cache
    path = catalog.path_for(demo.id)
    assert path == default_registry_path().parent / demo.file and path.is_file()
    assert files_under(cache) == []


def test_url_entries_are_listed_without_touching_the_network(tmp_path, cache, server, tiny_checkpoint):
    registry_path = serve_and_register(tmp_path, server, tiny_checkpoint)
    catalog = ModelCatalog(registry_path)
    entries = catalog.entries()
    assert [e.id for e in entries] == ["tiny-shipped", "tiny-url"]  # the default first
    url_entry = entries[1]
    assert url_entry.is_download and not url_entry.available and not url_entry.is_default
    assert "download" in url_entry.label and "not downloaded yet" in url_entry.tooltip()
    assert url_entry.weights_path == cache / "models" / url_entry.sha256[:16] / "tiny.safetensors"
    assert server.requests == [] and files_under(cache) == []
    assert sidecar_url("https://h/x/m.safetensors") == "https://h/x/m.json"


# --- downloads ------------------------------------------------------------------------------------------
def test_download_verifies_and_caches(tmp_path, cache, server, tiny_checkpoint):
    registry_path = serve_and_register(tmp_path, server, tiny_checkpoint)
    catalog = ModelCatalog(registry_path)
    calls: list[tuple[int, int]] = []
    path = catalog.path_for("tiny-url", progress=lambda done, total: calls.append((done, total)))
    assert path.read_bytes() == tiny_checkpoint.read_bytes()
    assert path.with_suffix(".json").read_bytes() == tiny_checkpoint.with_suffix(".json").read_bytes()
    assert server.requests == ["/models/tiny.json", "/models/tiny.safetensors"]
    total = tiny_checkpoint.stat().st_size + tiny_checkpoint.with_suffix(".json").stat().st_size
    assert calls[-1] == (total, total)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:])) and all(d <= t for d, t in calls)
    assert files_under(cache) == [path.with_suffix(".json"), path]  # no temporary files left
    assert catalog.get("tiny-url").available
    # used again: checked, not downloaded again; it also verifies with the registry's own verify()
    assert ModelCatalog(registry_path).path_for("tiny-url") == path
    assert len(server.requests) == 2
    from DiffuX2CTLib.registry import verify

    assert verify(catalog.get("tiny-url").entry, registry_path) == path


def test_corrupted_or_missing_download_is_refused_and_leaves_nothing(tmp_path, cache, server, tiny_checkpoint):
    data = bytearray(tiny_checkpoint.read_bytes())
    data[-5] ^= 0xFF
    registry_path = serve_and_register(tmp_path, server, tiny_checkpoint, served_weights=bytes(data))
    catalog = ModelCatalog(registry_path)
    with pytest.raises(CheckpointError, match=r"tiny\.safetensors: downloaded file has SHA-256 .* nothing was saved"):
        catalog.path_for("tiny-url")
    assert files_under(cache) == [] and not catalog.get("tiny-url").available
    # a wrong description is refused too, even when the weights are right
    serve_and_register(tmp_path, server, tiny_checkpoint, served_json=b'{"format": "other"}')
    with pytest.raises(CheckpointError, match=r"tiny\.json: downloaded file has SHA-256"):
        catalog.path_for("tiny-url")
    assert files_under(cache) == []
    # a truncated file (the server announces the wrong size) and a missing file
    serve_and_register(tmp_path, server, tiny_checkpoint, served_weights=bytes(data[:100]))
    with pytest.raises(CheckpointError, match="the server offers 100 bytes"):
        catalog.path_for("tiny-url")
    (server.root / "models" / "tiny.safetensors").unlink()
    with pytest.raises(InputError, match=r"tiny\.safetensors: download of model 'tiny-url' failed \(HTTP 404"):
        catalog.path_for("tiny-url")
    assert files_under(cache) == []


def test_cancel_mid_download_leaves_nothing(tmp_path, cache, server, tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(model_catalog, "_CHUNK", 4096)
    registry_path = serve_and_register(tmp_path, server, tiny_checkpoint)
    catalog = ModelCatalog(registry_path)
    seen: list[int] = []
    json_size = tiny_checkpoint.with_suffix(".json").stat().st_size
    cancel = lambda: bool(seen) and seen[-1] > json_size + 3 * 4096  # noqa: E731  part of the weights arrived
    with pytest.raises(CancelledError, match="cancelled; nothing was saved"):
        catalog.path_for("tiny-url", progress=lambda done, total: seen.append(done), cancel=cancel)
    assert json_size < seen[-1] < json_size + tiny_checkpoint.stat().st_size
    assert files_under(cache) == []
    assert not (cache / "models" / catalog.get("tiny-url").sha256[:16]).exists()


def test_tampered_cached_file_is_refused_until_redownloaded(tmp_path, cache, server, tiny_checkpoint):
    registry_path = serve_and_register(tmp_path, server, tiny_checkpoint)
    catalog = ModelCatalog(registry_path)
    path = catalog.path_for("tiny-url")
    good = path.read_bytes()
    tampered = bytearray(good)
    tampered[-3] ^= 0x01
    path.write_bytes(bytes(tampered))
    with pytest.raises(CheckpointError) as info:
        catalog.path_for("tiny-url")
    message = str(info.value)
    assert message.startswith(str(path)) and "SHA-256" in message and "re-download" in message
    assert "\n" not in message and path.read_bytes() == bytes(tampered)  # refused, not deleted
    assert catalog.path_for("tiny-url", redownload=True) == path and path.read_bytes() == good
    # a modified description is refused the same way
    path.with_suffix(".json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"tiny\.json: cached file of model 'tiny-url' has SHA-256"):
        catalog.path_for("tiny-url")
    catalog.path_for("tiny-url", redownload=True)
    assert files_under(cache) == [path.with_suffix(".json"), path]


# --- imported checkpoints -------------------------------------------------------------------------------
def test_import_checkpoint(cache, tiny_checkpoint):
    catalog = ModelCatalog()
    imported = catalog.import_checkpoint(tiny_checkpoint)
    assert imported.source == "imported" and imported.available and not imported.is_default
    assert imported.id == "imported-tiny-model" and imported.entry.name == "Tiny Model"
    assert imported.entry.version == "0.3" and imported.metrics == {"psnr_db": 21.5}
    assert imported.geometry_preset == "x2ct" and imported.resolution_text.startswith("16^3")
    assert imported.training_data_text == "synthetic phantoms. Datasets: phantom."
    assert imported.weights_path == cache / "models" / "imported" / "imported-tiny-model.safetensors"
    assert catalog.path_for(imported) == imported.weights_path
    assert imported.weights_path.read_bytes() == tiny_checkpoint.read_bytes()
    assert "[imported]" in imported.label and "imported by you" in imported.tooltip()
    # recorded in the user catalogue (a model registry), listed again by a new catalogue
    assert load_registry(cache / "models" / "imported.json").ids() == ["imported-tiny-model"]
    again = ModelCatalog()
    assert again.ids()[0] == "diffux2ct-demo-clinical-32" and again.ids()[-1] == "imported-tiny-model"
    # importing the same weights again (from either file) is a no-op; another checkpoint gets its own id
    assert catalog.import_checkpoint(tiny_checkpoint.with_suffix(".json")).id == "imported-tiny-model"
    other = tiny_checkpoint.parent / "other" / "Tiny Model.safetensors"
    other.parent.mkdir(exist_ok=True)
    data = bytearray(tiny_checkpoint.read_bytes())
    data[-1] ^= 0x01  # changes the last tensor value, not the structure
    other.write_bytes(bytes(data))
    description = json.loads(tiny_checkpoint.with_suffix(".json").read_text())
    description["weights_sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    from DiffuX2CTLib.checkpoint import checkpoint_digest

    description["digest"] = checkpoint_digest(description)  # the digest covers weights_sha256
    other.with_suffix(".json").write_text(json.dumps(description))
    second = catalog.import_checkpoint(other)
    assert second.id.startswith("imported-tiny-model-") and second.id != imported.id
    assert [e.id for e in ModelCatalog().entries() if e.source == "imported"] == [imported.id, second.id]
    assert [p.name for p in (cache / "models").rglob(".*")] == []  # no temporary files
    # a tampered imported copy is refused with the file's name
    imported.weights_path.write_bytes(b"x" * imported.entry.size_bytes)
    with pytest.raises(CheckpointError,
                       match=r"imported-tiny-model\.safetensors: SHA-256 .*import the checkpoint again"):
        catalog.path_for(imported.id)


def _copy_pair(src: Path, dest_dir: Path, name: str = "bad") -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):
        (dest_dir / f"{name}{suffix}").write_bytes(src.with_suffix(suffix).read_bytes())
    return dest_dir / f"{name}.safetensors"


def test_import_refuses_bad_files_with_one_line(tmp_path, cache, tiny_checkpoint):
    catalog = ModelCatalog()

    def refused(path: Path, pattern: str) -> None:
        with pytest.raises(InputError, match=pattern) as info:
            catalog.import_checkpoint(path)
        assert "\n" not in str(info.value)
        assert not (cache / "models" / "imported").exists() or files_under(cache / "models" / "imported") == []
        assert not (cache / "models" / "imported.json").exists()

    pt = tmp_path / "model.pt"
    pt.write_bytes(b"\x80\x02}q\x00.")
    refused(pt, r"model\.pt: looks like a pickled PyTorch file")
    bad = _copy_pair(tiny_checkpoint, tmp_path / "pickle")
    bad.write_bytes(b"\x80\x02}q\x00." * 10)
    refused(bad, r"bad\.safetensors: is a zip/pickle file")
    bad = _copy_pair(tiny_checkpoint, tmp_path / "truncated")
    bad.write_bytes(tiny_checkpoint.read_bytes()[:-100])
    refused(bad, r"bad\.safetensors: tensor data ends at byte \d+, the file holds \d+ data bytes")
    bad = _copy_pair(tiny_checkpoint, tmp_path / "flipped")
    data = bytearray(tiny_checkpoint.read_bytes())
    data[-1] ^= 0x01
    bad.write_bytes(bytes(data))
    refused(bad, r"bad\.safetensors: SHA-256 .* does not match .* recorded in bad\.json")
    bad = _copy_pair(tiny_checkpoint, tmp_path / "nojson")
    bad.with_suffix(".json").unlink()
    refused(bad, r"bad\.json: checkpoint file not found")
    bad = _copy_pair(tiny_checkpoint, tmp_path / "badjson")
    bad.with_suffix(".json").write_text("{not json")
    refused(bad, r"bad\.json: checkpoint description is not valid JSON")
    bad = _copy_pair(tiny_checkpoint, tmp_path / "otherjson")
    bad.with_suffix(".json").write_text(json.dumps({"format": "something-else"}))
    refused(bad, r"bad\.json: not a DiffuX2CT checkpoint description")
    refused(tmp_path / "absent.safetensors", r"absent\.safetensors: checkpoint file not found")  # the name given


def test_broken_user_catalogue_is_reported_not_fatal(cache):
    (cache / "models").mkdir(parents=True)
    (cache / "models" / "imported.json").write_text("{broken")
    catalog = ModelCatalog()
    assert catalog.ids() == load_registry(default_registry_path()).ids()
    assert len(catalog.warnings) == 1 and "imported.json: not valid JSON" in catalog.warnings[0]


# --- cache housekeeping ---------------------------------------------------------------------------------
def test_delete_downloaded_models(tmp_path, cache, server, tiny_checkpoint):
    registry_path = serve_and_register(tmp_path, server, tiny_checkpoint)
    catalog = ModelCatalog(registry_path)
    assert catalog.downloaded_size() == 0 and catalog.delete_downloaded_models() == (0, 0)
    catalog.path_for("tiny-url")
    catalog.import_checkpoint(tiny_checkpoint)
    unrelated = cache / "models" / "notes.txt"  # not ours: left alone
    unrelated.write_text("keep")
    size = catalog.downloaded_size()
    pair = tiny_checkpoint.stat().st_size + tiny_checkpoint.with_suffix(".json").stat().st_size
    assert size > 2 * pair  # two models plus imported.json
    assert catalog.delete_downloaded_models() == (2, size)
    assert files_under(cache) == [unrelated] and catalog.downloaded_size() == 0
    assert [e.id for e in catalog.entries()] == ["tiny-shipped", "tiny-url"]
    assert not catalog.get("tiny-url").available
    # the registry's shipped files are never touched
    assert catalog.path_for("tiny-shipped") == registry_path.parent / "Models" / "shipped.safetensors"


def test_shipped_files_inside_the_cache_are_never_deleted(tmp_path, monkeypatch, tiny_checkpoint):
    """Even a registry kept inside the cache folder keeps its files."""
    cache = tmp_path / "cache"
    reg_dir = cache / "0123456789abcdef"
    (reg_dir / "Models").mkdir(parents=True)
    for suffix in (".safetensors", ".json"):
        (reg_dir / "Models" / f"shipped{suffix}").write_bytes(tiny_checkpoint.with_suffix(suffix).read_bytes())
    registry_path = ModelRegistry(models=[entry_for(tiny_checkpoint, file="Models/shipped.safetensors")],
                                  default="tiny-16").save(reg_dir / "Models.json")
    catalog = ModelCatalog(registry_path, cache_dir=cache)
    assert catalog.delete_downloaded_models() == (0, 0)
    assert catalog.path_for("tiny-16").is_file()


def test_catalogue_and_import_do_not_import_torch(cache, tiny_checkpoint):
    """Listing, verifying and importing run in Slicer's process without loading torch."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    code = ("import sys; from DiffuX2CTSlicerLib.model_catalog import ModelCatalog; "
            "from DiffuX2CTSlicerLib import dependencies; c = ModelCatalog(); c.entries(); "
            f"c.import_checkpoint({str(tiny_checkpoint)!r}); c.path_for(c.ids()[0]); "
            "assert 'torch' not in sys.modules and 'safetensors' not in sys.modules, 'torch imported'")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), str(repo / "DiffuX2CT")]))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
