"""Image-quality metrics of a reconstructed CT against the ground truth (the paper's PSNR and SSIM).

PSNR and SSIM are computed with MONAI on volumes mapped to [0, 1] by the checkpoint's
:class:`~DiffuX2CTLib.io.intensity.CTIntensity` (data range 1), as in X2CT-GAN and DiffuX2CT;
MAE and RMSE are in HU on the clipped HU range.
"""

from __future__ import annotations

import numpy as np

from .io.intensity import CTIntensity


def volume_metrics(prediction_hu: np.ndarray, target_hu: np.ndarray, intensity: CTIntensity | None = None) -> dict[str, float]:
    """PSNR (dB), 3D SSIM, MAE (HU) and RMSE (HU) of two ``(D, H, W)`` HU arrays of equal shape."""
    import torch
    from monai.metrics import PSNRMetric, SSIMMetric

    if prediction_hu.shape != target_hu.shape or prediction_hu.ndim != 3:
        raise ValueError(f"need two (D, H, W) arrays of one shape, got {prediction_hu.shape} and {target_hu.shape}")
    intensity = intensity or CTIntensity()
    pred = (intensity.normalize(np.asarray(prediction_hu, np.float32)) + 1) / 2
    true = (intensity.normalize(np.asarray(target_hu, np.float32)) + 1) / 2
    p, t = (torch.from_numpy(np.ascontiguousarray(a))[None, None] for a in (pred, true))
    window = min(11, min(prediction_hu.shape) - (1 - min(prediction_hu.shape) % 2))
    ssim = SSIMMetric(spatial_dims=3, data_range=1.0, win_size=window)(p, t)
    psnr = PSNRMetric(max_val=1.0)(p, t)
    span = intensity.hu_max - intensity.hu_min
    diff = (pred - true) * span
    return {
        "psnr_db": float(psnr.mean()),
        "ssim": float(ssim.mean()),
        "mae_hu": float(np.abs(diff).mean()),
        "rmse_hu": float(np.sqrt((diff**2).mean())),
    }
