"""Biplanar geometry: presets, serialisation, hash, validation and the documented frames."""

from __future__ import annotations

import json

import numpy as np
import pytest

from DiffuX2CTLib.errors import InputError
from DiffuX2CTLib.geometry import BiplanarGeometry


def test_presets_follow_their_protocols():
    x2ct = BiplanarGeometry.preset("x2ct", volume_size=128, xray_size=128)
    assert (x2ct.source_to_isocenter_mm, x2ct.source_to_detector_mm) == (541.0, 949.0)
    assert x2ct.detector_shape == (128, 128)
    assert x2ct.detector_shape[0] * x2ct.detector_spacing_mm[0] == pytest.approx(500.0)  # 500 mm detector
    assert x2ct.volume_extent_mm == pytest.approx((320.0,) * 3)
    clinical = BiplanarGeometry.preset("clinical", volume_size=64, xray_size=256)
    assert clinical.source_to_detector_mm == 1800.0
    assert clinical.detector_shape == (256, 256) and clinical.volume_spacing_mm == (5.0, 5.0, 5.0)
    with pytest.raises(InputError, match="unknown geometry preset 'lidc'"):
        BiplanarGeometry.preset("lidc")


def test_json_round_trip_and_hash():
    g = BiplanarGeometry.preset("x2ct", volume_size=64, xray_size=96)
    text = g.to_json()
    back = BiplanarGeometry.from_json(text)
    assert back == g and back.hash == g.hash and len(g.hash) == 16
    assert BiplanarGeometry.from_dict(json.loads(text)) == g
    # any change of a field changes the hash; the same fields give the same hash
    assert g.with_sizes(volume_size=32).hash != g.hash
    assert BiplanarGeometry.preset("x2ct", volume_size=64, xray_size=96).hash == g.hash
    tampered = json.loads(text)
    tampered["source_to_detector_mm"] = 1000.0
    with pytest.raises(InputError, match="hash does not match"):
        BiplanarGeometry.from_json(json.dumps(tampered))


def test_with_sizes_keeps_physical_setup():
    g = BiplanarGeometry.preset("clinical", volume_size=128, xray_size=128)
    h = g.with_sizes(volume_size=32, xray_size=64)
    assert h.volume_extent_mm == pytest.approx(g.volume_extent_mm)
    assert h.detector_shape[0] * h.detector_spacing_mm[0] == pytest.approx(g.detector_shape[0] * g.detector_spacing_mm[0])
    assert h.source_to_isocenter_mm == g.source_to_isocenter_mm


@pytest.mark.parametrize(
    "change, message",
    [
        ({"source_to_isocenter_mm": 1000.0}, "source_to_isocenter_mm < source_to_detector_mm"),
        ({"volume_spacing_mm": (0.0, 1.0, 1.0)}, "spacings must be positive"),
        ({"detector_shape": (0, 4)}, "shapes must be positive"),
        ({"views": ("ap", "pa")}, "views must be distinct names"),
        ({"volume_shape": (4, 4)}, "must have 3 entries"),
        ({"source_to_isocenter_mm": 100.0, "source_to_detector_mm": 200.0}, "inside or on the volume"),
    ],
)
def test_invalid_geometries_are_refused(change, message):
    fields = BiplanarGeometry.preset("x2ct", volume_size=64).to_dict()
    fields.pop("schema_version")
    fields.update(change)
    with pytest.raises(InputError, match=message):
        BiplanarGeometry(**fields)


def test_view_frames_match_the_written_convention():
    g = BiplanarGeometry.preset("x2ct", volume_size=16)
    ap, lat = g.view("ap"), g.view("lateral")
    np.testing.assert_allclose(ap.source, [0, -541, 0])  # anterior (-y in LPS)
    np.testing.assert_allclose(ap.detector_center, [0, 949 - 541, 0])
    np.testing.assert_allclose(lat.source, [-541, 0, 0])  # patient right (-x in LPS)
    np.testing.assert_allclose(ap.u, [1, 0, 0])  # AP columns -> patient left
    np.testing.assert_allclose(lat.u, [0, 1, 0])  # lateral columns -> posterior
    np.testing.assert_allclose(ap.v, [0, 0, -1])  # rows -> feet
    np.testing.assert_allclose(lat.v, [0, 0, -1])
    # a point at the isocentre projects to the detector centre, magnified off-centre points outwards
    centre = (np.array(g.detector_shape) - 1) / 2
    np.testing.assert_allclose(g.project_points("ap", np.zeros(3)), centre)
    off = g.project_points("ap", np.array([10.0, 0.0, 0.0]))
    assert off[1] - centre[1] == pytest.approx(10.0 * g.magnification / g.detector_spacing_mm[1])
