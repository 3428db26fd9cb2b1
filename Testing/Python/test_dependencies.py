"""The Slicer module's dependency checks: detection from metadata, version comparison, and the
install functions calling the injected PyTorchUtils logic / pip_install only when needed."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

from DiffuX2CTSlicerLib import dependencies as deps
from DiffuX2CTSlicerLib.dependencies import (
    MIN_TORCH_VERSION, REQUIREMENTS, DependencyError, Requirement, describe_missing, install_missing,
    install_packages, install_torch, missing_packages, torch_status, version_at_least,
)

REPO = Path(__file__).resolve().parents[2]

ALL_GOOD = {"torch": "2.13.0+cpu", "numpy": "2.1.0", "SimpleITK": "2.4.0", "pydicom": "3.0.1", "monai": "1.5.0",
            "diffusers": "0.35.1", "safetensors": "0.6.2", "pillow": "11.3.0", "tifffile": "2025.6.11",
            "tqdm": "4.67.1", "scipy": "1.15.0"}


def lookup(versions: dict[str, str | None]):
    def version_of(name: str) -> str | None:
        return versions.get(name)
    return version_of


class FakeTorch:
    def __init__(self, version: str) -> None:
        self.__version__ = version


class FakePyTorchUtilsLogic:
    """Records calls like PyTorchUtils.PyTorchUtilsLogic would receive them."""

    def __init__(self, installed: bool = False, result: object = None) -> None:
        self.installed = installed
        self.result = result
        self.calls: list[tuple[str, dict]] = []

    def torchInstalled(self) -> bool:  # noqa: N802 - Slicer's API
        self.calls.append(("torchInstalled", {}))
        return self.installed

    def installTorch(self, askConfirmation=False, forceComputationBackend=None,  # noqa: N802, N803
                     torchVersionRequirement=None):  # noqa: N803
        self.calls.append(("installTorch", {"askConfirmation": askConfirmation,
                                            "forceComputationBackend": forceComputationBackend,
                                            "torchVersionRequirement": torchVersionRequirement}))
        return self.result


def test_requirements_match_pyproject():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    parsed = {}
    for spec in declared:
        name, minimum = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", spec).groups()
        parsed[name] = minimum
    assert parsed.pop("torch") == MIN_TORCH_VERSION
    assert {r.name: r.minimum for r in REQUIREMENTS} == parsed
    assert [r.pip for r in REQUIREMENTS] == [s for s in declared if not s.startswith("torch")]
    assert deps.TORCH_VERSION_REQUIREMENT == ">=2.2"


def test_version_comparison():
    assert version_at_least("2.13.0+cpu", "2.2")
    assert version_at_least("2.2", "2.2") and version_at_least("2.2.0", "2.2")
    assert not version_at_least("2.1.2+cu121", "2.2") and not version_at_least("1.13.1", "2.2")
    assert version_at_least("2.10.0", "2.9")  # numeric, not string, comparison
    assert version_at_least("0.30.0", "0.30") and not version_at_least("0.29.9", "0.30")
    assert version_at_least("2025.6.11", "2023.1") and not version_at_least("2022.10.10", "2023.1")
    assert not version_at_least(None, "1.0") and version_at_least("0.1", "")
    assert version_at_least("2.2.0a0", "2.2")  # a pre-release of the minimum release counts as it
    assert not version_at_least("unknown", "1.0")


def test_version_comparison_without_packaging(monkeypatch):
    monkeypatch.setitem(sys.modules, "packaging.version", None)  # import fails -> tuple comparison
    assert version_at_least("2.13.0+cpu", "2.2") and not version_at_least("2.1.9", "2.2")
    assert version_at_least("2.2.0", "2.2") and version_at_least("10.0", "9.9")
    assert not version_at_least("junk", "1") and not version_at_least(None, "1")


def test_missing_detection_uses_metadata_only():
    assert missing_packages(lookup(ALL_GOOD)) == []
    versions = dict(ALL_GOOD, monai=None, diffusers="0.29.0", pillow="9.5.0")
    del versions["tqdm"]
    missing = missing_packages(lookup(versions))
    assert [r.name for r in missing] == ["monai", "diffusers", "pillow", "tqdm"]
    assert [r.pip for r in missing] == ["monai>=1.4", "diffusers>=0.30", "pillow>=10", "tqdm>=4.60"]
    assert str(missing[0]) == "monai>=1.4" and Requirement("x").pip == "x"
    # the real lookup reads this environment's metadata: the test environment has everything
    assert missing_packages() == []
    assert deps.installed_version("no-such-distribution-diffux2ct") is None


def test_torch_status():
    assert torch_status(lookup({})).version is None and not torch_status(lookup({})).ok
    old = torch_status(lookup({"torch": "2.1.0"}))
    assert old.installed and not old.ok and old.version == "2.1.0"
    assert torch_status(lookup({"torch": "2.13.0+cpu"})).ok


def test_describe_missing():
    assert describe_missing(lookup(ALL_GOOD)) == ""
    text = describe_missing(lookup(dict(ALL_GOOD, torch=None, monai=None, diffusers="0.20")))
    assert text.startswith("DiffuX2CT needs PyTorch >= 2.2 and these Python packages: monai>=1.4, "
                           "diffusers>=0.30 (found 0.20).")
    assert text.endswith("Install them now?") and "\n" not in text
    only_torch = describe_missing(lookup(dict(ALL_GOOD, torch="1.13.1")))
    assert only_torch.startswith("DiffuX2CT needs PyTorch >= 2.2 (found 1.13.1).")
    assert only_torch.endswith("Install it now?")
    one_package = describe_missing(lookup(dict(ALL_GOOD, tifffile=None)))
    assert one_package == "DiffuX2CT needs this Python package: tifffile>=2023.1. Install it now?"


def test_install_torch_calls_pytorch_utils_only_when_needed():
    # recent torch that imports: nothing installed
    logic = FakePyTorchUtilsLogic(installed=True)
    assert install_torch(logic, version_of=lookup(ALL_GOOD)) is True
    assert logic.calls == [("torchInstalled", {})]
    # missing torch: installed through the extension with the version requirement
    logic = FakePyTorchUtilsLogic(result=FakeTorch("2.13.0+cu128"))
    assert install_torch(logic, version_of=lookup({})) is True
    assert logic.calls == [("installTorch", {"askConfirmation": True, "forceComputationBackend": None,
                                             "torchVersionRequirement": ">=2.2"})]
    # too old: upgraded the same way; metadata fine but import broken: reinstalled
    for versions, installed in (({"torch": "2.0.1"}, True), (ALL_GOOD, False)):
        logic = FakePyTorchUtilsLogic(installed=installed, result=FakeTorch("2.5.0"))
        assert install_torch(logic, ask_confirmation=False, version_of=lookup(versions)) is True
        assert logic.calls[-1] == ("installTorch", {"askConfirmation": False, "forceComputationBackend": None,
                                                    "torchVersionRequirement": ">=2.2"})
    # the user declined
    logic = FakePyTorchUtilsLogic(result=None)
    assert install_torch(logic, version_of=lookup({})) is False
    # an old torch still loaded in the process
    logic = FakePyTorchUtilsLogic(result=FakeTorch("2.0.1"))
    with pytest.raises(DependencyError, match="PyTorch 2.0.1 is loaded .* restart Slicer"):
        install_torch(logic, version_of=lookup({"torch": "2.0.1"}))


def test_install_packages_calls_pip_install_once_or_not_at_all():
    calls: list[list[str]] = []
    assert install_packages([], calls.append) == [] and calls == []
    missing = missing_packages(lookup(dict(ALL_GOOD, monai=None, pillow="9.0")))
    assert install_packages(missing, calls.append) == ["monai>=1.4", "pillow>=10"]
    assert calls == [["monai>=1.4", "pillow>=10"]]
    assert install_packages(["tqdm>=4.60", " "], calls.append) == ["tqdm>=4.60"] and calls[-1] == ["tqdm>=4.60"]


def test_install_missing_installs_torch_first_and_stops_when_declined():
    order: list[str] = []

    class Logic(FakePyTorchUtilsLogic):
        def installTorch(self, **kwargs):  # noqa: N802
            order.append("torch")
            return super().installTorch(**kwargs)

    versions = dict(ALL_GOOD, torch=None, monai=None)
    assert install_missing(Logic(result=FakeTorch("2.13.0")), lambda reqs: order.append(f"pip {reqs}"),
                           version_of=lookup(versions)) is True
    assert order == ["torch", "pip ['monai>=1.4']"]
    order.clear()
    assert install_missing(Logic(result=None), lambda reqs: order.append("pip"), version_of=lookup(versions)) is False
    assert order == ["torch"]  # declined: no pip install (it would pull its own torch)
    order.clear()
    logic = Logic(installed=True)
    assert install_missing(logic, lambda reqs: order.append("pip"), version_of=lookup(ALL_GOOD)) is True
    assert order == [] and logic.calls == []
