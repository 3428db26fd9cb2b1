"""Bone segmentation of a reconstruction: a segmentation node with a closed surface.

Bone is ``HU >= threshold`` (default :data:`DiffuX2CTLib.metrics.BONE_THRESHOLD_HU`, 200 HU: the
same threshold as the bone Dice reported by the evaluation). The mask is built on the volume's
own voxel grid, so the segment's geometry is the volume's.
"""

from __future__ import annotations

from typing import Any

BONE_COLOR = (0.95, 0.9, 0.75)  # RGB in [0, 1]


def bone_segmentation(logics: Any, volume_node: Any, threshold_hu: float | None = None,
                      name: str | None = None, smoothing: float = 0.3) -> Any:
    """A segmentation node with one segment "Bone" (binary labelmap + closed surface).

    ``logics``: :class:`~.headless.SlicerLogics` (scene and segmentations logic).
    ``smoothing``: closed-surface smoothing factor (Slicer's conversion parameter, 0-1).
    """

    from DiffuX2CTLib.metrics import BONE_THRESHOLD_HU

    from .volumes import image_from_node, update_node_from_image

    threshold = BONE_THRESHOLD_HU if threshold_hu is None else float(threshold_hu)
    scene = logics.scene
    image = image_from_node(volume_node)
    import SimpleITK as sitk

    mask = sitk.Cast(sitk.BinaryThreshold(image, lowerThreshold=threshold, upperThreshold=1e9), sitk.sitkUInt8)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "DiffuX2CT bone labelmap (temporary)")
    try:
        update_node_from_image(labelmap, mask)
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                               scene.GenerateUniqueName(name or f"{volume_node.GetName()} bone"))
        segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        if not logics.segmentations.ImportLabelmapToSegmentationNode(labelmap, segmentation):
            raise RuntimeError(f"could not import the bone mask of {volume_node.GetName()!r} into a segmentation")
    finally:
        scene.RemoveNode(labelmap)
    segments = segmentation.GetSegmentation()
    if segments.GetNumberOfSegments() == 0:  # nothing above the threshold: keep an empty, named segment
        segments.AddEmptySegment("Bone", "Bone", BONE_COLOR)
    segment = segments.GetNthSegment(0)
    segment.SetName("Bone")
    segment.SetColor(*BONE_COLOR)
    segmentation.SetAttribute("DiffuX2CT.BoneThresholdHU", f"{threshold:g}")
    segments.SetConversionParameter("Smoothing factor", f"{smoothing:g}")
    segmentation.CreateClosedSurfaceRepresentation()
    display = segmentation.GetDisplayNode()
    if display is not None:
        display.SetVisibility3D(True)
        display.SetOpacity3D(1.0)
    return segmentation
