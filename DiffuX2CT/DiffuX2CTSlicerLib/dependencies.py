"""Which Python packages the reconstruction worker needs, which are missing, and installing them.

Inside Slicer, PyTorch is installed through the PyTorch extension (``PyTorchUtils``), which picks
the build that fits the computer's GPU driver; the other packages are installed with
``slicer.util.pip_install``. PyTorch goes first: ``monai`` and ``diffusers`` depend on torch, and
pip would otherwise pull a default (often CUDA) torch build of its own choosing.

Detection reads installed distributions' metadata (:mod:`importlib.metadata`) and never imports
the packages themselves, so checking is instant and cannot leave a half-imported torch behind.
The install functions take the Slicer objects as arguments (``PyTorchUtilsLogic()`` and
``slicer.util.pip_install``) so that they run, and are tested, without Slicer.

Keep :data:`MIN_TORCH_VERSION` and :data:`REQUIREMENTS` in step with ``pyproject.toml``
(a test compares them).
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from DiffuX2CTLib.errors import DiffuX2CTError

#: ``pyproject.toml``: ``torch>=2.2``.
MIN_TORCH_VERSION = "2.2"
TORCH_DISTRIBUTION = "torch"
#: The ``torchVersionRequirement`` handed to PyTorchUtils.
TORCH_VERSION_REQUIREMENT = f">={MIN_TORCH_VERSION}"

#: ``(version_of)``: installed version of a distribution, or ``None`` when it is not installed.
VersionLookup = Callable[[str], "str | None"]


class DependencyError(DiffuX2CTError):
    """Installing a dependency did not give a usable package (one line for the GUI)."""


@dataclass(frozen=True)
class Requirement:
    """A distribution the worker needs and its minimum version.

    Attributes:
        name: the distribution name as pip knows it (``SimpleITK``, ``pillow`` ...).
        minimum: the lowest supported version (``""``: any).
        module: the name it is imported as (for messages; never imported here).
    """

    name: str
    minimum: str = ""
    module: str = ""

    @property
    def pip(self) -> str:
        """The pip requirement string, e.g. ``"monai>=1.4"``."""
        return f"{self.name}>={self.minimum}" if self.minimum else self.name

    def __str__(self) -> str:
        return self.pip


#: Everything the worker needs besides torch (``pyproject.toml`` ``[project] dependencies``).
REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("numpy", "1.24", "numpy"),
    Requirement("SimpleITK", "2.3", "SimpleITK"),
    Requirement("pydicom", "2.4", "pydicom"),
    Requirement("monai", "1.4", "monai"),
    Requirement("diffusers", "0.30", "diffusers"),
    Requirement("safetensors", "0.4", "safetensors"),
    Requirement("pillow", "10", "PIL"),
    Requirement("tifffile", "2023.1", "tifffile"),
    Requirement("tqdm", "4.60", "tqdm"),
    Requirement("scipy", "1.10", "scipy"),
)


# --- versions -------------------------------------------------------------------------------------------
def installed_version(name: str) -> str | None:
    """Installed version of distribution ``name`` from its metadata, or ``None`` (nothing is imported)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - a broken installation's metadata counts as not installed
        return None


def _release_tuple(version: str) -> tuple[int, ...]:
    """``"2.13.0+cpu"`` -> ``(2, 13, 0)``; leading numeric release part only (fallback comparison)."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    if not match:
        return ()
    parts = [int(p) for p in match.group(1).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()  # 2.2.0 == 2.2
    return tuple(parts)


def version_at_least(installed: str | None, minimum: str) -> bool:
    """True when ``installed`` >= ``minimum`` (PEP 440 via ``packaging`` when available, else a
    numeric tuple comparison of the release part). ``None`` (not installed) is never enough;
    an empty ``minimum`` accepts any installed version."""
    if installed is None:
        return False
    if not minimum:
        return True
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # pragma: no cover - packaging ships with pip/setuptools almost everywhere
        pass
    else:
        try:
            v = Version(installed)
            # a pre-release or dev build of the minimum release itself (2.2.0a0, 2.2.0.dev) counts as it
            return Version(v.base_version) >= Version(minimum)
        except InvalidVersion:
            pass
    have, need = _release_tuple(installed), _release_tuple(minimum)
    return bool(have) and have >= need


# --- what is missing --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TorchStatus:
    """PyTorch as installed: its version (``None`` when absent) and whether it is recent enough."""

    version: str | None
    minimum: str = MIN_TORCH_VERSION

    @property
    def installed(self) -> bool:
        return self.version is not None

    @property
    def ok(self) -> bool:
        return version_at_least(self.version, self.minimum)


def torch_status(version_of: VersionLookup | None = None) -> TorchStatus:
    """The installed PyTorch version and whether it meets :data:`MIN_TORCH_VERSION` (torch is not imported)."""
    return TorchStatus(version=(version_of or installed_version)(TORCH_DISTRIBUTION))


def missing_packages(version_of: VersionLookup | None = None,
                     requirements: Sequence[Requirement] = REQUIREMENTS) -> list[Requirement]:
    """The requirements (other than torch) that are not installed or too old, in :data:`REQUIREMENTS` order."""
    lookup = version_of or installed_version
    return [r for r in requirements if not version_at_least(lookup(r.name), r.minimum)]


def describe_missing(version_of: VersionLookup | None = None) -> str:
    """One message for the GUI naming what is missing, ending with a question; ``""`` when nothing is.

    E.g. ``"DiffuX2CT needs PyTorch >= 2.2 and these Python packages: monai>=1.4, diffusers>=0.30.
    Install them now?"``.
    """
    torch = torch_status(version_of)
    missing = missing_packages(version_of)
    parts: list[str] = []
    if not torch.ok:
        found = "" if torch.version is None else f" (found {torch.version})"
        parts.append(f"PyTorch >= {MIN_TORCH_VERSION}{found}")
    if missing:
        lookup = version_of or installed_version
        items = []
        for r in missing:
            have = lookup(r.name)
            items.append(r.pip + ("" if have is None else f" (found {have})"))
        noun = "this Python package" if len(missing) == 1 else "these Python packages"
        parts.append(f"{noun}: {', '.join(items)}")
    if not parts:
        return ""
    what = " and ".join(parts)
    question = "Install it now?" if len(missing) + (not torch.ok) == 1 else "Install them now?"
    note = (" PyTorch is installed by the PyTorch extension, which picks the build for this computer's GPU."
            if not torch.ok else "")
    return f"DiffuX2CT needs {what}.{note} {question}"


# --- installing -----------------------------------------------------------------------------------------
def install_torch(pytorch_utils_logic: Any, ask_confirmation: bool = True,
                  version_of: VersionLookup | None = None) -> bool:
    """Make sure PyTorch >= :data:`MIN_TORCH_VERSION` is installed, through the PyTorch extension.

    ``pytorch_utils_logic`` is ``PyTorchUtils.PyTorchUtilsLogic()`` inside Slicer (tests pass a
    fake). When the installed torch is recent enough and ``logic.torchInstalled()`` confirms it
    imports, nothing is installed. Otherwise ``logic.installTorch(askConfirmation=...,
    torchVersionRequirement=">=2.2")`` is called.

    Returns True when a suitable torch is available, False when the user declined the installation.

    Raises:
        DependencyError: the installation ran but the torch it gives is older than the minimum
            (an older torch was already imported in this process: restart Slicer and try again).
    """
    status = torch_status(version_of)
    if status.ok and pytorch_utils_logic.torchInstalled():
        return True
    torch = pytorch_utils_logic.installTorch(askConfirmation=ask_confirmation,
                                             torchVersionRequirement=TORCH_VERSION_REQUIREMENT)
    if torch is None:
        return False
    version = getattr(torch, "__version__", None)
    if version is not None and not version_at_least(str(version), MIN_TORCH_VERSION):
        raise DependencyError(f"PyTorch {version} is loaded but DiffuX2CT needs PyTorch >= {MIN_TORCH_VERSION}; "
                              "restart Slicer and try again")
    return True


def install_packages(requirements: Iterable[Requirement | str],
                     pip_install: Callable[[list[str]], Any]) -> list[str]:
    """Install the given requirements with ``pip_install`` (``slicer.util.pip_install``) in one call.

    The requirements are passed as a list of pip requirement strings (``["monai>=1.4", ...]``),
    which ``slicer.util.pip_install`` hands to pip as separate arguments (no shell quoting of
    ``>=``). Nothing is called when the list is empty. Returns the strings that were installed.
    Install torch first (:func:`install_torch`): these packages would otherwise pull their own torch.
    """
    args = [r.pip if isinstance(r, Requirement) else str(r).strip() for r in requirements]
    args = [a for a in args if a]
    if args:
        pip_install(args)
    return args


def install_missing(pytorch_utils_logic: Any, pip_install: Callable[[list[str]], Any],
                    ask_confirmation: bool = True, version_of: VersionLookup | None = None) -> bool:
    """Install everything missing: torch through the PyTorch extension first, then the other packages.

    Returns False (and installs nothing else) when the user declined the PyTorch installation.
    """
    if not torch_status(version_of).ok:
        if not install_torch(pytorch_utils_logic, ask_confirmation=ask_confirmation, version_of=version_of):
            return False
    install_packages(missing_packages(version_of), pip_install)
    return True


__all__ = [
    "DependencyError", "MIN_TORCH_VERSION", "REQUIREMENTS", "Requirement", "TORCH_VERSION_REQUIREMENT", "TorchStatus",
    "describe_missing", "install_missing", "install_packages", "install_torch", "installed_version",
    "missing_packages", "torch_status", "version_at_least",
]
