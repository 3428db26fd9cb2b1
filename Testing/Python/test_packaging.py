"""The extension's CMake packaging: configure, build and install against a Slicer stand-in.

``Testing/CMake/SlicerStandIn`` imitates the few parts of Slicer's CMake package that our
CMakeLists.txt use (not Slicer itself: its header says what it imitates). The test configures the
repository with it, builds, installs into a fresh prefix and checks that the scripted-module
folder ``lib/Slicer-5.13/qt-scripted-modules`` holds the module, its resources, the Slicer-side
package, every ``.py`` of DiffuX2CTLib and the model registry with its models, and that Python
started in that folder alone imports the installed DiffuX2CTLib and finds the installed registry.
Skipped only when ``cmake`` is not on PATH.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAND_IN = ROOT / "Testing" / "CMake" / "SlicerStandIn"
SCRIPTED_DIR = Path("lib/Slicer-5.13/qt-scripted-modules")  # Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR of the stand-in

#: Module files that must exist before the extension can be packaged.
MODULE_FILES = (
    "DiffuX2CT/DiffuX2CT.py",
    "DiffuX2CT/Resources/UI/DiffuX2CT.ui",
    "DiffuX2CT/Resources/Icons/DiffuX2CT.png",
    "DiffuX2CT/DiffuX2CTSlicerLib/__init__.py",
)


def _files(base: Path, pattern: str = "*") -> set[str]:
    """Files under ``base`` matching ``pattern`` (recursively), as POSIX paths relative to ``base``;
    byte-code caches and hidden files are left out."""
    out = set()
    for p in base.rglob(pattern):
        rel = p.relative_to(base)
        if p.is_file() and not any(part == "__pycache__" or part.startswith(".") for part in rel.parts):
            out.add(rel.as_posix())
    return out


def expected_layout() -> dict[str, Path]:
    """Installed path (relative to the scripted-module folder) -> source file, from globs of the source tree."""
    module = ROOT / "DiffuX2CT"
    layout = {"DiffuX2CT.py": module / "DiffuX2CT.py"}
    layout.update({f"Resources/{p}": module / "Resources" / p for p in _files(module / "Resources")})
    layout.update({f"DiffuX2CTSlicerLib/{p}": module / "DiffuX2CTSlicerLib" / p
                   for p in _files(module / "DiffuX2CTSlicerLib", "*.py")})
    layout.update({f"DiffuX2CTLib/{p}": ROOT / "DiffuX2CTLib" / p for p in _files(ROOT / "DiffuX2CTLib", "*.py")})
    layout["Resources/Models.json"] = ROOT / "Resources" / "Models.json"
    models = ROOT / "Resources" / "Models"
    for pattern in ("*.safetensors", "*.json"):
        layout.update({f"Resources/Models/{p.name}": p for p in models.glob(pattern)})
    return layout


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    if proc.returncode != 0:
        pytest.fail(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                    f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> dict[str, Path]:
    """Configure + build + install once; the build tree and the install prefix."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not on PATH: the packaging test needs CMake (>= 3.16)")
    missing = [f for f in MODULE_FILES if not (ROOT / f).is_file()]
    if missing:
        pytest.fail("the Slicer module is incomplete, cannot package the extension; missing: " + ", ".join(missing))
    tmp = tmp_path_factory.mktemp("packaging")
    build, prefix = tmp / "build", tmp / "install"
    configure = [cmake, "-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={STAND_IN}"]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    _run(configure)
    _run([cmake, "--build", str(build)])
    _run([cmake, "--install", str(build), "--prefix", str(prefix)])
    return {"build": build, "prefix": prefix}


def _compare_tree(tree: Path, where: str) -> None:
    expected = expected_layout()
    found = _files(tree)
    missing = sorted(set(expected) - found)
    extra = sorted(found - set(expected))
    assert not missing, f"{where}: not packaged (check DiffuX2CT/CMakeLists.txt): {missing}"
    assert not extra, f"{where}: unexpected files: {extra}"
    differ = [rel for rel, src in expected.items() if not filecmp.cmp(src, tree / rel, shallow=False)]
    assert not differ, f"{where}: files differ from their source: {differ}"


def test_expected_layout_covers_the_source_tree():
    layout = expected_layout()
    assert {"DiffuX2CTLib/__init__.py", "DiffuX2CTLib/worker.py", "DiffuX2CTLib/registry.py",
            "Resources/Models.json"} <= set(layout)
    assert any(rel.startswith("DiffuX2CTLib/") and rel.count("/") >= 2 for rel in layout), "subfolders not globbed"
    assert any(rel.endswith(".safetensors") for rel in layout), "no model weights in Resources/Models"


def test_install_tree(packaged):
    prefix = packaged["prefix"]
    _compare_tree(prefix / SCRIPTED_DIR, "install tree")
    outside = sorted(p for p in _files(prefix) if not p.startswith(SCRIPTED_DIR.as_posix() + "/"))
    assert not outside, f"installed outside {SCRIPTED_DIR}: {outside}"


def test_build_tree_mirrors_install_tree(packaged):
    """In the build tree the scripted-module folder has the same files (module usable from a build)."""
    _compare_tree(packaged["build"] / SCRIPTED_DIR, "build tree")


def test_module_registers_generic_tests_and_unittest(packaged):
    summary = (packaged["build"] / "SlicerStandInSummary.txt").read_text().splitlines()
    assert "extension DiffuX2CT" in summary
    assert "scripted_module DiffuX2CT" in summary
    assert "generic_tests DiffuX2CT" in summary, "slicerMacroBuildScriptedModule without WITH_GENERIC_TESTS"
    assert "python_unittest DiffuX2CT/DiffuX2CT.py" in summary, "no slicer_add_python_unittest(SCRIPT DiffuX2CT.py)"


_CHILD = """
import json, sys
import DiffuX2CTLib, DiffuX2CTLib.worker, DiffuX2CTSlicerLib
from DiffuX2CTLib.registry import default_registry_path, load_registry, verify
path = default_registry_path()
registry = load_registry(path)
entry = registry.default_entry()
weights = None if entry is None else verify(entry, path)
print(json.dumps({"lib": DiffuX2CTLib.__file__, "worker": DiffuX2CTLib.worker.__file__,
                  "slicerlib": DiffuX2CTSlicerLib.__file__, "registry": str(path),
                  "default": None if entry is None else entry.id,
                  "weights": None if weights is None else str(weights), "sys_path": sys.path,
                  "loaded": {name: getattr(m, "__file__", None) for name, m in sorted(sys.modules.items())
                             if name.split(".")[0] in ("DiffuX2CTLib", "DiffuX2CTSlicerLib")}}))
"""


def test_installed_package_imports_and_finds_registry(packaged):
    scripted = (packaged["prefix"] / SCRIPTED_DIR).resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(scripted)
    flags = ["-B"] + (["-P"] if sys.version_info >= (3, 11) else [])  # -P: no script folder on sys.path
    proc = _run([sys.executable, *flags, "-c", _CHILD], cwd=scripted, env=env)
    info = json.loads(proc.stdout.strip().splitlines()[-1])

    assert not any(p and Path(p).resolve() == ROOT for p in info["sys_path"]), "repository on sys.path"
    for key in ("lib", "worker", "slicerlib"):
        assert Path(info[key]).resolve().is_relative_to(scripted), f"{key} imported from {info[key]}, not the install"
    # Every submodule too: a file missing from the install could otherwise be found elsewhere
    # (e.g. through an editable install's import hook pointing at the repository).
    elsewhere = {name: f for name, f in info["loaded"].items() if f and not Path(f).resolve().is_relative_to(scripted)}
    assert not elsewhere, f"modules imported from outside the install: {elsewhere}"
    assert len(info["loaded"]) > 3
    assert Path(info["worker"]).resolve() == scripted / "DiffuX2CTLib" / "worker.py"
    assert Path(info["registry"]).resolve() == scripted / "Resources" / "Models.json"
    assert info["default"] is not None, "the installed registry names no default model"
    weights = Path(info["weights"]).resolve()
    assert weights.is_file() and weights.is_relative_to(scripted / "Resources" / "Models")
    assert weights.with_suffix(".json").is_file()
