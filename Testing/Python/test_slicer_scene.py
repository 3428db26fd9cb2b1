"""The Slicer layer against Slicer's real MRML core (slicer-core): geometry, radiographs,
bone segmentation and the ground-truth comparison."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import make_synthetic_ct

pytest.importorskip("slicer", reason="slicer-core wheel not installed")

OBLIQUE = (  # a rotation of 20 degrees about S, then 10 about R (a tilted gantry)
    math.cos(0.35), -math.sin(0.35), 0.0,
    math.sin(0.35) * math.cos(0.17), math.cos(0.35) * math.cos(0.17), -math.sin(0.17),
    math.sin(0.35) * math.sin(0.17), math.cos(0.35) * math.sin(0.17), math.cos(0.17),
)


def _ras(point_lps):
    return np.array([-point_lps[0], -point_lps[1], point_lps[2]])


def test_volume_round_trip_keeps_lps_geometry(slicer_logics, tmp_path):
    from DiffuX2CTSlicerLib.volumes import add_volume_node, image_from_node, load_ct_node, save_node

    image = make_synthetic_ct(direction=OBLIQUE)
    node = add_volume_node(slicer_logics.scene, image, "ct")
    # a voxel's RAS position in the node is its LPS position in the image with x, y negated
    index = (3, 7, 11)
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ras = np.array(matrix.MultiplyPoint((*index, 1.0))[:3])
    np.testing.assert_allclose(ras, _ras(image.TransformIndexToPhysicalPoint(index)), atol=1e-9)
    np.testing.assert_allclose(node.GetOrigin(), _ras(image.GetOrigin()), atol=1e-9)

    back = image_from_node(node)
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-12)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))

    path = save_node(node, tmp_path / "ct.nrrd")
    reread = load_ct_node(slicer_logics.scene, path)
    np.testing.assert_allclose(reread.GetOrigin(), node.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(image_from_node(reread).GetDirection(), image.GetDirection(), atol=1e-6)
    assert reread.GetAttribute("DiffuX2CT.SourcePath") == str(path)


def test_radiograph_nodes_load_check_and_export(slicer_logics, tmp_path):
    from DiffuX2CTLib.errors import InputError
    from DiffuX2CTLib.io.xray import read_xray, write_xray_nrrd
    from DiffuX2CTSlicerLib.volumes import add_volume_node
    from DiffuX2CTSlicerLib.xray_nodes import check_radiograph_node, load_xray_node, xray_file_for_worker

    rng = np.random.default_rng(1)
    pixels = rng.random((30, 40)).astype(np.float32)
    write_xray_nrrd(tmp_path / "ap.nrrd", pixels, (0.8, 0.5))
    node = load_xray_node(slicer_logics.scene, tmp_path / "ap.nrrd", "ap")
    assert node.GetImageData().GetDimensions() == (40, 30, 1)
    np.testing.assert_allclose(node.GetSpacing()[:2], (0.5, 0.8))
    assert node.GetAttribute("DiffuX2CT.SpacingKnown") == "1"
    # the worker gets the source file itself
    assert xray_file_for_worker(node, tmp_path, "ap") == str(tmp_path / "ap.nrrd")
    # a node without a source file is written out with its pixels and spacing
    node.RemoveAttribute("DiffuX2CT.SourcePath")
    out = xray_file_for_worker(node, tmp_path / "..", "lateral")
    written = read_xray(out)
    np.testing.assert_array_equal(written.pixels, pixels)
    assert written.spacing_mm == pytest.approx((0.8, 0.5))

    volume = add_volume_node(slicer_logics.scene, make_synthetic_ct(), "ct")
    with pytest.raises(InputError, match="not a 2D image"):
        check_radiograph_node(volume, "AP")
    with pytest.raises(InputError, match="no lateral radiograph"):
        check_radiograph_node(None, "lateral")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="bad.png"):
        load_xray_node(slicer_logics.scene, tmp_path / "bad.png", "ap")


def test_bone_segmentation_has_a_closed_surface_on_the_volume(slicer_logics):
    from DiffuX2CTSlicerLib.segmentation import bone_segmentation
    from DiffuX2CTSlicerLib.volumes import add_volume_node

    image = make_synthetic_ct(size=(32, 28, 24), direction=OBLIQUE)  # holds a 700 HU rod
    volume = add_volume_node(slicer_logics.scene, image, "recon")
    segmentation = bone_segmentation(slicer_logics, volume)
    segment_id = segmentation.GetSegmentation().GetNthSegmentID(0)
    assert segmentation.GetSegmentation().GetNthSegment(0).GetName() == "Bone"
    surface = segmentation.GetClosedSurfaceInternalRepresentation(segment_id)
    assert surface is not None and surface.GetNumberOfPoints() > 50 and surface.GetNumberOfCells() > 50
    # the surface lies inside the volume's RAS bounds
    bounds = [0.0] * 6
    volume.GetRASBounds(bounds)
    sb = surface.GetBounds()
    for axis in range(3):
        assert sb[2 * axis] >= bounds[2 * axis] - 1.0 and sb[2 * axis + 1] <= bounds[2 * axis + 1] + 1.0
    # the segment covers the bone voxels (>= 200 HU): compare voxel counts through a labelmap
    import slicer.util

    labels = slicer_logics.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    assert slicer_logics.segmentations.ExportVisibleSegmentsToLabelmapNode(segmentation, labels, volume)
    expected = int((sitk.GetArrayFromImage(image) >= 200).sum())
    assert int((slicer.util.arrayFromVolume(labels) > 0).sum()) == expected
    assert expected > 0


def test_comparison_table_matches_library_metrics(slicer_logics):
    from DiffuX2CTLib.metrics import bone_dice, volume_metrics
    from DiffuX2CTSlicerLib.comparison import compare_with_ground_truth, resample_to_reference
    from DiffuX2CTSlicerLib.volumes import add_volume_node

    truth_image = make_synthetic_ct(size=(20, 20, 20), spacing=(2.0, 2.0, 2.0), origin=(-19, -19, -19))
    recon_image = make_synthetic_ct(size=(20, 20, 20), spacing=(2.0, 2.0, 2.0), origin=(-19, -19, -19), seed=5)
    recon_array = sitk.GetArrayFromImage(recon_image) + 30.0
    recon = sitk.GetImageFromArray(recon_array)
    recon.CopyInformation(recon_image)
    # the ground truth covers a larger field at another spacing: it is resampled onto the recon grid
    truth_fine = sitk.Resample(truth_image, [40, 40, 40], sitk.Transform(), sitk.sitkLinear, (-29, -29, -29),
                               (1.5, 1.5, 1.5), truth_image.GetDirection(), -1024.0, sitk.sitkFloat32)
    recon_node = add_volume_node(slicer_logics.scene, recon, "recon")
    truth_node = add_volume_node(slicer_logics.scene, truth_fine, "truth")
    result = compare_with_ground_truth(slicer_logics.scene, recon_node, truth_node)

    on_grid = resample_to_reference(truth_fine, recon)
    # finer axes are smoothed before resampling (1.5 mm -> 2 mm voxels); equal or coarser ones are not
    plain = sitk.Resample(truth_fine, recon, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    assert 0 < np.abs(sitk.GetArrayFromImage(on_grid) - sitk.GetArrayFromImage(plain)).max()
    same = resample_to_reference(recon, recon)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(same), recon_array)
    expected = volume_metrics(recon_array, sitk.GetArrayFromImage(on_grid))
    expected["bone_dice"] = bone_dice(recon_array, sitk.GetArrayFromImage(on_grid))
    table = result.table.GetTable()
    rows = {table.GetValue(r, 0).ToString(): (table.GetValue(r, 1).ToDouble(), table.GetValue(r, 2).ToString())
            for r in range(table.GetNumberOfRows())}
    assert rows["MAE"] == (pytest.approx(expected["mae_hu"], rel=1e-6), "HU")
    assert rows["PSNR"][0] == pytest.approx(expected["psnr_db"], rel=1e-6)
    assert rows["SSIM3D"][0] == pytest.approx(expected["ssim"], rel=1e-6)
    assert rows["Bone Dice"][0] == pytest.approx(expected["bone_dice"], rel=1e-6)
    # the difference volume is recon - truth on the recon grid, in the recon's frame
    import slicer.util

    diff = slicer.util.arrayFromVolume(result.difference)
    np.testing.assert_allclose(diff, recon_array - sitk.GetArrayFromImage(on_grid), atol=1e-3)
    np.testing.assert_allclose(result.difference.GetOrigin(), recon_node.GetOrigin())


def test_a_raw_detector_film_is_shown_as_the_model_reads_it(slicer_logics, tmp_path):
    """A FOR PROCESSING linear film (bright = more X-rays as stored) appears bright = dense in the
    node, like the DRR it was made from, and the worker is still handed the DICOM file itself."""
    from DiffuX2CTLib.geometry import BiplanarGeometry
    from DiffuX2CTLib.radiograph.simulation import simulate_films, write_film_files
    from DiffuX2CTLib.simulate import simulate_xrays
    from DiffuX2CTSlicerLib.xray_nodes import load_xray_node, xray_file_for_worker
    import slicer.util

    geometry = BiplanarGeometry.preset("x2ct", volume_size=32, xray_size=64)
    sim = simulate_xrays(make_synthetic_ct(size=(40, 40, 40), spacing=(5.0, 5.0, 5.0), origin=(-100, -100, -100)),
                         geometry)
    films = simulate_films(sim, "processing-raw", seed=3, labels=False, collimation=False)
    names = write_film_files(tmp_path, films)
    dicom = tmp_path / names["ap"]["dicom_dx_film"]
    node = load_xray_node(slicer_logics.scene, dicom, "ap")
    shown = slicer.util.arrayFromVolume(node)[0].astype(np.float64)
    drr = sim.line_integrals[0].astype(np.float64)
    assert np.corrcoef(shown.ravel(), drr.ravel())[0, 1] > 0.95  # not inverted
    assert "LIN" in json.loads(node.GetAttribute("DiffuX2CT.XRayMetadata"))["encoding_path"]
    assert xray_file_for_worker(node, tmp_path, "ap") == str(dicom)
    assert json.loads(node.GetAttribute("DiffuX2CT.XRayMetadata"))["scatter_correction"].startswith("scatter-to-primary")

    # the logic shows a film as the run's reading options will read it (here: scatter removal off)
    from DiffuX2CTSlicerLib.logic import ReconstructionLogic, SamplingSettings

    settings = SamplingSettings(scatter_to_primary=0.0, pixel_spacing=(0.5, 0.5))
    assert settings.reading_options().scatter_to_primary == 0.0 and settings.reading_options().pixel_spacing_mm == (0.5, 0.5)
    assert settings.reading_options().log_units_per_decade is None
    assert SamplingSettings(log_units_per_decade=1000.0).reading_options().log_units_per_decade == 1000.0
    plain = ReconstructionLogic(slicer_logics, sys.executable).load_xray(dicom, "ap", settings)
    assert json.loads(plain.GetAttribute("DiffuX2CT.XRayMetadata"))["scatter_correction"] == "off"
    # an encoding per view: the lateral read as a display film, the AP by its tags
    mixed = SamplingSettings(xray_encoding={"ap": "auto", "lateral": "display"}).reading_options()
    assert mixed.encoding_for("lateral") == "display" and mixed.encoding_for("ap") == "auto"
