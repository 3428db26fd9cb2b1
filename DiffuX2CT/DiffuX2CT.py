"""DiffuX2CT: reconstruct a CT volume from an AP and a lateral radiograph (3D Slicer module).

The widget only wires the GUI (``Resources/UI/DiffuX2CT.ui``, bound to the parameter node with
``connectGui``) to :class:`DiffuX2CTLogic`. The logic lives in ``DiffuX2CTSlicerLib`` and runs
headless; the reconstruction itself runs in a background process (``python -m
DiffuX2CTLib.worker`` with Slicer's Python), followed by a timer, so the GUI stays responsive and
Apply becomes Cancel while it runs. Nothing heavy (torch, SimpleITK, numpy) is imported at file
scope.
"""

import logging
import os
from typing import Annotated, Optional

import qt
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

try:  # the MRML class of the node selectors; a stand-in when the module is imported outside Slicer
    from slicer import vtkMRMLScalarVolumeNode
except ImportError:  # pragma: no cover
    vtkMRMLScalarVolumeNode = object

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
SAMPLER_CHOICES = ("dpmsolver++-sde", "dpmsolver++", "ddim", "ddpm")
DEVICE_CHOICES = ("auto", "cuda", "cpu")
ENCODING_CHOICES = ("auto", "line-integral", "intensity", "display")
LATERAL_ENCODING_CHOICES = ("same", "auto", "line-integral", "intensity", "display")
POLL_INTERVAL_MS = 200


#
# DiffuX2CT
#
class DiffuX2CT(ScriptedLoadableModule):
    """Module description shown by Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DiffuX2CT")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Reconstruction")]
        self.parent.dependencies = []
        self.parent.contributors = ["DiffuX2CT developers"]
        self.parent.helpText = _(
            "Reconstruct a CT volume from an AP and a lateral radiograph with DiffuX2CT, a conditional 3D "
            "diffusion model (Liu et al., ECCV 2024). Load the two radiographs (or simulate them from a CT), "
            "choose a model and press Apply. The included demonstration model is NOT FOR CLINICAL USE."
        )
        self.parent.acknowledgementText = _(
            "DiffuX2CT: Liu X. et al., DiffuX2CT: Diffusion Learning to Reconstruct CT Images from Biplanar "
            "X-Rays, ECCV 2024."
        )


#
# Parameter node
#
@parameterNodeWrapper
class DiffuX2CTParameterNode:
    """The module's settings, saved with the scene.

    apVolume, lateralVolume: the radiographs (single-slice volumes).
    simulationCT: a CT to simulate both radiographs from.
    steps, sampler, numSamples, seed, device: sampling settings.
    xrayEncoding, lateralXrayEncoding, applyVOI, pixelSpacingMm, scatterToPrimary, logUnitsPerDecade:
        how real films are read (the lateral's encoding "same" as the AP's; 0 mm: from the file;
        scatter removed from films, 0 = off; the stored units per decade of exposure of LOG films,
        0 = estimated from a typical body).
    renderVolume, segmentBone: what to add to the scene after a run.
    reconstruction, groundTruth: the volumes to compare.
    """

    apVolume: vtkMRMLScalarVolumeNode
    lateralVolume: vtkMRMLScalarVolumeNode
    simulationCT: vtkMRMLScalarVolumeNode
    modelId: str = ""
    steps: Annotated[int, WithinRange(1, 1000)] = 25
    sampler: Annotated[str, Choice(list(SAMPLER_CHOICES))] = "dpmsolver++-sde"
    numSamples: Annotated[int, WithinRange(1, 16)] = 1
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
    device: Annotated[str, Choice(list(DEVICE_CHOICES))] = "auto"
    xrayEncoding: Annotated[str, Choice(list(ENCODING_CHOICES))] = "auto"
    lateralXrayEncoding: Annotated[str, Choice(list(LATERAL_ENCODING_CHOICES))] = "same"
    applyVOI: bool = False
    pixelSpacingMm: Annotated[float, WithinRange(0.0, 10.0)] = 0.0
    scatterToPrimary: Annotated[float, WithinRange(0.0, 0.95)] = 0.3
    logUnitsPerDecade: Annotated[float, WithinRange(0.0, 100000.0)] = 0.0
    renderVolume: bool = True
    segmentBone: bool = True
    reconstruction: vtkMRMLScalarVolumeNode
    groundTruth: vtkMRMLScalarVolumeNode


#
# Widget
#
class DiffuX2CTWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI wiring only; every scene operation is in :class:`DiffuX2CTLogic`."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[DiffuX2CTLogic] = None
        self._parameterNode: Optional[DiffuX2CTParameterNode] = None
        self._parameterNodeGuiTag = None
        self._timer = None
        self._lastOutput = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DiffuX2CT.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = DiffuX2CTLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPoll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        slicer.app.connect("aboutToQuit()", self.cleanup)

        self.ui.loadApButton.connect("clicked(bool)", lambda: self.onLoadXRay("ap"))
        self.ui.loadLateralButton.connect("clicked(bool)", lambda: self.onLoadXRay("lateral"))
        self.ui.simulateButton.connect("clicked(bool)", self.onSimulate)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.importCheckpointButton.connect("clicked(bool)", self.onImportCheckpoint)
        self.ui.deleteDownloadsButton.connect("clicked(bool)", self.onDeleteDownloads)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyOrCancel)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        for widget in (self.ui.stepsSpinBox, self.ui.numSamplesSpinBox):
            widget.connect("valueChanged(int)", lambda _value: self.updateEstimate())
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", lambda _index: self.updateEstimate())

        self.populateModels()
        self.initializeParameterNode()
        self.setRunning(False)

    # --- life cycle -------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Module closed or Slicer quitting: stop the worker, remove its files, drop observers."""
        if self._timer is not None:
            self._timer.stop()
        if self.logic is not None:
            self.logic.cleanup()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        if self.logic is not None and self.logic.running:
            self.logic.cleanup()  # the inputs are about to disappear: stop the run
            self._timer.stop()
            self.setRunning(False)
            self.setStatus(_("Reconstruction cancelled: the scene was closed."))
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Optional[DiffuX2CTParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            if self._parameterNode.modelId:
                index = self.ui.modelComboBox.findData(self._parameterNode.modelId)
                if index >= 0:
                    self.ui.modelComboBox.setCurrentIndex(index)
        self.updateEstimate()

    # --- inputs -----------------------------------------------------------------------------
    def onLoadXRay(self, view: str) -> None:
        from DiffuX2CTSlicerLib.xray_nodes import XRAY_FILE_FILTER

        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("Load {view} radiograph").format(
            view=view.upper() if view == "ap" else view), "", XRAY_FILE_FILTER)
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not load the radiograph."), waitCursor=True):
            node = self.logic.load_xray(path, view, self._parameterNode)
            if view == "ap":
                self._parameterNode.apVolume = node
            else:
                self._parameterNode.lateralVolume = node
            slicer.util.setSliceViewerLayers(background=node, fit=True)

    def onSimulate(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not simulate the radiographs."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            views = self.logic.simulate_from_ct(self._parameterNode.simulationCT, self.currentCheckpoint())
            self._parameterNode.apVolume = views.ap
            self._parameterNode.lateralVolume = views.lateral
            self._parameterNode.groundTruth = self._parameterNode.simulationCT
            self.setStatus(_("Simulated AP and lateral radiographs from {name}.").format(
                name=self._parameterNode.simulationCT.GetName()))

    # --- models -----------------------------------------------------------------------------
    def populateModels(self) -> None:
        combo = self.ui.modelComboBox
        combo.blockSignals(True)
        combo.clear()
        try:
            for entry in self.logic.catalog.entries():
                combo.addItem(entry.label, entry.id)
                combo.setItemData(combo.count - 1, entry.tooltip(), qt.Qt.ToolTipRole)
        except Exception as exc:  # a broken registry must not break the module
            logging.error(f"DiffuX2CT: cannot read the model list: {exc}")
            self.setStatus(_("Cannot read the model list: {error}").format(error=exc))
        finally:
            combo.blockSignals(False)
        self.onModelChanged(combo.currentIndex)

    def onModelChanged(self, index: int) -> None:
        modelId = self.ui.modelComboBox.itemData(index) if index >= 0 else None
        entry = self.logic.catalog.get(modelId) if modelId else None
        self.ui.modelInfoLabel.text = entry.tooltip() if entry is not None else _("No model selected.")
        if self._parameterNode and modelId:
            self._parameterNode.modelId = modelId
        self.ui.deleteDownloadsButton.toolTip = _("Delete downloaded and imported models ({size} MiB)").format(
            size=f"{self.logic.catalog.downloaded_size() / 2**20:.1f}")
        self.updateEstimate()

    def currentCheckpoint(self) -> str:
        modelId = self.ui.modelComboBox.currentData
        if not modelId:
            raise ValueError(_("Choose a model first."))
        progress = slicer.util.createProgressDialog(labelText=_("Preparing the model..."), maximum=100)
        try:
            def onProgress(done: int, total: int) -> None:
                progress.value = int(100 * done / total) if total else 0
                slicer.app.processEvents()

            return str(self.logic.catalog.path_for(modelId, progress=onProgress, cancel=lambda: progress.wasCanceled))
        finally:
            progress.close()

    def onImportCheckpoint(self) -> None:
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("Import a DiffuX2CT checkpoint"), "",
                                              _("DiffuX2CT checkpoints (*.safetensors)"))
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not import the checkpoint."), waitCursor=True):
            entry = self.logic.catalog.import_checkpoint(path)
            self.populateModels()
            self.ui.modelComboBox.setCurrentIndex(self.ui.modelComboBox.findData(entry.id))

    def onDeleteDownloads(self) -> None:
        size = self.logic.catalog.downloaded_size()
        if not slicer.util.confirmOkCancelDisplay(_("Delete all downloaded and imported DiffuX2CT models "
                                                    "({size} MiB)?").format(size=f"{size / 2**20:.1f}")):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not delete the models."), waitCursor=True):
            count, freed = self.logic.catalog.delete_downloaded_models()
            self.populateModels()
            self.setStatus(_("Deleted {count} model(s), {size} MiB freed.").format(count=count, size=f"{freed / 2**20:.1f}"))

    def updateEstimate(self) -> None:
        if not self._parameterNode or not self.ui.modelComboBox.currentData:
            self.ui.estimateLabel.text = ""
            return
        try:
            estimate = self.logic.estimate(self.ui.modelComboBox.currentData, self._parameterNode.steps,
                                           self._parameterNode.numSamples, self._parameterNode.device)
            self.ui.estimateLabel.text = estimate.text()
        except Exception as exc:
            self.ui.estimateLabel.text = _("No estimate: {error}").format(error=exc)

    # --- the run ----------------------------------------------------------------------------
    def setRunning(self, running: bool) -> None:
        """Apply becomes Cancel while the worker runs; inputs are locked."""
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.applyButton.toolTip = _("Stop the reconstruction") if running else _("Reconstruct the CT")
        for widget in (self.ui.inputsCollapsibleButton, self.ui.modelCollapsibleButton,
                       self.ui.samplingCollapsibleButton, self.ui.compareButton):
            widget.enabled = not running
        self.ui.progressBar.visible = running

    def setStatus(self, text: str) -> None:
        self.ui.statusLabel.text = text

    def appendLog(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def onApplyOrCancel(self) -> None:
        if self.logic.running:
            self.logic.cancel()
            self.setStatus(_("Cancelling..."))
            self.ui.applyButton.enabled = False
            return
        with slicer.util.tryWithErrorDisplay(_("Could not start the reconstruction."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            checkpoint = self.currentCheckpoint()
            self.ui.logTextEdit.clear()
            self.ui.progressBar.value = 0
            self.logic.startReconstruction(self._parameterNode, checkpoint, self.ui.modelComboBox.currentData,
                                           on_progress=self.onProgress, on_log=self.appendLog,
                                           on_finished=self.onFinished)
            for warning in self.logic.input_warnings:
                self.appendLog(f"Warning: {warning}")
            self.setRunning(True)
            self.setStatus(_("Reconstructing..."))
            self._timer.start()

    def onPoll(self) -> None:
        if self.logic.process is None:
            self._timer.stop()
            return
        self.logic.process.poll()

    def onProgress(self, i: int, n: int) -> None:
        self.ui.progressBar.maximum = n
        self.ui.progressBar.value = i
        self.setStatus(_("Sampling step {i} of {n}").format(i=i, n=n))

    def onFinished(self, result) -> None:
        from DiffuX2CTSlicerLib.worker_process import WorkerState

        self._timer.stop()
        self.ui.applyButton.enabled = True
        self.setRunning(False)
        if result.state is WorkerState.CANCELLED:
            self.logic.cleanup()
            self.setStatus(_("Reconstruction cancelled."))
            return
        if result.state is not WorkerState.SUCCEEDED:
            details = "\n".join(self.logic.process_log())
            self.logic.cleanup()
            self.setStatus(_("Reconstruction failed."))
            slicer.util.errorDisplay(result.error or _("The reconstruction failed."), detailedText=details)
            return
        with slicer.util.tryWithErrorDisplay(_("Could not load the reconstruction."), waitCursor=True):
            output = self.logic.load_result(result, volume_rendering=self._parameterNode.renderVolume,
                                            segmentation=self._parameterNode.segmentBone)
            self._parameterNode.reconstruction = output.volume
            seconds = output.details.get("seconds")
            self.setStatus(_("Done: {name} ({seconds} s).").format(name=output.volume.GetName(), seconds=seconds))
            if output.warnings:
                for warning in output.warnings:
                    self.appendLog(f"Warning: {warning}")
                slicer.util.warningDisplay("\n".join(output.warnings), windowTitle=_("DiffuX2CT warnings"))
            slicer.util.resetThreeDViews()

    # --- comparison -------------------------------------------------------------------------
    def onCompare(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not compare with the ground truth."), waitCursor=True):
            comparison, _views = self.logic.compare(self._parameterNode.reconstruction, self._parameterNode.groundTruth)
            self.ui.metricsTableView.setMRMLTableNode(comparison.table)
            slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutDual3DView)
            self.setStatus(_("MAE {mae:.0f} HU, PSNR {psnr:.2f} dB, SSIM {ssim:.3f}, bone Dice {dice:.3f}").format(
                mae=comparison.metrics["mae_hu"], psnr=comparison.metrics["psnr_db"],
                ssim=comparison.metrics["ssim"], dice=comparison.metrics["bone_dice"]))


#
# Logic
#
class DiffuX2CTLogic(ScriptedLoadableModuleLogic):
    """Slicer face of :class:`DiffuX2CTSlicerLib.logic.ReconstructionLogic` (headless, testable).

    Builds the reconstruction logic from the running application: the scene and module logics,
    PythonSlicer as the worker's interpreter, this folder on the worker's path (``DiffuX2CTLib``
    is installed beside the module) and the model catalogue of ``Resources/Models.json``.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._impl = None
        self._catalog = None

    def getParameterNode(self):
        return DiffuX2CTParameterNode(super().getParameterNode())

    @property
    def impl(self):
        if self._impl is None:
            import shutil
            import sys

            from DiffuX2CTSlicerLib.headless import slicer_logics
            from DiffuX2CTSlicerLib.logic import ReconstructionLogic

            python = shutil.which("PythonSlicer") or sys.executable
            self._impl = ReconstructionLogic(slicer_logics(), python, python_path=[MODULE_DIR])
        return self._impl

    @property
    def catalog(self):
        if self._catalog is None:
            from DiffuX2CTSlicerLib.model_catalog import ModelCatalog

            registry = os.path.join(MODULE_DIR, "Resources", "Models.json")
            self._catalog = ModelCatalog(registry if os.path.isfile(registry) else None)
        return self._catalog

    # the operations the widget uses
    @property
    def running(self) -> bool:
        return self._impl is not None and self._impl.running

    @property
    def process(self):
        return self._impl.process if self._impl is not None else None

    @property
    def input_warnings(self) -> list:
        return self.impl.input_warnings

    def process_log(self) -> list:
        process = self.process
        return list(process.log_lines) if process is not None else []

    def load_xray(self, path: str, view: str, parameterNode=None):
        """Load a film, shown as the worker will read it with the parameter node's reading options."""
        settings = self.samplingSettings(parameterNode) if parameterNode is not None else None
        return self.impl.load_xray(path, view, settings)

    def simulate_from_ct(self, ctNode, checkpoint: str):
        return self.impl.simulate_from_ct(ctNode, checkpoint)

    def estimate(self, modelId: str, steps: int, numSamples: int, device: str):
        from DiffuX2CTSlicerLib.estimate import estimate_for_entry

        return estimate_for_entry(self.catalog.get(modelId), steps=steps, num_samples=numSamples, device=device)

    def ensureDependencies(self) -> bool:
        """Install missing packages after the user agrees: torch through the PyTorch extension,
        the rest with pip. Returns False when something is still missing."""
        from DiffuX2CTSlicerLib import dependencies

        message = dependencies.describe_missing()
        if not message:
            return True
        if not slicer.util.confirmOkCancelDisplay(message, windowTitle=_("DiffuX2CT needs Python packages")):
            return False
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay(_("The PyTorch extension is missing. Install 'PyTorch' from the Extensions "
                                       "Manager, restart Slicer and try again."))
            return False
        return dependencies.install_missing(PyTorchUtils.PyTorchUtilsLogic(), slicer.util.pip_install,
                                            ask_confirmation=False)

    @staticmethod
    def samplingSettings(parameterNode):
        """The parameter node's sampling and reading settings."""
        from DiffuX2CTSlicerLib.logic import SamplingSettings

        spacing = parameterNode.pixelSpacingMm
        encoding = parameterNode.xrayEncoding
        if parameterNode.lateralXrayEncoding != "same":
            encoding = {"ap": encoding, "lateral": parameterNode.lateralXrayEncoding}
        return SamplingSettings(steps=parameterNode.steps, sampler=parameterNode.sampler,
                                num_samples=parameterNode.numSamples, seed=parameterNode.seed,
                                device=parameterNode.device, xray_encoding=encoding,
                                apply_voi=parameterNode.applyVOI,
                                pixel_spacing=(spacing, spacing) if spacing > 0 else None,
                                scatter_to_primary=parameterNode.scatterToPrimary,
                                log_units_per_decade=parameterNode.logUnitsPerDecade or None)

    def startReconstruction(self, parameterNode, checkpoint: str, modelId: str, **callbacks):
        return self.impl.start(parameterNode.apVolume, parameterNode.lateralVolume, checkpoint,
                               self.samplingSettings(parameterNode), model_id=modelId, **callbacks)

    def cancel(self) -> None:
        if self._impl is not None:
            self._impl.cancel()

    def load_result(self, result, **options):
        return self.impl.load_result(result, **options)

    def compare(self, reconstruction, groundTruth):
        return self.impl.compare(reconstruction, groundTruth)

    def cleanup(self) -> None:
        if self._impl is not None:
            self._impl.cleanup()


#
# Test (runs inside Slicer: Reload and Test)
#
class DiffuX2CTTest(ScriptedLoadableModuleTest):
    """The whole chain inside a real Slicer: simulate from a CT, reconstruct, compare."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_reconstruction_chain()

    def test_reconstruction_chain(self) -> None:
        import numpy as np
        import SimpleITK as sitk

        from DiffuX2CTSlicerLib.volumes import add_volume_node
        from DiffuX2CTSlicerLib.worker_process import WorkerState

        self.delayDisplay("Making a phantom CT")
        z, y, x = np.mgrid[-1:1:48j, -1:1:64j, -1:1:64j]
        hu = np.where(x**2 / 0.8 + y**2 / 0.5 + z**2 < 0.9, 40.0, -1000.0).astype(np.float32)
        hu[(x - 0.1) ** 2 + (y - 0.3) ** 2 < 0.02] = 700.0
        image = sitk.GetImageFromArray(hu)
        image.SetSpacing((5.0, 5.0, 6.0))
        ct = add_volume_node(slicer.mrmlScene, image, "phantom CT")

        logic = DiffuX2CTLogic()
        checkpoint = str(logic.catalog.path_for(logic.catalog.default_entry()))
        views = logic.simulate_from_ct(ct, checkpoint)
        parameters = logic.getParameterNode()
        parameters.apVolume, parameters.lateralVolume, parameters.steps = views.ap, views.lateral, 5
        parameters.device = "cpu"
        logic.startReconstruction(parameters, checkpoint, logic.catalog.default_entry().id)
        self.delayDisplay("Reconstructing")
        state = logic.process.wait(timeout=300)
        self.assertEqual(state, WorkerState.SUCCEEDED, logic.process_log()[-5:])
        output = logic.load_result(logic.process.result)
        self.assertIsNotNone(output.segmentation)
        comparison, _views = logic.compare(output.volume, ct)
        self.assertGreater(comparison.table.GetNumberOfRows(), 3)
        logic.cleanup()
        self.delayDisplay("Test passed")
