"""The ExtensionsIndex catalog entry ``DiffuX2CT.json`` and the submission rules that a test can check.

The entry is validated against Slicer's catalog-entry schema in ``../shared/slicer`` (skipped when
that folder is absent, e.g. a fresh clone). The rules come from the ExtensionsIndex pull-request
checklist (see ``../shared/slicer/README.md``): the name does not start with "Slicer" (the
repository's does), ``project()`` equals the entry's file name, the icon and screenshot URLs are
set on one line each and point at images, PyTorch is declared both as build dependency and as
``EXTENSION_DEPENDS``, and there is a LICENSE at the root.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED_SLICER = ROOT.parent / "shared" / "slicer"
SCHEMA = SHARED_SLICER / "slicer-extension-catalog-entry-schema-v1.0.1.json"
CMAKELISTS = ROOT / "CMakeLists.txt"
MODULE_ICON = ROOT / "DiffuX2CT" / "Resources" / "Icons" / "DiffuX2CT.png"

METADATA = ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
            "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def project_name() -> str:
    match = re.search(r"^\s*project\(\s*([A-Za-z0-9_]+)", CMAKELISTS.read_text(), re.MULTILINE)
    assert match, f"no project() in {CMAKELISTS}"
    return match.group(1)


def metadata() -> dict[str, str]:
    """The EXTENSION_* values of the top-level CMakeLists.txt; each must be set once, on one line."""
    text = CMAKELISTS.read_text()
    values = {}
    for name in METADATA:
        starts = [line for line in text.splitlines() if re.match(rf"^\s*set\(\s*{name}\b", line)]
        assert len(starts) == 1, f"{name} must be set exactly once in CMakeLists.txt, found {len(starts)}"
        line = starts[0]
        match = re.match(rf'^\s*set\(\s*{name}\s+("[^"]*"|[^\s")]+)\s*\)\s*(#.*)?$', line)
        assert match, f"{name} must be set on one line as set({name} VALUE): {line!r}"
        values[name] = match.group(1).strip('"')
    return values


def entry_path() -> Path:
    return ROOT / f"{project_name()}.json"


def entry() -> dict:
    path = entry_path()
    assert path.is_file(), f"catalog entry {path.name} (named after project()) is missing"
    return json.loads(path.read_text(encoding="utf-8"))


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; AssertionError if the file is not a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR", f"{path} is not a PNG file"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def raw_prefix() -> str:
    """``https://raw.githubusercontent.com/OWNER/REPO/REVISION/`` of the catalog entry's repository."""
    e = entry()
    owner_repo = urlparse(e["scm_url"]).path.strip("/").removesuffix(".git")
    return f"https://raw.githubusercontent.com/{owner_repo}/{e.get('scm_revision', 'main')}/"


def repo_file(url: str) -> Path:
    prefix = raw_prefix()
    assert url.startswith(prefix), f"{url} is not a file of the extension's repository ({prefix}...)"
    return ROOT / url[len(prefix):]


# --- the entry itself ----------------------------------------------------------------------------------
def test_entry_validates_against_slicer_schema():
    if not SCHEMA.is_file():
        pytest.skip(f"Slicer's catalog-entry schema {SCHEMA} (../shared/slicer) is absent")
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    e = entry()
    errors = [f"{'/'.join(map(str, err.path)) or '(top)'}: {err.message}"
              for err in validator_cls(schema).iter_errors(e)]
    assert not errors, "catalog entry does not validate:\n" + "\n".join(errors)
    assert e["$schema"] == schema["$id"], "$schema must name the schema version validated against"


def test_entry_file_is_named_after_project():
    assert entry_path().name == "DiffuX2CT.json"
    assert entry_path().is_file(), f"{entry_path().name} must sit at the repository root"


def test_names():
    name = project_name()
    assert not name.lower().startswith("slicer"), f"extension name {name!r} must not start with 'Slicer'"
    repo = urlparse(entry()["scm_url"]).path.strip("/").removesuffix(".git").split("/")[-1]
    assert repo == f"Slicer{name}", f"repository {repo!r} should be named Slicer{name}"


def test_entry_matches_cmake_metadata():
    e, meta = entry(), metadata()
    assert e["scm_url"] == "https://github.com/DiffuX2CT/SlicerDiffuX2CT"
    assert e["category"] == meta["EXTENSION_CATEGORY"] == "Reconstruction"
    assert meta["EXTENSION_HOMEPAGE"] == e["scm_url"]
    assert e.get("scm_type", "git") == "git"
    for key in ("EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION"):
        assert meta[key].strip(), f"{key} is empty"


def test_pytorch_dependency_declared_twice():
    e, meta = entry(), metadata()
    assert e.get("build_dependencies") == ["PyTorch"]
    assert re.split(r"[\s;]+", meta["EXTENSION_DEPENDS"].strip()) == ["PyTorch"], "EXTENSION_DEPENDS PyTorch"


def test_add_subdirectory_is_unconditional():
    lines = [line.strip() for line in CMAKELISTS.read_text().splitlines()]
    assert "add_subdirectory(DiffuX2CT)" in lines
    text = CMAKELISTS.read_text()
    before = text[: text.index("add_subdirectory(DiffuX2CT)")]
    assert before.count("if(") == before.count("endif("), "add_subdirectory(DiffuX2CT) must not be inside an if()"


def test_license_at_root():
    license_file = ROOT / "LICENSE"
    assert license_file.is_file(), "a LICENSE file is required at the repository root"
    text = license_file.read_text(encoding="utf-8")
    assert "Apache License" in text or "MIT License" in text, "MIT or Apache-2.0 is recommended"


# --- images ---------------------------------------------------------------------------------------------
def test_icon_url_is_the_128px_module_icon():
    icon = repo_file(metadata()["EXTENSION_ICONURL"])
    assert icon == MODULE_ICON, f"EXTENSION_ICONURL points at {icon}, not the module icon {MODULE_ICON}"
    assert icon.is_file(), f"{icon} is missing (python Resources/Scripts/make_icon.py draws it)"
    assert png_size(icon) == (128, 128)


def test_icon_is_what_make_icon_draws():
    np = pytest.importorskip("numpy")
    image_mod = pytest.importorskip("PIL.Image")
    spec = importlib.util.spec_from_file_location("make_icon", ROOT / "Resources" / "Scripts" / "make_icon.py")
    make_icon = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_icon)
    drawn = np.asarray(make_icon.draw_icon().convert("RGBA"), dtype=float)
    with image_mod.open(MODULE_ICON) as im:
        stored = np.asarray(im.convert("RGBA"), dtype=float)
    assert drawn.shape == stored.shape == (128, 128, 4)
    assert np.abs(drawn - stored).mean() < 1.0, "the icon differs from Resources/Scripts/make_icon.py; rerun it"


def test_screenshot_urls():
    urls = metadata()["EXTENSION_SCREENSHOTURLS"].split()
    assert urls, "at least one screenshot is required"
    files = [repo_file(url) for url in urls]
    for url in urls:
        assert url.lower().endswith((".png", ".jpg", ".jpeg", ".gif")), f"{url} is not an image URL"
    missing = [str(f.relative_to(ROOT)) for f in files if not f.is_file()]
    if missing:
        pytest.skip(f"screenshot not rendered yet: {', '.join(missing)} (needed before submitting to the index)")
    for f in files:
        if f.suffix.lower() == ".png":
            width, height = png_size(f)
            assert width >= 128 and height >= 128, f"{f} is {width}x{height}"
