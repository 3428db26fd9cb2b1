"""Ground-truth comparison: resample the real CT into the reconstruction's frame and score it.

The ground truth is resampled (anti-aliased, linear, air = -1024 HU outside it) onto the reconstruction's voxel
grid, so both are compared voxel for voxel in the reconstruction's frame (LPS/RAS positions kept:
a CT that does not overlap the reconstruction scores as air). The metrics are
:func:`DiffuX2CTLib.metrics.volume_metrics` (PSNR and 3D SSIM on the model's HU window, MAE in
HU) and :func:`DiffuX2CTLib.metrics.bone_dice`: the numbers the training stack reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

AIR_HU = -1024.0
#: Diverging colour maps for the difference volume, in order of preference (Slicer's file-based
#: tables exist only in the application; the built-in ones exist everywhere).
DIFFERENCE_COLOR_NODE_IDS = ("vtkMRMLColorTableNodeFileColdToHotRainbow.txt", "vtkMRMLColorTableNodeRedBlue",
                             "vtkMRMLColorTableNodeRainbow")

#: (metric key, row label, unit) of the metrics table, in display order.
TABLE_ROWS = (
    ("mae_hu", "MAE", "HU"),
    ("psnr_db", "PSNR", "dB"),
    ("ssim", "SSIM3D", ""),
    ("bone_dice", "Bone Dice", ""),
    ("rmse_hu", "RMSE", "HU"),
)


@dataclass
class Comparison:
    """Results of :func:`compare_with_ground_truth`."""

    metrics: dict[str, float]
    table: Any  # vtkMRMLTableNode
    resampled_ground_truth: Any  # vtkMRMLScalarVolumeNode on the reconstruction's grid
    difference: Any  # vtkMRMLScalarVolumeNode, reconstruction - ground truth (HU)


def resample_to_reference(image: Any, reference: Any, default_hu: float = AIR_HU) -> Any:
    """``image`` (SimpleITK, HU) resampled onto ``reference``'s grid (linear, identity transform).

    Axes of ``image`` finer than the reference voxels are first smoothed with the Gaussian of
    :func:`DiffuX2CTLib.io.ct.antialias_for_spacing`, as the training data were made, so that a
    0.7 mm CT compared on 10 mm voxels is averaged, not point-sampled.
    """
    import SimpleITK as sitk

    from DiffuX2CTLib.io.ct import antialias_for_spacing

    image = antialias_for_spacing(sitk.Cast(image, sitk.sitkFloat32), min(reference.GetSpacing()))
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, float(default_hu), sitk.sitkFloat32)


def comparison_metrics(reconstruction: Any, ground_truth_on_grid: Any, intensity: Any = None,
                       bone_threshold_hu: float | None = None) -> dict[str, float]:
    """The metrics of two SimpleITK images on one grid (HU)."""
    import SimpleITK as sitk

    from DiffuX2CTLib.metrics import BONE_THRESHOLD_HU, bone_dice, volume_metrics

    pred = sitk.GetArrayFromImage(reconstruction)
    true = sitk.GetArrayFromImage(ground_truth_on_grid)
    values = volume_metrics(pred, true, intensity)
    values["bone_dice"] = bone_dice(pred, true, BONE_THRESHOLD_HU if bone_threshold_hu is None else bone_threshold_hu)
    return values


def metrics_table(scene: Any, metrics: dict[str, float], name: str) -> Any:
    """A table node with columns Metric, Value, Unit (values as numbers, 4 significant digits shown)."""
    import vtk

    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    table = table_node.GetTable()
    columns = [vtk.vtkStringArray(), vtk.vtkDoubleArray(), vtk.vtkStringArray()]
    for column, title in zip(columns, ("Metric", "Value", "Unit")):
        column.SetName(title)
        table.AddColumn(column)
    for key, label, unit in TABLE_ROWS:
        if key in metrics:
            table.InsertNextBlankRow()
            row = table.GetNumberOfRows() - 1
            table.SetValue(row, 0, vtk.vtkVariant(label))
            table.SetValue(row, 1, vtk.vtkVariant(float(metrics[key])))
            table.SetValue(row, 2, vtk.vtkVariant(unit))
    table_node.SetUseColumnTitleAsColumnHeader(True)
    table_node.Modified()
    return table_node


def compare_with_ground_truth(scene: Any, reconstruction_node: Any, ground_truth_node: Any,
                              intensity: Any = None) -> Comparison:
    """Resample ``ground_truth_node`` into the reconstruction's frame; add the metrics table, the
    resampled ground truth and the difference volume (reconstruction - ground truth, HU)."""
    import SimpleITK as sitk

    from .volumes import add_volume_node, image_from_node

    reconstruction = image_from_node(reconstruction_node)
    on_grid = resample_to_reference(image_from_node(ground_truth_node), reconstruction)
    metrics = comparison_metrics(reconstruction, on_grid, intensity)
    base = reconstruction_node.GetName()
    resampled = add_volume_node(scene, on_grid, f"{ground_truth_node.GetName()} (in {base} frame)")
    difference = add_volume_node(scene, sitk.Subtract(reconstruction, on_grid), f"{base} - ground truth")
    display = difference.GetDisplayNode()
    if display is not None:  # symmetric window around 0 HU
        display.AutoWindowLevelOff()
        display.SetWindowLevel(1000.0, 0.0)
        for color_id in DIFFERENCE_COLOR_NODE_IDS:  # the first one this scene has
            if scene.GetNodeByID(color_id) is not None:
                display.SetAndObserveColorNodeID(color_id)
                break
    table = metrics_table(scene, metrics, f"{base} metrics")
    return Comparison(metrics, table, resampled, difference)
