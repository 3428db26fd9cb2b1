"""CT cleaning before projection: padding to air and couch removal (DiffuX2CTLib.io.body)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from DiffuX2CTLib.errors import InputError
from DiffuX2CTLib.io.body import clean_ct


def _ct_with_couch(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> tuple[sitk.Image, np.ndarray, np.ndarray]:
    """A 60 x 60 x 20 CT at 2 mm: elliptic body (40 HU) with lungs (-800 HU), a couch slab
    (100 HU) 4 mm below the back, and padding (-3024 HU) outside a scan circle."""
    k, j, i = np.mgrid[:20, :60, :60]
    hu = np.full((20, 60, 60), -1000.0, np.float32)
    body = ((i - 30) / 22.0) ** 2 + ((j - 26) / 15.0) ** 2 <= 1
    hu[body] = 40.0
    lungs = (((i - 21) / 6.0) ** 2 + ((j - 24) / 8.0) ** 2 <= 1) | (((i - 39) / 6.0) ** 2 + ((j - 24) / 8.0) ** 2 <= 1)
    hu[lungs] = -800.0
    couch = (j >= 44) & (j <= 45) & (i >= 8) & (i <= 52)
    hu[couch] = 100.0
    hu[(i - 29.5) ** 2 + (j - 29.5) ** 2 > 29.5**2] = -3024.0
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((2.0, 2.0, 2.0))
    image.SetOrigin((-60.0, -60.0, -20.0))
    image.SetDirection(direction)
    return image, body, couch


def test_padding_becomes_air_and_the_couch_is_removed_while_body_and_lungs_stay():
    image, body, couch = _ct_with_couch()
    cleaned = clean_ct(image)
    values = sitk.GetArrayFromImage(cleaned.image)
    assert values.min() >= -1024.0
    assert np.all(values[couch] == -1024.0)  # couch gone
    assert np.all(values[body & (values > -500)] == 40.0)  # soft tissue kept as it was
    assert (values == -800.0).sum() > 0  # the lungs are inside the body mask (holes filled), kept
    assert cleaned.body_mask and 0.0 <= cleaned.body_at_fov_edge < 0.05
    assert cleaned.hu_stats["padding_fraction"] > 0.1 and cleaned.hu_stats["min"] == -1024.0
    for getter in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(cleaned.image, getter)(), getattr(image, getter)())


def test_without_body_mask_only_the_padding_changes():
    image, _, couch = _ct_with_couch()
    values = sitk.GetArrayFromImage(clean_ct(image, use_body_mask=False).image)
    assert np.all(values[couch] == 100.0)
    original = sitk.GetArrayFromImage(image)
    assert np.array_equal(values, np.maximum(original, -1024.0))


def test_a_label_map_or_an_empty_scan_is_refused():
    labels = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 5, (8, 16, 16)).astype(np.int16))
    with pytest.raises(InputError, match="label map"):
        clean_ct(labels, path="seg.nii.gz")
    air = sitk.GetImageFromArray(np.full((8, 16, 16), -1000.0, np.float32))
    with pytest.raises(InputError, match="no body found"):
        clean_ct(air, path="air.nii.gz")
