"""HU <-> [-1, 1] normalisation and HU -> attenuation (DiffuX2CTLib.io.intensity)."""

from __future__ import annotations

import numpy as np
import pytest

from DiffuX2CTLib.errors import InputError
from DiffuX2CTLib.io.intensity import MU_WATER_PER_MM, CTIntensity, hu_to_mu, mu_to_hu

torch = pytest.importorskip("torch")


def test_defaults_and_anchor_values():
    window = CTIntensity()
    assert (window.hu_min, window.hu_max) == (-1024.0, 2048.0)
    np.testing.assert_allclose(window.normalize(np.array([-1024.0, 0.0, 512.0, 2048.0])), [-1, -1 / 3, 0, 1],
                               rtol=0, atol=1e-15)
    np.testing.assert_array_equal(window.normalize(np.array([-3000.0, 5000.0])), [-1.0, 1.0])  # clipped
    assert window.normalize(2048) == 1.0 and isinstance(window.normalize(2048), float)


@pytest.mark.parametrize("dtype, atol", [(np.float32, 2e-4), (np.float64, 1e-9)])
def test_numpy_round_trip_is_exact_on_window(dtype, atol):
    window = CTIntensity()
    hu = np.random.default_rng(0).uniform(-1500, 2500, 10000).astype(dtype)
    x = window.normalize(hu)
    assert x.dtype == dtype and x.min() >= -1.0 and x.max() <= 1.0
    back = window.denormalize(x)
    assert back.dtype == dtype
    np.testing.assert_allclose(back, np.clip(hu, -1024, 2048), rtol=0, atol=atol)
    integers = np.arange(-1024, 2049, dtype=np.float64)
    np.testing.assert_allclose(window.denormalize(window.normalize(integers)), integers, rtol=0, atol=1e-10)


def test_integer_input_is_promoted_to_float32():
    hu = np.array([-1024, 0, 2048], dtype=np.int16)
    assert CTIntensity().normalize(hu).dtype == np.float32
    assert hu_to_mu(hu).dtype == np.float32


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_torch_matches_numpy_and_keeps_dtype(dtype):
    window = CTIntensity(-1000.0, 1500.0)
    hu_np = np.random.default_rng(1).uniform(-1200, 1700, 1000)
    hu = torch.tensor(hu_np, dtype=getattr(torch, dtype))
    x = window.normalize(hu)
    assert isinstance(x, torch.Tensor) and x.dtype == hu.dtype
    back = window.denormalize(x)
    assert back.dtype == hu.dtype
    tol = {"float16": 2.0, "float32": 2e-4, "float64": 1e-9}[dtype]
    np.testing.assert_allclose(back.double().numpy(), np.clip(hu.double().numpy(), -1000, 1500), rtol=0, atol=tol)
    np.testing.assert_allclose(x.double().numpy(), window.normalize(hu.double().numpy()), rtol=0,
                               atol=3e-3 if dtype == "float16" else 1e-6)
    assert window.normalize(torch.tensor([0, 1500], dtype=torch.int16)).dtype == torch.float32


def test_denormalize_clips_network_outputs_unless_asked_not_to():
    window = CTIntensity()
    np.testing.assert_array_equal(window.denormalize(np.array([-1.5, 1.5])), [-1024.0, 2048.0])
    np.testing.assert_allclose(window.denormalize(np.array([1.5]), clip=False), [2048.0 + 0.5 * 1536.0])


def test_serialisation_and_validation():
    window = CTIntensity(-1000, 3000)
    assert window.to_dict() == {"hu_min": -1000.0, "hu_max": 3000.0}
    assert CTIntensity.from_dict(window.to_dict()) == window
    assert CTIntensity.from_dict({}) == CTIntensity()
    with pytest.raises(InputError, match="hu_min < hu_max"):
        CTIntensity(100.0, 100.0)
    with pytest.raises(InputError, match="hu_min < hu_max"):
        CTIntensity(float("nan"), 100.0)
    with pytest.raises(InputError, match="unknown"):
        CTIntensity.from_dict({"hu_min": 0, "window": 1})
    with pytest.raises(InputError, match="numbers"):
        CTIntensity.from_dict({"hu_min": "air"})


def test_hu_to_mu_values_numpy():
    assert MU_WATER_PER_MM == pytest.approx(0.01937)
    hu = np.array([-2000.0, -1024.0, -1000.0, 0.0, 1000.0, 500.0])
    mu = hu_to_mu(hu, mu_water_per_mm=0.02)
    np.testing.assert_allclose(mu, [0.0, 0.0, 0.0, 0.02, 0.04, 0.03], rtol=0, atol=1e-15)
    assert hu_to_mu(0.0) == pytest.approx(MU_WATER_PER_MM)
    np.testing.assert_allclose(mu_to_hu(hu_to_mu(hu[2:])), hu[2:], atol=1e-9)
    assert hu_to_mu(np.float32(1000.0)).dtype == np.float32
    with pytest.raises(InputError, match="mu_water_per_mm"):
        hu_to_mu(hu, mu_water_per_mm=0.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hu_to_mu_values_torch(dtype):
    hu = torch.tensor([-2000.0, -1000.0, 0.0, 1000.0], dtype=getattr(torch, dtype))
    mu = hu_to_mu(hu, mu_water_per_mm=0.02)
    assert isinstance(mu, torch.Tensor) and mu.dtype == hu.dtype
    np.testing.assert_allclose(mu.numpy(), [0.0, 0.0, 0.02, 0.04], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(mu_to_hu(mu[1:], mu_water_per_mm=0.02).numpy(), [-1000.0, 0.0, 1000.0], atol=1e-3)
