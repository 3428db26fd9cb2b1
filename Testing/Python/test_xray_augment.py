"""Radiograph-style training augmentation: positioning jitter, simulated films read back through the
inference reader, determinism per sample seed, and the configs that switch it on."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from DiffuX2CTLib.geometry import BiplanarGeometry
from DiffuX2CTLib.io.xray import XRayNormalization
from training.config import AugmentConfig, load_config
from training.render import RadiographRenderer
from training.xray_augment import RadiographAugmenter, jitter_images

GEOMETRY = BiplanarGeometry.preset("clinical", volume_size=32, xray_size=32)
FACTOR = 4


def _phantom() -> torch.Tensor:
    z, y, x = torch.meshgrid(*(torch.linspace(-1, 1, 32),) * 3, indexing="ij")
    hu = torch.full((32, 32, 32), -1000.0)
    body = x**2 / 0.6 + y**2 / 0.3 + z**2 / 1.1 < 1
    hu[body] = 40.0
    hu[body & ((x - 0.1) ** 2 + (y - 0.3) ** 2 < 0.02)] = 900.0
    hu[body & ((x + 0.4) ** 2 + y**2 / 0.4 < 0.05)] = -800.0
    return hu[None, None]


@pytest.fixture(scope="module")
def rendered():
    renderer = RadiographRenderer(GEOMETRY, FACTOR)
    fine = renderer.fine(_phantom())
    return fine, renderer.normalization(renderer.pool(fine))


def _corr(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_jitter_identity_shift_and_magnification():
    image = torch.zeros((1, 16, 20))
    image[0, 5, 7] = 1.0
    same = jitter_images(image, torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([[0.0, 0.0]]))
    torch.testing.assert_close(same, image, atol=1e-6, rtol=0)
    moved = jitter_images(image, torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([[2.0, -3.0]]))
    assert moved[0].argmax().item() == (5 + 2) * 20 + (7 - 3)  # 2 rows down, 3 columns left
    wide = torch.zeros((1, 21, 21))
    wide[0, 8:13, 8:13] = 1.0  # a 5-pixel square at the centre
    bigger = jitter_images(wide, torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([[0.0, 0.0]]))
    assert float(bigger.sum()) == pytest.approx(4 * 25, rel=0.15)  # twice as wide: four times the area


def test_films_read_back_resemble_the_clean_input_and_are_deterministic(rendered):
    fine, clean = rendered
    config = AugmentConfig(film_prob=1.0, film_strength=1.0, magnification=0.0, xray_shift_mm=0.0,
                           xray_rotate_deg=0.0)
    augmenter = RadiographAugmenter(config, GEOMETRY, FACTOR, XRayNormalization())
    correlations = []
    for seed in range(12):
        out = augmenter(fine, clean, [seed])
        again = augmenter(fine, clean, [seed])
        torch.testing.assert_close(out, again, rtol=0, atol=0)  # the sample's seed decides everything
        assert out.shape == clean.shape and out.min() >= -1 and out.max() <= 1
        correlations += [_corr(out[0, v], clean[0, v]) for v in range(2)]
    # realistic films differ from the DRR (noise, scatter, heel, labels, display curves) but the
    # reader brings them back to the same anatomy
    assert min(correlations) > 0.6, correlations
    assert np.median(correlations) > 0.95, correlations
    assert not all(c > 0.999 for c in correlations)  # they do differ


def test_positioning_jitter_moves_the_anatomy(rendered):
    fine, clean = rendered
    config = AugmentConfig(film_prob=1.0, film_strength=0.0, magnification=0.0, xray_shift_mm=40.0,
                           xray_rotate_deg=0.0)
    augmenter = RadiographAugmenter(config, GEOMETRY, FACTOR, XRayNormalization())
    shifted = [augmenter(fine, clean, [seed]) for seed in range(4)]
    assert min(_corr(s[0, 0], clean[0, 0]) for s in shifted) < 0.97


def test_film_prob_zero_or_disabled_changes_nothing(rendered):
    fine, clean = rendered
    for config in (AugmentConfig(film_prob=0.0), AugmentConfig(enabled=False, film_prob=1.0)):
        out = RadiographAugmenter(config, GEOMETRY, FACTOR, XRayNormalization())(fine, clean, [1, 2])
        assert out is clean


def test_half_the_samples_get_films_and_it_is_fast(rendered):
    fine, clean = rendered
    augmenter = RadiographAugmenter(AugmentConfig(film_prob=0.5), GEOMETRY, FACTOR, XRayNormalization())
    batch_fine, batch_clean = fine.repeat(40, 1, 1, 1), clean.repeat(40, 1, 1, 1)
    began = time.perf_counter()
    out = augmenter(batch_fine, batch_clean, list(range(40)))
    per_view = (time.perf_counter() - began) / 40
    changed = sum(not torch.equal(out[i], batch_clean[i]) for i in range(40))
    assert 10 <= changed <= 30
    assert per_view < 0.5  # generous: about 0.03 s per view on 2 cores


def test_clinical_and_demo_configs_switch_films_on_paper_does_not():
    assert load_config("demo").augment.film_prob > 0
    assert load_config("clinical").augment.film_prob > 0
    assert load_config("paper").augment.film_prob == 0


def test_films_are_read_with_the_training_datas_water_attenuation(rendered, monkeypatch):
    """The reader's body prior (log and display films) is in units of the data's mu_water."""
    import DiffuX2CTLib.io.radiograph as radiograph

    seen = []
    real = radiograph.prepare_radiograph

    def recording(*args, **kwargs):
        seen.append(kwargs.get("mu_water_per_mm"))
        return real(*args, **kwargs)

    monkeypatch.setattr(radiograph, "prepare_radiograph", recording)
    fine, clean = rendered
    RadiographAugmenter(AugmentConfig(film_prob=1.0), GEOMETRY, FACTOR, XRayNormalization(), 0.0251)(fine, clean, [3])
    assert seen == [0.0251, 0.0251]  # both views
