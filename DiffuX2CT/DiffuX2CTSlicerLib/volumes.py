"""Volume nodes <-> SimpleITK images, keeping the geometry exact.

Frames: SimpleITK images (and every file DiffuX2CTLib reads or writes) are in **LPS**; MRML
volume nodes are in **RAS**. The two differ by ``diag(-1, -1, 1)``, applied to the origin and to
the direction columns; spacing is unchanged. Voxel arrays are ``(k, j, i)`` in both (numpy order
of ``sitk.GetArrayFromImage`` and ``slicer.util.arrayFromVolume``), so no axis is permuted.

A 2D image (a radiograph) becomes a single-slice volume with SimpleITK's identity direction,
which is how Slicer itself loads a PNG: columns run to the patient's left (screen right in the
axial view) and rows to posterior (screen down).
"""

from __future__ import annotations

import os
from typing import Any

LPS_TO_RAS = (-1.0, -1.0, 1.0)

#: Node attribute holding the file a node was read from (the worker reads that file directly).
SOURCE_PATH_ATTRIBUTE = "DiffuX2CT.SourcePath"


def _as_3d(image: Any) -> Any:
    import SimpleITK as sitk

    if image.GetDimension() == 3:
        return image
    if image.GetDimension() != 2:
        raise ValueError(f"need a 2D or 3D image, got {image.GetDimension()}D")
    return sitk.JoinSeries(image)  # adds a third axis with spacing 1, origin 0


def ijk_to_ras_matrix(image: Any) -> Any:
    """The ``vtkMatrix4x4`` mapping voxel indices (i, j, k) of ``image`` to RAS millimetres."""
    import vtk

    image = _as_3d(image)
    direction = image.GetDirection()
    spacing = image.GetSpacing()
    origin = image.GetOrigin()
    matrix = vtk.vtkMatrix4x4()
    for row in range(3):
        flip = LPS_TO_RAS[row]
        for col in range(3):
            matrix.SetElement(row, col, flip * direction[3 * row + col] * spacing[col])
        matrix.SetElement(row, 3, flip * origin[row])
    return matrix


def update_node_from_image(node: Any, image: Any) -> Any:
    """Put ``image`` (SimpleITK, LPS, scalar) into ``node``: voxels, spacing, origin, direction."""
    import numpy as np
    import SimpleITK as sitk
    import slicer.util

    image = _as_3d(image)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("only scalar images can be shown as scalar volumes")
    array = sitk.GetArrayFromImage(image)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.SetIJKToRASMatrix(ijk_to_ras_matrix(image))
    node.Modified()
    return node


def add_volume_node(scene: Any, image: Any, name: str, class_name: str = "vtkMRMLScalarVolumeNode") -> Any:
    """A new volume node (with a default display node) holding ``image``; ``name`` made unique."""
    node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    update_node_from_image(node, image)
    node.CreateDefaultDisplayNodes()
    return node


def image_from_node(node: Any) -> Any:
    """The node's voxels as a SimpleITK image in LPS (float32 for scalar volumes, uint8 for labels)."""
    import numpy as np
    import SimpleITK as sitk
    import slicer.util
    import vtk

    if node is None or node.GetImageData() is None:
        raise ValueError(f"volume {getattr(node, 'GetName', lambda: None)()!r} holds no image data")
    array = slicer.util.arrayFromVolume(node)
    if array.ndim != 3:
        raise ValueError(f"volume {node.GetName()!r} is not a scalar volume (array shape {array.shape})")
    image = sitk.GetImageFromArray(np.array(array, dtype=np.float32 if array.dtype.kind == "f" else array.dtype))
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    spacing = node.GetSpacing()
    direction = []
    for row in range(3):
        for col in range(3):
            direction.append(LPS_TO_RAS[row] * matrix.GetElement(row, col) / spacing[col])
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(direction))
    image.SetOrigin(tuple(LPS_TO_RAS[r] * matrix.GetElement(r, 3) for r in range(3)))
    return image


def load_ct_node(scene: Any, path: str | os.PathLike, name: str | None = None) -> Any:
    """Read a CT (file or DICOM folder) with DiffuX2CTLib and add it to the scene in HU."""
    from DiffuX2CTLib.io.ct import read_ct

    image = read_ct(path)
    node = add_volume_node(scene, image, name or _stem(path))
    node.SetAttribute(SOURCE_PATH_ATTRIBUTE, os.fspath(path))
    return node


def save_node(node: Any, path: str | os.PathLike) -> str:
    """Write a 3D volume node to ``path`` (atomic; format from the suffix) with its geometry."""
    from DiffuX2CTLib.io.ct import write_ct

    return os.fspath(write_ct(image_from_node(node), path))


def _stem(path: str | os.PathLike) -> str:
    name = os.path.basename(os.fspath(path).rstrip("/\\"))
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".png", ".tif", ".tiff", ".jpg", ".jpeg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
