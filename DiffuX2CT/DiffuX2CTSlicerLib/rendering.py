"""Volume rendering of CT volumes in the MRML scene, and the side-by-side comparison views.

Everything here changes MRML nodes only (display nodes, volume property nodes, view and camera
nodes), through the scene and the Volume Rendering module logic passed in a
:class:`~DiffuX2CTSlicerLib.headless.SlicerLogics`. Inside Slicer the application's views follow
those nodes; headless, :mod:`DiffuX2CTSlicerLib.offscreen` renders them to PNG files.

Camera linking: Slicer links 3D views through the view nodes' ``LinkedControl`` flag and the
application logic's view-link logic, which copies a camera change made *during interaction*
(camera node ``Interacting`` on, with interaction flags) to the cameras of the other linked views
of the same view group. Programmatic camera moves are not broadcast, so :func:`copy_camera` copies
one view's camera to another explicitly (used after resetting the cameras, and headless).

Cameras belong to views by layout name: a ``vtkMRMLCameraNode`` whose ``LayoutName`` equals the
view node's ``LayoutName`` (its singleton tag, e.g. ``"1"`` for ``View1``) is that view's camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

#: Preset used for CT volumes unless told otherwise (one of Slicer's volume-rendering presets).
DEFAULT_CT_PRESET = "CT-Bone"

#: Layout names (singleton tags) and node names of the two 3D views of Slicer's "Dual 3D" layout.
COMPARISON_VIEWS = (("1", "View1"), ("2", "View2"))

#: Camera directions (from the focal point towards the camera, RAS) and view-up vectors.
_LOOK_FROM = {
    "anterior": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "posterior": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "right": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "left": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "superior": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "inferior": ((0.0, 0.0, -1.0), (0.0, -1.0, 0.0)),
}


@dataclass
class SideBySideViews:
    """What :func:`setup_side_by_side` set up: view 1 shows the reconstruction, view 2 the
    ground truth, with the same preset and linked cameras."""

    view_node_ids: tuple[str, str]
    camera_node_ids: tuple[str, str]
    reconstruction_display_node: Any
    ground_truth_display_node: Any
    preset: str

    @property
    def display_nodes(self) -> tuple[Any, Any]:
        return (self.reconstruction_display_node, self.ground_truth_display_node)


def _scene_nodes(scene, class_name: str) -> list:
    count = scene.GetNumberOfNodesByClass(class_name)
    return [scene.GetNthNodeByClass(i, class_name) for i in range(count)]


def _node_id(node_or_id) -> str:
    return node_or_id if isinstance(node_or_id, str) else node_or_id.GetID()


def available_presets(logics) -> list[str]:
    """Names of the volume-rendering presets the Volume Rendering logic knows."""
    presets_scene = logics.volume_rendering.GetPresetsScene()
    if presets_scene is None:
        return []
    return [node.GetName() for node in _scene_nodes(presets_scene, "vtkMRMLVolumePropertyNode")]


def get_preset(logics, preset: str):
    """The preset's volume property node; ``ValueError`` (naming it, listing some) if unknown."""
    node = logics.volume_rendering.GetPresetByName(preset) if preset else None
    if node is None:
        names = available_presets(logics)
        ct = [n for n in names if n.startswith("CT-")]
        shown = (ct or names)[:8]
        if shown:
            hint = ", ".join(shown) + (", ..." if len(names) > len(shown) else "")
        else:
            hint = "none loaded"
        raise ValueError(
            f"unknown volume-rendering preset {preset!r}; available presets include: {hint}"
        )
    return node


def show_volume_rendering(logics, volume_node, preset: str = DEFAULT_CT_PRESET, view_node_ids=None):
    """Show ``volume_node`` with volume rendering using the named preset; returns the display node.

    Reuses the volume's volume-rendering display node when it has one. ``view_node_ids``: view
    nodes (or their IDs) to restrict the rendering to; ``None`` shows it in every 3D view.
    """
    if volume_node is None or volume_node.GetImageData() is None:
        raise ValueError("show_volume_rendering needs a volume node with image data")
    preset_node = get_preset(logics, preset)  # fail before creating any node
    vr_logic = logics.volume_rendering
    if volume_node.GetDisplayNode() is None:
        # the volume-rendering logic takes its initial window/level from the scalar display node
        volume_node.CreateDefaultDisplayNodes()
    display_node = vr_logic.GetFirstVolumeRenderingDisplayNode(volume_node)
    if display_node is None:
        display_node = vr_logic.CreateDefaultVolumeRenderingNodes(volume_node)
    if display_node is None:
        raise RuntimeError(
            f"could not create a volume-rendering display node for {volume_node.GetName()!r}"
        )
    property_node = display_node.GetVolumePropertyNode()
    if property_node is None:
        vr_logic.UpdateDisplayNodeFromVolumeNode(display_node, volume_node)
        property_node = display_node.GetVolumePropertyNode()
    was_modifying = display_node.StartModify()
    try:
        property_node.CopyParameterSet(preset_node)
        if view_node_ids is None:
            display_node.RemoveAllViewNodeIDs()
        else:
            display_node.SetViewNodeIDs([_node_id(v) for v in view_node_ids])
        display_node.SetVisibility(True)
    finally:
        display_node.EndModify(was_modifying)
    return display_node


def find_view_node(logics, layout_name: str):
    """The 3D view node with this layout name (singleton tag), or ``None``."""
    for node in _scene_nodes(logics.scene, "vtkMRMLViewNode"):
        if node.GetLayoutName() == layout_name:
            return node
    return None


def ensure_view_node(logics, layout_name: str, name: str | None = None):
    """The 3D view node with this layout name; created (as Slicer's layout does) if missing."""
    node = find_view_node(logics, layout_name)
    if node is not None:
        return node
    scene = logics.scene
    node = scene.CreateNodeByClass("vtkMRMLViewNode")  # applies the scene's default view settings
    node.UnRegister(None)  # CreateNodeByClass hands over a reference; the Python object keeps one
    node.SetLayoutName(layout_name)  # also the singleton tag: must precede AddNode
    node.SetLayoutLabel(layout_name)
    node.SetName(name or f"View{layout_name}")
    return scene.AddNode(node)


def get_camera_node(logics, view_node, create: bool = True):
    """The camera node of a 3D view (the one with the view's layout name); created if missing."""
    layout_name = view_node.GetLayoutName()
    for node in _scene_nodes(logics.scene, "vtkMRMLCameraNode"):
        if node.GetLayoutName() == layout_name:
            return node
    if not create:
        return None
    camera = logics.scene.CreateNodeByClass("vtkMRMLCameraNode")
    camera.UnRegister(None)
    camera.SetName(f"{view_node.GetName()} camera")
    camera.SetLayoutName(layout_name)
    return logics.scene.AddNode(camera)


def _union_ras_bounds(volume_nodes: Iterable) -> list[float]:
    lo = [math.inf] * 3
    hi = [-math.inf] * 3
    for node in volume_nodes:
        bounds = [0.0] * 6
        node.GetRASBounds(bounds)
        if bounds[0] > bounds[1]:  # empty volume: invalid bounds
            continue
        for axis in range(3):
            lo[axis] = min(lo[axis], bounds[2 * axis])
            hi[axis] = max(hi[axis], bounds[2 * axis + 1])
    if lo[0] == math.inf:
        raise ValueError("no volume with valid bounds to centre the camera on")
    return [lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]]


def reset_camera_on_volume(
    logics, view_node, volume_nodes, direction: str = "anterior", margin: float = 1.05
):
    """Point the view's camera at the centre of the volume(s)' RAS bounds, far enough that the
    whole bounding box fits the view; ``direction``: side the camera looks from (``anterior``,
    ``posterior``, ``left``, ``right``, ``superior``, ``inferior``). Returns the camera node."""
    if direction not in _LOOK_FROM:
        known = ", ".join(_LOOK_FROM)
        raise ValueError(f"unknown camera direction {direction!r}; use one of {known}")
    if not isinstance(volume_nodes, (list, tuple)):
        volume_nodes = [volume_nodes]
    bounds = _union_ras_bounds(volume_nodes)
    centre = [(bounds[2 * a] + bounds[2 * a + 1]) / 2.0 for a in range(3)]
    radius = 0.5 * math.sqrt(sum((bounds[2 * a + 1] - bounds[2 * a]) ** 2 for a in range(3)))
    radius = max(radius, 1e-3)
    camera = get_camera_node(logics, view_node)
    half_angle = math.radians(max(1.0, min(camera.GetViewAngle(), 170.0)) / 2.0)
    distance = margin * radius / math.sin(half_angle)
    look_from, view_up = _LOOK_FROM[direction]
    was_modifying = camera.StartModify()
    try:
        camera.SetFocalPoint(*centre)
        camera.SetPosition(*(c + distance * d for c, d in zip(centre, look_from)))
        camera.SetViewUp(*view_up)
        camera.SetParallelScale(margin * radius)
    finally:
        camera.EndModify(was_modifying)
    camera.ResetClippingRange()
    return camera


def copy_camera(logics, source_view_node, target_view_node):
    """Give the target view's camera the source view's camera pose and projection."""
    source = get_camera_node(logics, source_view_node)
    target = get_camera_node(logics, target_view_node)
    was_modifying = target.StartModify()
    try:
        target.SetPosition(*source.GetPosition())
        target.SetFocalPoint(*source.GetFocalPoint())
        target.SetViewUp(*source.GetViewUp())
        target.SetViewAngle(source.GetViewAngle())
        target.SetParallelProjection(source.GetParallelProjection())
        target.SetParallelScale(source.GetParallelScale())
    finally:
        target.EndModify(was_modifying)
    target.ResetClippingRange()
    return target


def link_views(view_nodes: Sequence, linked: bool = True) -> None:
    """Set (or clear) ``LinkedControl`` on the view nodes and put them in one view group, which is
    how Slicer's view-link logic decides whose cameras move together."""
    group = view_nodes[0].GetViewGroup() if view_nodes else 0
    for node in view_nodes:
        node.SetViewGroup(group)
        node.SetLinkedControl(bool(linked))


def setup_side_by_side(
    logics,
    reconstruction_node,
    ground_truth_node,
    preset: str = DEFAULT_CT_PRESET,
    reset_camera: bool = True,
    direction: str = "anterior",
) -> SideBySideViews:
    """Compare a reconstruction with its ground truth: reconstruction alone in 3D view 1, ground
    truth alone in 3D view 2, both with ``preset``, cameras linked (and made equal).

    When the scene has a layout node (inside Slicer) the layout becomes "Dual 3D", which creates
    View1/View2; otherwise (headless) the missing view nodes are created here.
    """
    if reconstruction_node is None or ground_truth_node is None:
        raise ValueError("setup_side_by_side needs a reconstruction and a ground-truth volume node")
    if reconstruction_node.GetID() == ground_truth_node.GetID():
        raise ValueError("the reconstruction and the ground truth must be different volume nodes")
    get_preset(logics, preset)  # unknown preset: fail before touching the scene

    scene = logics.scene
    layout_node = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout_node is not None:
        layout_node.SetViewArrangement(layout_node.SlicerLayoutDual3DView)
    views = [ensure_view_node(logics, tag, name) for tag, name in COMPARISON_VIEWS]
    cameras = [get_camera_node(logics, view) for view in views]

    recon_display = show_volume_rendering(logics, reconstruction_node, preset, [views[0].GetID()])
    truth_display = show_volume_rendering(logics, ground_truth_node, preset, [views[1].GetID()])

    link_views(views, True)
    if reset_camera:
        volumes = [reconstruction_node, ground_truth_node]
        reset_camera_on_volume(logics, views[0], volumes, direction)
    copy_camera(logics, views[0], views[1])
    return SideBySideViews(
        view_node_ids=(views[0].GetID(), views[1].GetID()),
        camera_node_ids=(cameras[0].GetID(), cameras[1].GetID()),
        reconstruction_display_node=recon_display,
        ground_truth_display_node=truth_display,
        preset=preset,
    )
