"""Image-quality metrics of a reconstructed CT against the ground truth (the paper's PSNR and SSIM).

PSNR and SSIM are computed with MONAI on volumes mapped to [0, 1] by the checkpoint's
:class:`~DiffuX2CTLib.io.intensity.CTIntensity` (data range 1), as in X2CT-GAN and DiffuX2CT;
MAE and RMSE are in HU on the clipped HU range; bone Dice compares the masks ``HU >= 200``.
"""

from __future__ import annotations

import numpy as np

from .io.intensity import CTIntensity

#: Default bone threshold of :func:`bone_dice` (HU).
BONE_THRESHOLD_HU = 200.0


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


def bone_dice(pred_hu: np.ndarray, target_hu: np.ndarray, threshold_hu: float = BONE_THRESHOLD_HU) -> float:
    """Dice of the bone masks ``HU >= threshold_hu`` of two HU arrays of one shape (1.0 when both are empty).

    200 HU by default: cancellous bone is about 200-400 HU and cortical bone higher (to about
    2000 HU), while soft tissue and contrast-free organs stay below ~100 HU. At the model's
    coarse voxels (2.5 mm at 128^3) partial volume lowers the HU of thin bone, so a moderate
    threshold keeps ribs and vertebrae in the mask without picking up soft tissue.
    """
    p, t = np.asarray(pred_hu), np.asarray(target_hu)
    if p.shape != t.shape:
        raise ValueError(f"need two arrays of one shape, got {p.shape} and {t.shape}")
    a, b = p >= threshold_hu, t >= threshold_hu
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(a, b).sum() / total)
