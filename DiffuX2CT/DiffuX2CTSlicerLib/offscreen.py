"""Headless offscreen rendering of a scene's 3D views to PNG (never used inside Slicer).

Inside Slicer the application's 3D views render the scene. Without the application, this module
does what a Slicer 3D view does: a renderer and an offscreen render window watched by Slicer's
3D displayable managers (camera, view (background, box, axis labels), models, segmentations,
volume rendering), set to a ``vtkMRMLViewNode``; one frame is rendered and read back.

OpenGL without a display (Linux): the ``vtk`` wheel picks the render-window class at run time.
With no X server it first tries X (``bad X server connection`` warning), then falls back to EGL
(``vtkEGLRenderWindow``, Mesa's llvmpipe software rasteriser when there is no GPU; it ray-casts
volumes fine, about a second per 400x300 frame on two cores). :func:`prepare_gl_environment` sets
``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow`` when neither ``DISPLAY`` nor ``WAYLAND_DISPLAY``
is set, so VTK goes straight to EGL (needs ``libEGL.so.1`` plus a Mesa or vendor EGL driver; a
machine without any, e.g. no ``libEGL`` and no ``libOSMesa``, makes VTK *segfault* on the first
render rather than raise). That is why :func:`gl_backend_available` probes in a subprocess, and
callers (tests) check it before rendering anything in-process.

What else it takes: the displayable managers need a render-window interactor (a
``vtkGenericRenderWindowInteractor`` that never starts an event loop will do), and the
camera displayable manager must be registered before the view displayable manager (the latter
looks the former up). A private ``vtkMRMLDisplayableManagerFactory`` is used rather than the
process-wide ``vtkMRMLThreeDViewDisplayableManagerFactory`` singleton, so that each render is
tied to its own scene's application logic.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Sequence

#: Displayable managers of a Slicer 3D view used for the pictures (order matters: camera first).
THREE_D_DISPLAYABLE_MANAGERS = (
    "vtkMRMLCameraDisplayableManager",
    "vtkMRMLViewDisplayableManager",
    "vtkMRMLModelDisplayableManager",
    "vtkMRMLSegmentationsDisplayableManager3D",
    "vtkMRMLVolumeRenderingDisplayableManager",
)

#: Colour (RGB) of the bar between the two halves of a side-by-side picture.
SEPARATOR_RGB = (32, 32, 32)

_PROBE_TIMEOUT_S = 60.0
_PROBE_SCRIPT = """
import vtk
window = vtk.vtkRenderWindow()
window.SetOffScreenRendering(1)
window.SetSize(16, 16)
renderer = vtk.vtkRenderer()
renderer.SetBackground(1.0, 0.0, 0.0)
window.AddRenderer(renderer)
window.Render()
grab = vtk.vtkWindowToImageFilter()
grab.SetInput(window)
grab.ReadFrontBufferOff()
grab.Update()
pixel = [grab.GetOutput().GetScalarComponentAsDouble(8, 8, 0, c) for c in range(3)]
assert pixel[0] > 200 and pixel[1] < 50 and pixel[2] < 50, pixel
print("GL-OK", window.GetClassName())
"""

_gl_probe_result: bool | None = None
_gl_probe_detail: str = ""


def prepare_gl_environment() -> None:
    """Choose EGL for VTK's OpenGL windows when there is no display (see the module docstring).

    Leaves an explicit ``VTK_DEFAULT_OPENGL_WINDOW`` alone. Takes effect for render windows
    created afterwards (VTK reads the variable when it creates one).
    """
    if os.environ.get("VTK_DEFAULT_OPENGL_WINDOW"):
        return
    has_display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if sys.platform.startswith("linux") and not has_display:
        os.environ["VTK_DEFAULT_OPENGL_WINDOW"] = "vtkEGLRenderWindow"


def gl_backend_available(refresh: bool = False) -> bool:
    """Whether an offscreen VTK render window can render here; probed once in a subprocess (a
    missing backend crashes the process that tries it), then cached. :func:`gl_probe_detail`
    says what the probe found."""
    global _gl_probe_result, _gl_probe_detail
    if _gl_probe_result is not None and not refresh:
        return _gl_probe_result
    prepare_gl_environment()
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE_SCRIPT],
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_S,
            env=dict(os.environ),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        _gl_probe_result, _gl_probe_detail = False, f"GL probe did not finish: {error}"
        return False
    ok = done.returncode == 0 and "GL-OK" in done.stdout
    if ok:
        _gl_probe_detail = done.stdout.strip().splitlines()[-1]
    else:
        import re

        text = re.sub(r"\x1b\[[0-9;]*m", "", done.stderr or done.stdout)
        tail = " | ".join(line.strip() for line in text.strip().splitlines()[-3:])[-500:]
        if done.returncode < 0:
            status = f"was killed by signal {-done.returncode}"
        else:
            status = f"exited with status {done.returncode}"
        _gl_probe_detail = f"GL probe {status}: {tail}"
    _gl_probe_result = ok
    return ok


def gl_probe_detail() -> str:
    """What the last :func:`gl_backend_available` probe found (window class, or why it failed)."""
    return _gl_probe_detail


def _view_node(logics, view_node):
    if isinstance(view_node, str):
        node = logics.scene.GetNodeByID(view_node)
        if node is None:
            raise ValueError(f"no view node {view_node!r} in the scene")
        return node
    return view_node


def render_view_to_array(logics, view_node, size: Sequence[int] = (640, 480)):
    """Render a 3D view node of ``logics.scene`` offscreen; an (height, width, 3) uint8 array,
    top row first. ``view_node``: a ``vtkMRMLViewNode`` or its ID."""
    import numpy as np
    import slicer
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    view_node = _view_node(logics, view_node)
    width, height = (int(s) for s in size)
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {tuple(size)}")
    prepare_gl_environment()

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetMultiSamples(0)
    window.SetSize(width, height)
    renderer = vtk.vtkRenderer()
    window.AddRenderer(renderer)
    interactor = vtk.vtkGenericRenderWindowInteractor()  # needed by the displayable managers
    interactor.SetRenderWindow(window)

    factory = slicer.vtkMRMLDisplayableManagerFactory()
    factory.SetMRMLApplicationLogic(logics.application)
    for name in THREE_D_DISPLAYABLE_MANAGERS:
        if factory.IsDisplayableManagerRegistered(name):
            continue
        if not factory.RegisterDisplayableManager(name):
            raise RuntimeError(f"could not register displayable manager {name}")
    group = factory.InstantiateDisplayableManagers(renderer)
    if group is None:
        raise RuntimeError("could not instantiate the 3D displayable managers")
    try:
        group.SetMRMLDisplayableNode(view_node)
        renderer.ResetCameraClippingRange()
        window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(window)
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()
        grab.Update()
        image = grab.GetOutput()
        w, h, _ = image.GetDimensions()
        pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, -1)[:, :, :3]
        return np.ascontiguousarray(pixels[::-1])  # VTK's first row is the bottom one
    finally:
        group.SetMRMLDisplayableNode(None)
        del group
        window.Finalize()


def _write_png_atomically(pixels, path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name beside the target (same file system, so os.replace is atomic); opened with
    # open() rather than mkstemp so that the file gets the usual umask permissions, not 0600
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "xb") as stream:
            Image.fromarray(pixels, "RGB").save(stream, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def render_view_to_png(logics, view_node, path, size: Sequence[int] = (640, 480)) -> Path:
    """Render a 3D view node (or its ID) of the scene to a PNG file of ``size`` (width, height),
    written atomically (temporary file in the same folder, then renamed). Returns the path."""
    return _write_png_atomically(render_view_to_array(logics, view_node, size), path)


def side_by_side_array(
    left, right, separator: int = 4, separator_rgb: Sequence[int] = SEPARATOR_RGB
):
    """Two (h, w, 3) pictures next to each other with a ``separator``-pixel bar between them
    (the shorter one is padded at the bottom with the separator colour)."""
    import numpy as np

    height = max(left.shape[0], right.shape[0])
    colour = np.asarray(separator_rgb, dtype=np.uint8)

    def padded(image):
        out = np.empty((height, image.shape[1], 3), dtype=np.uint8)
        out[:] = colour
        out[: image.shape[0]] = image[:, :, :3]
        return out

    bar = np.empty((height, max(0, int(separator)), 3), dtype=np.uint8)
    bar[:] = colour
    return np.concatenate([padded(left), bar, padded(right)], axis=1)


def render_side_by_side_png(
    logics, layout_result, path, size: Sequence[int] = (480, 400), separator: int = 4
) -> Path:
    """Render the two views of a :func:`~DiffuX2CTSlicerLib.rendering.setup_side_by_side` result
    (reconstruction left, ground truth right), each ``size`` (width, height), into one PNG with a
    thin separator; written atomically. Returns the path."""
    view_ids = getattr(layout_result, "view_node_ids", layout_result)
    if len(view_ids) != 2:
        raise ValueError(f"expected two view nodes, got {len(view_ids)}")
    left = render_view_to_array(logics, view_ids[0], size)
    right = render_view_to_array(logics, view_ids[1], size)
    return _write_png_atomically(side_by_side_array(left, right, separator), path)
