"""Volume rendering in the MRML scene, the side-by-side comparison views, and headless PNGs.

Runs against Slicer's MRML core (``slicer-core`` wheel) through the ``slicer_logics`` fixture.
The PNG tests render with OpenGL in this process; they skip when the subprocess probe finds no
GL backend (a missing backend would crash the test process instead of raising).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

SPACING = (1.5, 1.25, 2.0)
ORIGIN = (-20.25, 10.5, -100.125)


def make_ct_volume_node(logics, name="CT", shape=(36, 44, 52), rod_offset=0.15):
    """A small synthetic CT (int16 HU, numpy shape (k, j, i)) in a vtkMRMLScalarVolumeNode: air
    (-1000) around a soft-tissue ellipsoid (40 HU) holding a bone rod (700 HU) along k."""
    import slicer.util

    d, h, w = shape
    k, j, i = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    u = (i - (w - 1) / 2) / (0.42 * w)
    v = (j - (h - 1) / 2) / (0.38 * h)
    t = (k - (d - 1) / 2) / (0.45 * d)
    hu = np.full(shape, -1000, dtype=np.int16)
    body = u**2 + v**2 + t**2 <= 1.0
    hu[body] = 40
    hu[body & ((u - rod_offset) ** 2 + (v - 0.1) ** 2 <= 0.05)] = 700
    node = logics.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetSpacing(*SPACING)
    node.SetOrigin(*ORIGIN)
    slicer.util.updateVolumeFromArray(node, hu)
    return node


def function_nodes(function, width):
    """All nodes of a VTK transfer function (piecewise: 4 values; colour: 6 values)."""
    out = []
    for index in range(function.GetSize()):
        values = [0.0] * width
        function.GetNodeValue(index, values)
        out.append(values)
    return np.array(out)


def require_gl():
    from DiffuX2CTSlicerLib import offscreen

    if not offscreen.gl_backend_available():
        detail = offscreen.gl_probe_detail()
        pytest.skip(f"no OpenGL backend for offscreen VTK rendering ({detail})")


def volume_pixels(image):
    """Mask of pixels coloured like the CT-Bone rendering (warm: red clearly above blue), which
    the bluish background gradient, the magenta box and the white labels are not."""
    rgb = image[:, :, :3].astype(int)
    return rgb[:, :, 0] > rgb[:, :, 2] + 20


# --- (a), (b): volume rendering with a preset ------------------------------------------------


def test_show_volume_rendering_copies_ct_preset(slicer_logics):
    from DiffuX2CTSlicerLib.rendering import show_volume_rendering

    volume = make_ct_volume_node(slicer_logics)
    display = show_volume_rendering(slicer_logics, volume, "CT-Bone")

    assert display is not None and display.IsA("vtkMRMLVolumeRenderingDisplayNode")
    assert display.GetVisibility()
    assert display.GetVolumeNodeID() == volume.GetID()
    assert slicer_logics.volume_rendering.GetFirstVolumeRenderingDisplayNode(volume) is display
    assert list(display.GetViewNodeIDs()) == []  # shown in every 3D view

    preset = slicer_logics.volume_rendering.GetPresetByName("CT-Bone").GetVolumeProperty()
    shown = display.GetVolumePropertyNode().GetVolumeProperty()
    preset_opacity = function_nodes(preset.GetScalarOpacity(), 4)
    assert len(preset_opacity) >= 2
    np.testing.assert_allclose(function_nodes(shown.GetScalarOpacity(), 4), preset_opacity)
    np.testing.assert_allclose(
        function_nodes(shown.GetRGBTransferFunction(), 6),
        function_nodes(preset.GetRGBTransferFunction(), 6),
    )
    np.testing.assert_allclose(
        function_nodes(shown.GetGradientOpacity(), 4),
        function_nodes(preset.GetGradientOpacity(), 4),
    )
    assert shown.GetShade() == preset.GetShade()

    # a second call reuses the display node, switches preset and restricts the views
    view = slicer_logics.scene.AddNewNodeByClass("vtkMRMLViewNode")
    again = show_volume_rendering(slicer_logics, volume, "CT-Soft-Tissue", view_node_ids=[view])
    assert again is display
    assert list(again.GetViewNodeIDs()) == [view.GetID()]
    soft = slicer_logics.volume_rendering.GetPresetByName("CT-Soft-Tissue").GetVolumeProperty()
    np.testing.assert_allclose(
        function_nodes(shown.GetScalarOpacity(), 4), function_nodes(soft.GetScalarOpacity(), 4)
    )
    assert slicer_logics.scene.GetNumberOfNodesByClass("vtkMRMLVolumeRenderingDisplayNode") == 1


def test_unknown_preset_raises_value_error(slicer_logics):
    from DiffuX2CTSlicerLib.rendering import setup_side_by_side, show_volume_rendering

    volume = make_ct_volume_node(slicer_logics)
    with pytest.raises(ValueError) as caught:
        show_volume_rendering(slicer_logics, volume, "CT-No-Such-Preset")
    message = str(caught.value)
    assert "CT-No-Such-Preset" in message and "CT-Bone" in message
    assert slicer_logics.scene.GetNumberOfNodesByClass("vtkMRMLVolumeRenderingDisplayNode") == 0

    other = make_ct_volume_node(slicer_logics, "other")
    with pytest.raises(ValueError, match="Nope"):
        setup_side_by_side(slicer_logics, volume, other, preset="Nope")
    assert slicer_logics.scene.GetNumberOfNodesByClass("vtkMRMLViewNode") == 0


# --- (c): side-by-side comparison ------------------------------------------------------------


def test_side_by_side_views_display_nodes_and_linked_cameras(slicer_logics):
    import slicer

    from DiffuX2CTSlicerLib import rendering

    scene = slicer_logics.scene
    # as inside Slicer: a layout logic (the layout manager's) with its layout node and View1
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(scene)
    layout = layout_logic.GetLayoutNode()
    recon = make_ct_volume_node(slicer_logics, "reconstruction")
    truth = make_ct_volume_node(slicer_logics, "ground truth", rod_offset=-0.3)

    result = rendering.setup_side_by_side(slicer_logics, recon, truth, preset="CT-Bone")

    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutDual3DView
    views = [scene.GetNodeByID(i) for i in result.view_node_ids]
    assert all(v is not None and v.IsA("vtkMRMLViewNode") for v in views)
    assert [v.GetName() for v in views] == ["View1", "View2"]
    assert [v.GetLayoutName() for v in views] == ["1", "2"]
    assert scene.GetNumberOfNodesByClass("vtkMRMLViewNode") == 2

    recon_display, truth_display = result.display_nodes
    assert recon_display.GetVolumeNodeID() == recon.GetID()
    assert truth_display.GetVolumeNodeID() == truth.GetID()
    assert list(recon_display.GetViewNodeIDs()) == [views[0].GetID()]
    assert list(truth_display.GetViewNodeIDs()) == [views[1].GetID()]
    assert recon_display.IsDisplayableInView(views[0].GetID())
    assert not recon_display.IsDisplayableInView(views[1].GetID())
    assert truth_display.IsDisplayableInView(views[1].GetID())
    assert not truth_display.IsDisplayableInView(views[0].GetID())
    assert recon_display.GetVisibility() and truth_display.GetVisibility()
    opacity = [
        function_nodes(d.GetVolumePropertyNode().GetVolumeProperty().GetScalarOpacity(), 4)
        for d in result.display_nodes
    ]
    np.testing.assert_allclose(opacity[0], opacity[1])

    # cameras: one per view (by layout name), equal, and centred on the volumes
    cameras = [scene.GetNodeByID(i) for i in result.camera_node_ids]
    assert [c.GetLayoutName() for c in cameras] == ["1", "2"]
    assert rendering.get_camera_node(slicer_logics, views[1], create=False) is cameras[1]
    for getter in ("GetPosition", "GetFocalPoint", "GetViewUp"):
        np.testing.assert_allclose(getattr(cameras[0], getter)(), getattr(cameras[1], getter)())
    bounds = [0.0] * 6
    recon.GetRASBounds(bounds)
    centre = [(bounds[2 * a] + bounds[2 * a + 1]) / 2 for a in range(3)]
    np.testing.assert_allclose(cameras[0].GetFocalPoint(), centre, atol=1e-6)
    offset = np.subtract(cameras[0].GetPosition(), cameras[0].GetFocalPoint())
    # looking from anterior
    assert offset[1] > 0 and abs(offset[0]) < 1e-6 and abs(offset[2]) < 1e-6
    radius = 0.5 * math.dist(bounds[0::2], bounds[1::2])
    assert np.linalg.norm(offset) > radius  # the whole volume is in front of the camera

    # linked: Slicer's view-link logic carries an interactive camera move to the other view
    assert views[0].GetLinkedControl() and views[1].GetLinkedControl()
    assert views[0].GetViewGroup() == views[1].GetViewGroup()
    cameras[0].SetInteracting(1)
    cameras[0].SetInteractionFlags(slicer.vtkMRMLCameraNode.CameraInteractionFlag)
    cameras[0].SetPosition(centre[0] + 300.0, centre[1], centre[2])
    cameras[0].SetInteracting(0)
    np.testing.assert_allclose(cameras[1].GetPosition(), cameras[0].GetPosition())
    # and programmatic moves are copied explicitly
    cameras[0].SetViewUp(0.0, 1.0, 0.0)
    rendering.copy_camera(slicer_logics, views[0], views[1])
    np.testing.assert_allclose(cameras[1].GetViewUp(), (0.0, 1.0, 0.0))

    # calling again reuses the views, cameras and display nodes
    again = rendering.setup_side_by_side(slicer_logics, recon, truth, preset="CT-Soft-Tissue")
    assert again.view_node_ids == result.view_node_ids
    assert again.camera_node_ids == result.camera_node_ids
    assert again.reconstruction_display_node is recon_display
    assert scene.GetNumberOfNodesByClass("vtkMRMLCameraNode") == 2

    with pytest.raises(ValueError):
        rendering.setup_side_by_side(slicer_logics, recon, recon)


def test_reset_camera_on_volume_directions(slicer_logics):
    from DiffuX2CTSlicerLib import rendering

    volume = make_ct_volume_node(slicer_logics)
    view = rendering.ensure_view_node(slicer_logics, "1", "View1")
    camera = rendering.reset_camera_on_volume(slicer_logics, view, volume, direction="left")
    offset = np.subtract(camera.GetPosition(), camera.GetFocalPoint())
    assert offset[0] < 0 and abs(offset[1]) < 1e-6
    np.testing.assert_allclose(camera.GetViewUp(), (0, 0, 1))
    with pytest.raises(ValueError, match="sideways"):
        rendering.reset_camera_on_volume(slicer_logics, view, volume, direction="sideways")


# --- (d), (e): offscreen PNGs ------------------------------------------------------------------


def test_render_one_view_to_png(slicer_logics, tmp_path):
    require_gl()
    from PIL import Image

    from DiffuX2CTSlicerLib import offscreen, rendering

    volume = make_ct_volume_node(slicer_logics)
    view = rendering.ensure_view_node(slicer_logics, "1", "View1")
    display = rendering.show_volume_rendering(slicer_logics, volume, "CT-Bone", [view])
    rendering.reset_camera_on_volume(slicer_logics, view, volume)

    target = tmp_path / "out" / "view.png"
    path = offscreen.render_view_to_png(slicer_logics, view, target, size=(320, 240))
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["view.png"]  # no temporary file left
    with Image.open(path) as picture:
        assert picture.size == (320, 240)
        image = np.asarray(picture.convert("RGB"))
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # not a flat picture

    display.SetVisibility(False)
    background = offscreen.render_view_to_array(slicer_logics, view.GetID(), size=(320, 240))
    assert background.shape == (240, 320, 3)
    changed = np.abs(image.astype(int) - background.astype(int)).max(axis=2) > 12
    assert changed.mean() > 0.03, "the volume rendering changed too few pixels"
    assert volume_pixels(image).mean() > 0.01 and volume_pixels(background).mean() < 0.001
    rows, cols = np.nonzero(changed)
    # the volume is centred in the picture
    assert abs(rows.mean() - 120) < 30 and abs(cols.mean() - 160) < 40


def test_render_side_by_side_png(slicer_logics, tmp_path):
    require_gl()
    from PIL import Image

    from DiffuX2CTSlicerLib import offscreen, rendering

    recon = make_ct_volume_node(slicer_logics, "reconstruction")
    truth = make_ct_volume_node(slicer_logics, "ground truth", rod_offset=-0.35)
    result = rendering.setup_side_by_side(slicer_logics, recon, truth)

    width, height, separator = 240, 200, 4
    path = offscreen.render_side_by_side_png(
        slicer_logics, result, tmp_path / "compare.png", size=(width, height), separator=separator
    )
    with Image.open(path) as picture:
        assert picture.size == (2 * width + separator, height)
        image = np.asarray(picture.convert("RGB"))
    left, right = image[:, :width], image[:, width + separator :]
    bar = image[:, width : width + separator]
    assert (bar == np.array(offscreen.SEPARATOR_RGB, dtype=np.uint8)).all()
    for half in (left, right):
        assert len(np.unique(half.reshape(-1, 3), axis=0)) > 50
        assert volume_pixels(half).mean() > 0.01
    # different volumes (the rod moved), same camera: the halves differ, the backgrounds do not
    assert np.abs(left.astype(int) - right.astype(int)).max(axis=2).mean() > 1.0
    np.testing.assert_array_equal(left[:4, :4], right[:4, :4])
