"""A Slicer scene with its module logics, built without the Slicer application.

Inside Slicer the scene is ``slicer.mrmlScene`` and each logic is ``slicer.modules.X.logic()``;
:func:`slicer_logics` collects those. Outside Slicer (tests, scripts, the README pictures)
:func:`build_headless_slicer` creates the same objects from Slicer's MRML core (the
``slicer-core`` wheel), in the way the Slicer application wires them up at start-up: an application
logic with colour, slice and view logics, then each module logic given the application logic and
the scene.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class SlicerLogics:
    """The scene and the module logics the DiffuX2CT layer uses (duck-typed VTK objects)."""

    scene: Any
    application: Any
    volumes: Any
    volume_rendering: Any
    segmentations: Any
    tables: Any | None = None


def slicer_logics() -> SlicerLogics:
    """The running Slicer application's scene and logics (only inside Slicer)."""
    import slicer

    return SlicerLogics(
        scene=slicer.mrmlScene,
        application=slicer.app.applicationLogic(),
        volumes=slicer.modules.volumes.logic(),
        volume_rendering=slicer.modules.volumerendering.logic(),
        segmentations=slicer.modules.segmentations.logic(),
        tables=slicer.modules.tables.logic(),
    )


def build_headless_slicer(presets_dir: str | os.PathLike) -> SlicerLogics:
    """A new scene with volumes, volume-rendering, segmentations and tables logics.

    ``presets_dir``: a folder holding Slicer's volume-rendering ``presets.xml`` (the wheel ships
    no share data); it is set with ``SetModuleShareDirectory`` before the logic gets the scene,
    which is when the logic reads its presets.
    """
    import slicer
    import vtk

    presets = os.path.join(os.fspath(presets_dir), "presets.xml")
    if not os.path.isfile(presets):
        raise FileNotFoundError(f"{presets}: volume-rendering presets file not found")
    scene = slicer.vtkMRMLScene()
    application = slicer.vtkSlicerApplicationLogic()
    application.SetMRMLScene(scene)
    application.GetColorLogic().SetMRMLScene(scene)
    application.GetColorLogic().AddDefaultColorNodes()
    application.SetSliceLogics(vtk.vtkCollection())
    application.SetViewLogics(vtk.vtkCollection())
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)

    def module_logic(cls, share_dir: str | None = None):
        logic = cls()
        logic.SetMRMLApplicationLogic(application)
        if share_dir is not None:
            logic.SetModuleShareDirectory(share_dir)
        logic.SetMRMLScene(scene)
        return logic

    subject_hierarchy = module_logic(slicer.vtkSlicerSubjectHierarchyModuleLogic)
    logics = SlicerLogics(
        scene=scene,
        application=application,
        volumes=module_logic(slicer.vtkSlicerVolumesLogic),
        volume_rendering=module_logic(slicer.vtkSlicerVolumeRenderingLogic, os.fspath(presets_dir)),
        segmentations=module_logic(slicer.vtkSlicerSegmentationsModuleLogic),
        tables=module_logic(slicer.vtkSlicerTablesLogic),
    )
    # keep the helper logics alive as long as the scene object (they observe it)
    logics._keep_alive = (subject_hierarchy,)  # type: ignore[attr-defined]
    application.SetModuleLogic("Volumes", logics.volumes)
    application.SetModuleLogic("VolumeRendering", logics.volume_rendering)
    application.SetModuleLogic("Segmentations", logics.segmentations)
    application.SetModuleLogic("Tables", logics.tables)
    application.SetModuleLogic("SubjectHierarchy", subject_hierarchy)
    return logics
