"""The module's logic, free of any GUI: inputs, the background run, outputs and the comparison.

:class:`ReconstructionLogic` is what the Slicer module's ``DiffuX2CTLogic`` is made of, and what
the headless tests drive. Everything it needs is passed in: the scene and module logics
(:class:`~.headless.SlicerLogics`), the Python that runs the worker (PythonSlicer in Slicer,
``sys.executable`` elsewhere), the folders the worker needs on its path and the model catalogue.

A run: :meth:`ReconstructionLogic.start` checks the inputs and writes the radiographs the worker
cannot read from their source files into the run's temporary folder, then starts a
:class:`~.worker_process.WorkerProcess`; the caller polls it (a timer in Slicer, ``wait`` in a
script). On success :meth:`ReconstructionLogic.load_result` puts the CT (and the standard
deviation) in the scene exactly where the worker placed it, adds the volume rendering and the
bone segmentation and centres the slice views; the temporary folder is then removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .worker_process import WorkerProcess, WorkerRequest, WorkerResult, WorkerState
from .xray_nodes import isocenter_of, views_look_swapped, xray_file_for_worker

#: Attribute marking a node made by a reconstruction (value: the model id).
RECONSTRUCTION_ATTRIBUTE = "DiffuX2CT.Reconstruction"


@dataclass
class SamplingSettings:
    """How to sample: steps, sampler (``None`` = the worker's default), samples, seed, device;
    and how to read real films: encoding (``None``/``"auto"``: from the DICOM tags; or one per
    view, ``{"ap": "auto", "lateral": "display"}``), whether to
    apply a DICOM VOI window, the pixel spacing ``(row, col)`` mm for films without one, the
    scatter-to-primary ratio removed from films (``None`` = the worker's default), and the stored
    units per decade of exposure of LOG films (``None``: estimated from a typical body)."""

    steps: int = 25
    sampler: str | None = None
    num_samples: int = 1
    seed: int = 0
    device: str = "auto"
    eta: float = 0.0
    xray_encoding: str | Mapping[str, str] | None = None
    apply_voi: bool = False
    pixel_spacing: tuple[float, float] | None = None
    scatter_to_primary: float | None = None
    log_units_per_decade: float | None = None

    def reading_options(self) -> Any:
        """The :class:`~DiffuX2CTLib.io.radiograph.RadiographOptions` the worker will read the films with."""
        from DiffuX2CTLib.io.radiograph import RadiographOptions

        extra = {} if self.scatter_to_primary is None else {"scatter_to_primary": self.scatter_to_primary}
        return RadiographOptions(xray_encoding=self.xray_encoding, apply_voi=self.apply_voi,
                                 pixel_spacing_mm=self.pixel_spacing,
                                 log_units_per_decade=self.log_units_per_decade, **extra)


@dataclass
class ReconstructionOutput:
    """Nodes a finished run added to the scene."""

    volume: Any
    std: Any | None = None
    segmentation: Any | None = None
    volume_rendering: Any | None = None
    details: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class ReconstructionLogic:
    """Scene operations of the DiffuX2CT module (see the module docstring).

    Args:
        logics: the scene and module logics.
        python_executable: interpreter for the worker.
        python_path: folders the worker needs on ``PYTHONPATH`` (the one holding ``DiffuX2CTLib``).
        process_factory: makes the :class:`WorkerProcess` (tests may pass a variant).
    """

    def __init__(self, logics: Any, python_executable: str, python_path: Sequence[str] = (),
                 process_factory: Callable[..., WorkerProcess] = WorkerProcess) -> None:
        self.logics = logics
        self.python_executable = python_executable
        self.python_path = list(python_path)
        self.process_factory = process_factory
        self.process: WorkerProcess | None = None
        self.model_id: str | None = None
        self.input_warnings: list[str] = []
        self._inputs_dir: str | None = None  # radiographs written for the worker (removed in cleanup)

    # --- inputs -----------------------------------------------------------------------------
    def load_xray(self, path: str | os.PathLike, view: str, settings: SamplingSettings | None = None) -> Any:
        """Read a radiograph file into the scene (:func:`.xray_nodes.load_xray_node`), shown as the
        worker will read it with ``settings``' reading options (default: the worker's defaults)."""
        from .xray_nodes import load_xray_node

        return load_xray_node(self.logics.scene, path, view,
                              options=settings.reading_options() if settings is not None else None)

    def simulate_from_ct(self, ct_node: Any, checkpoint: str | os.PathLike) -> Any:
        """AP and lateral DRRs of ``ct_node`` in the geometry of ``checkpoint`` (no torch model load)."""
        from DiffuX2CTLib.checkpoint import read_checkpoint_info

        from .xray_nodes import simulate_views

        if ct_node is None:
            raise ValueError("choose the CT to simulate radiographs from")
        info = read_checkpoint_info(checkpoint)
        return simulate_views(self.logics.scene, ct_node, info.geometry)

    def check_inputs(self, ap_node: Any, lateral_node: Any) -> list[str]:
        """Refuse what cannot work (not 2D, missing); return warnings for what looks wrong."""
        from .xray_nodes import SPACING_KNOWN_ATTRIBUTE, check_radiograph_node

        check_radiograph_node(ap_node, "AP")
        check_radiograph_node(lateral_node, "lateral")
        if ap_node is lateral_node:
            from DiffuX2CTLib.errors import InputError

            raise InputError(None, "the same image is selected as AP and as lateral radiograph")
        warnings = []
        if views_look_swapped(ap_node, lateral_node):
            warnings.append("The AP and lateral radiographs look swapped: the body is narrower on the AP image "
                            "than on the lateral one. Check the view selectors.")
        for node, view in ((ap_node, "AP"), (lateral_node, "lateral")):
            if node.GetAttribute(SPACING_KNOWN_ATTRIBUTE) == "0":
                warnings.append(f"The {view} radiograph {node.GetName()!r} has no pixel spacing; it is stretched to "
                                "the model's detector.")
        return warnings

    # --- the run ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.state.active

    def start(self, ap_node: Any, lateral_node: Any, checkpoint: str | os.PathLike, settings: SamplingSettings,
              *, on_progress: Callable[[int, int], Any] | None = None, on_log: Callable[[str], Any] | None = None,
              on_finished: Callable[[WorkerResult], Any] | None = None, model_id: str | None = None) -> WorkerProcess:
        """Check the inputs and start the worker; returns the process (state RUNNING)."""
        if self.running:
            raise RuntimeError("a reconstruction is already running; cancel it first")
        self.cleanup()
        self.input_warnings = self.check_inputs(ap_node, lateral_node)
        process = self.process_factory(self.python_executable, python_path=self.python_path,
                                       on_progress=on_progress, on_log=on_log, on_finished=on_finished)
        try:
            inputs_dir = self._inputs_dir = tempfile.mkdtemp(prefix="DiffuX2CT-inputs-")
            request = WorkerRequest(
                ap=xray_file_for_worker(ap_node, inputs_dir, "ap"),
                lateral=xray_file_for_worker(lateral_node, inputs_dir, "lateral"),
                checkpoint=os.fspath(checkpoint), steps=settings.steps, sampler=settings.sampler,
                seed=settings.seed, device=settings.device, num_samples=settings.num_samples, eta=settings.eta,
                isocenter=isocenter_of(ap_node), xray_encoding=settings.xray_encoding,
                apply_voi=settings.apply_voi, pixel_spacing=settings.pixel_spacing,
                scatter_to_primary=settings.scatter_to_primary,
                log_units_per_decade=settings.log_units_per_decade,
            )
            process.start(request)
        except BaseException:
            process.cleanup()
            self._remove_inputs()
            raise
        self.process, self.model_id = process, model_id
        return process

    def cancel(self) -> None:
        """Ask the running worker to stop (it is killed after a grace period)."""
        if self.process is not None:
            self.process.cancel()

    def load_result(self, result: WorkerResult, name: str = "DiffuX2CT reconstruction", *,
                    volume_rendering: bool = True, segmentation: bool = True,
                    preset: str | None = None) -> ReconstructionOutput:
        """Put a SUCCEEDED run's outputs in the scene, then remove the run's temporary files."""
        from .segmentation import bone_segmentation
        from .volumes import load_ct_node

        if result.state is not WorkerState.SUCCEEDED or result.output is None:
            raise RuntimeError(result.error or f"the reconstruction did not succeed ({result.state.name.lower()})")
        scene = self.logics.scene
        try:
            volume = load_ct_node(scene, result.output, name)
            volume.RemoveAttribute("DiffuX2CT.SourcePath")  # the file is temporary
            volume.SetAttribute(RECONSTRUCTION_ATTRIBUTE, self.model_id or "")
            std = None
            if result.std is not None:
                std = load_ct_node(scene, result.std, f"{volume.GetName()} std")
                std.RemoveAttribute("DiffuX2CT.SourcePath")
                std.SetAttribute(RECONSTRUCTION_ATTRIBUTE, self.model_id or "")
            _ct_window(volume)
        finally:
            self.cleanup()
        output = ReconstructionOutput(volume, std, details=dict(result.details),
                                      warnings=list(self.input_warnings) + [str(w) for w in result.warnings])
        if segmentation:
            output.segmentation = bone_segmentation(self.logics, volume)
        if volume_rendering:
            from .rendering import DEFAULT_CT_PRESET, show_volume_rendering

            output.volume_rendering = show_volume_rendering(self.logics, volume, preset or DEFAULT_CT_PRESET)
        show_in_slice_views(self.logics, volume)
        return output

    def compare(self, reconstruction: Any, ground_truth: Any, intensity: Any = None, preset: str | None = None):
        """Metrics table, difference volume and the side-by-side renderings with linked cameras."""
        from .comparison import compare_with_ground_truth
        from .rendering import DEFAULT_CT_PRESET, setup_side_by_side

        if reconstruction is None or ground_truth is None:
            raise ValueError("choose a reconstruction and the real CT to compare it with")
        comparison = compare_with_ground_truth(self.logics.scene, reconstruction, ground_truth, intensity)
        views = setup_side_by_side(self.logics, reconstruction, comparison.resampled_ground_truth,
                                   preset=preset or DEFAULT_CT_PRESET)
        return comparison, views

    def cleanup(self) -> None:
        """Stop a running worker and remove its temporary files (scene close, module exit)."""
        if self.process is not None:
            self.process.cleanup()
            self.process = None
        self._remove_inputs()

    def _remove_inputs(self) -> None:
        if self._inputs_dir is not None:
            shutil.rmtree(self._inputs_dir, ignore_errors=True)
            self._inputs_dir = None


def _ct_window(volume: Any) -> None:
    display = volume.GetDisplayNode()
    if display is not None:
        display.AutoWindowLevelOff()
        display.SetWindowLevel(1500.0, 300.0)  # a bone-and-soft-tissue window (HU)


def show_in_slice_views(logics: Any, volume: Any) -> None:
    """Show ``volume`` as the background of every slice view and centre the views on it."""
    application = logics.application
    selection = application.GetSelectionNode() if application is not None else None
    if selection is not None:
        selection.SetActiveVolumeID(volume.GetID())
        application.PropagateVolumeSelection(0)
    scene = logics.scene
    bounds = [0.0] * 6
    volume.GetRASBounds(bounds)
    center = [(bounds[2 * i] + bounds[2 * i + 1]) / 2 for i in range(3)]
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        slice_node = scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
        slice_node.JumpSliceByCentering(*center)
