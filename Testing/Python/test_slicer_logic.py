"""The module's logic end to end, headless, against Slicer's real MRML core: simulate radiographs
from a CT node, reconstruct through the background worker with the committed demo model, load the
result where the worker placed it, segment, render, compare; and Cancel, leaving nothing behind."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("slicer", reason="slicer-core wheel not installed")

ROOT = Path(__file__).resolve().parents[2]


def phantom_ct() -> sitk.Image:
    """A 320 x 320 x 240 mm body phantom (5 mm voxels), off-centre, HU: air, tissue, a bone rod."""
    z, y, x = np.mgrid[-1:1:48j, -1:1:64j, -1:1:64j]
    hu = np.full(x.shape, -1000.0, dtype=np.float32)
    body = x**2 / 0.7 + y**2 / 0.35 + z**2 / 1.2 < 1.0
    hu[body] = 40.0
    hu[body & ((x - 0.05) ** 2 + (y - 0.25) ** 2 < 0.01)] = 900.0  # a spine-like rod
    hu[body & ((x + 0.35) ** 2 + y**2 / 0.5 < 0.06)] = -800.0  # a lung-like cavity
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((5.0, 5.0, 5.0))
    image.SetOrigin((-140.0, 60.0, -380.0))
    return image


@pytest.fixture()
def logic(slicer_logics):
    from DiffuX2CTSlicerLib.logic import ReconstructionLogic

    logic = ReconstructionLogic(slicer_logics, sys.executable, python_path=[str(ROOT)])
    yield logic
    logic.cleanup()


@pytest.fixture(scope="module")
def demo_checkpoint() -> str:
    from DiffuX2CTSlicerLib.model_catalog import ModelCatalog

    catalog = ModelCatalog(ROOT / "Resources" / "Models.json")
    return str(catalog.path_for(catalog.default_entry()))


def _volume_nodes(scene) -> set[str]:
    return {scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode").GetID()
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))}


def test_reconstruction_chain_places_segments_renders_and_compares(logic, slicer_logics, demo_checkpoint, tmp_path):
    from DiffuX2CTLib.checkpoint import read_checkpoint_info
    from DiffuX2CTSlicerLib.logic import SamplingSettings
    from DiffuX2CTSlicerLib.offscreen import gl_backend_available, render_side_by_side_png
    from DiffuX2CTSlicerLib.volumes import add_volume_node
    from DiffuX2CTSlicerLib.worker_process import WorkerState

    scene = slicer_logics.scene
    ct = add_volume_node(scene, phantom_ct(), "phantom CT")
    views = logic.simulate_from_ct(ct, demo_checkpoint)
    info = read_checkpoint_info(demo_checkpoint)
    assert views.ap.GetImageData().GetDimensions() == (256, 256, 1)  # display resolution, same physical detector
    rows_mm = info.geometry.detector_shape[0] * info.geometry.detector_spacing_mm[0]
    assert views.ap.GetSpacing()[1] * 256 == pytest.approx(rows_mm)

    progress, finished = [], []
    process = logic.start(views.ap, views.lateral, demo_checkpoint, SamplingSettings(steps=4, device="cpu"),
                          on_progress=lambda i, n: progress.append((i, n)), on_finished=finished.append,
                          model_id="demo")
    work_dir = process.work_dir
    assert process.wait(timeout=240) is WorkerState.SUCCEEDED, list(process.log_lines)[-5:]
    assert progress[-1] == (4, 4) and [i for i, _ in progress] == sorted(i for i, _ in progress)
    output = logic.load_result(finished[0])
    # temporary files are gone once the result is in the scene
    assert not Path(work_dir).exists() and logic.process is None

    # the reconstruction sits where the worker put it: centred on the simulated CT's isocentre
    volume = output.volume
    assert volume.GetImageData().GetDimensions() == tuple(reversed(info.geometry.volume_shape))
    bounds = [0.0] * 6
    volume.GetRASBounds(bounds)
    centre_ras = np.array([(bounds[2 * i] + bounds[2 * i + 1]) / 2 for i in range(3)])
    lps = np.array(views.isocenter_lps)
    np.testing.assert_allclose(centre_ras, [-lps[0], -lps[1], lps[2]], atol=1e-3)
    np.testing.assert_allclose(volume.GetSpacing(), info.geometry.volume_spacing_mm[::-1], atol=1e-6)
    assert volume.GetAttribute("DiffuX2CT.Reconstruction") == "demo"
    hu = __import__("slicer").util.arrayFromVolume(volume)
    assert hu.min() >= -1025 and hu.max() <= 3072 and hu.std() > 50  # a CT in HU, not noise in [-1, 1]

    # bone segmentation with a closed surface, and the volume rendering
    segment_id = output.segmentation.GetSegmentation().GetNthSegmentID(0)
    assert output.segmentation.GetClosedSurfaceInternalRepresentation(segment_id) is not None
    assert output.volume_rendering is not None and output.volume_rendering.GetVisibility()
    # the slice views show the result
    assert slicer_logics.application.GetSelectionNode().GetActiveVolumeID() == volume.GetID()

    # ground-truth comparison: the real CT resampled into the reconstruction's frame
    comparison, side_by_side = logic.compare(volume, ct)
    assert comparison.table.GetNumberOfRows() == 5
    assert comparison.resampled_ground_truth.GetImageData().GetDimensions() == volume.GetImageData().GetDimensions()
    assert comparison.metrics["mae_hu"] < 400  # the demo model knows air from body
    if gl_backend_available():
        png = render_side_by_side_png(slicer_logics, side_by_side, tmp_path / "comparison.png", size=(200, 160))
        assert png.stat().st_size > 1000


def test_cancel_leaves_no_process_no_file_no_node(logic, slicer_logics, demo_checkpoint):
    from DiffuX2CTSlicerLib.logic import SamplingSettings
    from DiffuX2CTSlicerLib.volumes import add_volume_node
    from DiffuX2CTSlicerLib.worker_process import WorkerState

    scene = slicer_logics.scene
    views = logic.simulate_from_ct(add_volume_node(scene, phantom_ct(), "phantom CT"), demo_checkpoint)
    nodes_before = _volume_nodes(scene)
    process = logic.start(views.ap, views.lateral, demo_checkpoint, SamplingSettings(steps=1000, device="cpu"))
    inputs_dir, work_dir, pid = logic._inputs_dir, process.work_dir, process.pid
    assert Path(inputs_dir, "ap.nrrd").is_file()  # simulated views are written for the worker
    while process.progress is None:
        assert process.poll() is WorkerState.RUNNING
        process.wait(timeout=0.2)
    logic.cancel()
    assert process.wait(timeout=60) is WorkerState.CANCELLED
    assert process.result.output is None
    logic.cleanup()
    assert not Path(work_dir).exists() and not Path(inputs_dir).exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert _volume_nodes(scene) == nodes_before


def test_bad_inputs_are_refused_before_any_process(logic, slicer_logics, demo_checkpoint):
    from DiffuX2CTLib.errors import InputError
    from DiffuX2CTSlicerLib.logic import SamplingSettings
    from DiffuX2CTSlicerLib.volumes import add_volume_node

    ct = add_volume_node(slicer_logics.scene, phantom_ct(), "phantom CT")
    views = logic.simulate_from_ct(ct, demo_checkpoint)
    with pytest.raises(InputError, match="not a 2D image"):
        logic.start(ct, views.lateral, demo_checkpoint, SamplingSettings())
    with pytest.raises(InputError, match="same image"):
        logic.start(views.ap, views.ap, demo_checkpoint, SamplingSettings())
    assert logic.process is None and logic._inputs_dir is None
    # swapped views are run, with a warning
    assert any("swapped" in w for w in logic.check_inputs(views.lateral, views.ap))
    assert not any("swapped" in w for w in logic.check_inputs(views.ap, views.lateral))


def test_uncertainty_volume_and_a_forced_gpu_without_one(logic, slicer_logics, demo_checkpoint):
    """Two samples give the standard-deviation volume on the CT's grid; forcing CUDA on a machine
    without a GPU fails with one sentence, and nothing is added to the scene."""
    import torch

    from DiffuX2CTSlicerLib.logic import SamplingSettings
    from DiffuX2CTSlicerLib.volumes import add_volume_node
    from DiffuX2CTSlicerLib.worker_process import WorkerState

    scene = slicer_logics.scene
    views = logic.simulate_from_ct(add_volume_node(scene, phantom_ct(), "phantom CT"), demo_checkpoint)
    process = logic.start(views.ap, views.lateral, demo_checkpoint, SamplingSettings(steps=2, num_samples=2, device="cpu"))
    assert process.wait(timeout=240) is WorkerState.SUCCEEDED
    output = logic.load_result(process.result, segmentation=False, volume_rendering=False)
    assert output.std is not None
    assert output.std.GetImageData().GetDimensions() == output.volume.GetImageData().GetDimensions()
    np.testing.assert_allclose(output.std.GetOrigin(), output.volume.GetOrigin())
    std = __import__("slicer").util.arrayFromVolume(output.std)
    assert std.min() >= 0 and std.max() > 0

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    nodes = _volume_nodes(scene)
    process = logic.start(views.ap, views.lateral, demo_checkpoint, SamplingSettings(steps=2, device="cuda"))
    assert process.wait(timeout=120) is WorkerState.FAILED
    result = process.result
    assert result.exit_code == 2 and "cuda" in result.error.lower() and result.error.count(".") >= 1
    assert "\n" not in result.error
    logic.cleanup()
    assert _volume_nodes(scene) == nodes
