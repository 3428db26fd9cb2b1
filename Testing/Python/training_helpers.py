"""Helpers shared by the training-stack tests: a tiny prepared cache and a tiny run config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from conftest import make_synthetic_ct


def make_tiny_cache(root: Path, size: int = 16, cases: int = 6, supersample: int = 2) -> Path:
    """A prepared cache of synthetic phantoms on the x2ct geometry at ``size``^3 (4 train, 1 val, 1 test)."""
    import torch

    from DiffuX2CTLib.geometry import BiplanarGeometry
    from DiffuX2CTLib.io.ct import body_center_lps, to_model_grid
    from training.cache import CacheManifest, CaseRecord, write_case
    from training.render import RadiographRenderer

    geometry = BiplanarGeometry.preset("x2ct", volume_size=size, xray_size=size)
    renderer = RadiographRenderer(geometry, supersample)
    records, splits = [], {}
    for i in range(cases):
        ct = make_synthetic_ct(size=(40, 36, 30), spacing=(6.0, 6.0, 7.0), origin=(-120.0, -100.0, -100.0), seed=i)
        center = body_center_lps(ct)
        model_ct = to_model_grid(ct, geometry, center_lps=center)
        volume = torch.from_numpy(sitk.GetArrayFromImage(model_ct))[None, None]
        lines = renderer.line_integrals(volume)[0].numpy().astype(np.float32)
        record = CaseRecord(case_id=f"phantom{i}", group=f"phantom{i}", dataset="folder", source="synthetic",
                            geometry_hash=geometry.hash, center_lps=center, xray_supersample=supersample)
        write_case(root, record, model_ct, lines, geometry)
        records.append(record)
        splits[record.case_id] = "train" if i < cases - 2 else ("val" if i == cases - 2 else "test")
    CacheManifest(geometry, records, splits, xray_supersample=supersample).save(root)
    return root


def tiny_config_text(cache: Path, run_dir: Path, num_workers: int = 0, **train: object) -> str:
    """YAML of a tiny diffusion run on ``cache`` (16^3, NetworkConfig.tiny(), one thread)."""
    settings = {"max_steps": 12, "log_every": 1, "val_every": 0, "checkpoint_every": 4, "keep_last": 10,
                "threads": 1, "device": "cpu"}
    settings.update(train)
    train_yaml = ", ".join(f"{k}: {v}" for k, v in settings.items())
    return (
        "name: tiny\n"
        f"run_dir: {run_dir}\n"
        "geometry: {preset: x2ct, volume_size: 16, xray_size: 16}\n"
        "network: {preset: tiny}\n"
        "diffusion: {beta_schedule: cosine, prediction_type: v_prediction}\n"
        f"data: {{cache: {cache}, batch_size: 4, num_workers: {num_workers}, val_cases: 1, xray_supersample: 2}}\n"
        "optim: {lr: 2.0e-3, warmup_steps: 2}\n"
        "ema: {decay: 0.9}\n"
        f"train: {{{train_yaml}}}\n"
    )
