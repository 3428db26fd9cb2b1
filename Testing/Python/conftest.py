"""Shared pytest fixtures: the real-data folder and small synthetic CT images."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pytest
import SimpleITK as sitk

#: ``../shared/data`` next to the repository root (real CTs; read-only, may be absent).
SHARED_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory) -> Iterator[Path]:
    """Point ``$DIFFUX2CT_CACHE`` (system matrices, example data) at a per-session temporary
    folder, so tests neither read a user's cache nor leave files in it. Subprocesses inherit it."""
    import os

    path = tmp_path_factory.mktemp("diffux2ct-cache")
    previous = os.environ.get("DIFFUX2CT_CACHE")
    os.environ["DIFFUX2CT_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("DIFFUX2CT_CACHE", None)
    else:
        os.environ["DIFFUX2CT_CACHE"] = previous


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real-data folder; skips the test when it is absent (e.g. a fresh clone)."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"real CT data folder {SHARED_DATA_DIR} (../shared/data) is absent")
    return SHARED_DATA_DIR


def make_synthetic_ct(
    size: Sequence[int] = (24, 20, 16),
    spacing: Sequence[float] = (1.5, 1.25, 2.0),
    origin: Sequence[float] = (-20.25, 10.5, -100.125),
    direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
    seed: int = 0,
) -> sitk.Image:
    """Float32 HU phantom (size/spacing in SimpleITK (i, j, k) order): air (-1024) around an
    ellipsoidal "body" of soft tissue (~40 HU, noisy) holding a bone rod (700 HU) along k."""
    w, h, d = size
    k, j, i = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    u = (i - (w - 1) / 2) / (0.4 * w)
    v = (j - (h - 1) / 2) / (0.35 * h)
    t = (k - (d - 1) / 2) / (0.45 * d)
    hu = np.full((d, h, w), -1024.0, dtype=np.float32)
    body = u**2 + v**2 + t**2 <= 1.0
    hu[body] = 40.0 + np.random.default_rng(seed).normal(0.0, 10.0, int(body.sum()))
    hu[body & ((u - 0.1) ** 2 + (v - 0.3) ** 2 <= 0.05)] = 700.0
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(float(x) for x in direction))
    return image


@pytest.fixture
def make_ct() -> Callable[..., sitk.Image]:
    """Factory fixture: ``make_ct(size=..., spacing=..., origin=..., direction=..., seed=...)``."""
    return make_synthetic_ct


@pytest.fixture
def ct_image() -> sitk.Image:
    """A small axis-aligned synthetic CT (24 x 20 x 16 voxels, 1.5 x 1.25 x 2.0 mm)."""
    return make_synthetic_ct()


#: ``../shared/slicer``: Slicer's volume-rendering ``presets.xml`` and the ExtensionsIndex schema.
SHARED_SLICER_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "slicer"


@pytest.fixture(scope="session")
def shared_slicer_dir() -> Path:
    """The Slicer reference folder; skips the test when it is absent."""
    if not (SHARED_SLICER_DIR / "presets.xml").is_file():
        pytest.skip(f"Slicer reference folder {SHARED_SLICER_DIR} (../shared/slicer) is absent")
    return SHARED_SLICER_DIR


@pytest.fixture()
def slicer_logics(shared_slicer_dir):
    """A fresh headless MRML scene with the module logics (Slicer's real MRML core)."""
    pytest.importorskip("slicer", reason="slicer-core wheel not installed")
    from DiffuX2CTSlicerLib.headless import build_headless_slicer

    logics = build_headless_slicer(shared_slicer_dir)
    yield logics
    logics.scene.Clear(1)
