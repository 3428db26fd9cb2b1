"""Per-case evaluation metrics of a predicted CT against the ground truth, on HU arrays.

Every function takes ``(D, H, W)`` numpy arrays in HU (prediction, target) of one shape. Ranges:

* ``psnr_db`` -- PSNR on the true HU range: both volumes clipped to the intensity window
  ``[hu_min, hu_max]`` (default ``[-1024, 2048]``), data range ``hu_max - hu_min`` (3072 HU).
* ``psnr_x2ct_db`` -- X2CT-GAN's convention (see :func:`psnr_x2ct`): peak 4095 on a 2500-wide
  scale, which reads about 4.3 dB higher than a PSNR with the true range would.
* ``ssim3d`` / ``ssim2d_slices`` -- SSIM on the window mapped to [0, 1] (data range 1).
* ``mae_hu`` / ``rmse_hu`` -- on the window-clipped HU.
* ``bone_dice`` -- Dice of ``HU >= threshold`` (default 200 HU).
* ``proj_mae`` / ``proj_rel_l2`` -- consistency with the input radiographs.
* ``unc_pearson`` / ``unc_spearman`` / ``coverage_2sigma`` -- quality of the sample spread.

PSNR of identical volumes is infinite in theory; it is reported as :data:`PSNR_CAP_DB`
(100 dB) so that means over cases and JSON stay finite.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from DiffuX2CTLib.io.intensity import CTIntensity
from DiffuX2CTLib.metrics import BONE_THRESHOLD_HU, bone_dice

#: PSNR reported when the MSE is 0 (identical volumes) or would exceed it: 100 dB.
PSNR_CAP_DB = 100.0
#: X2CT-GAN's CT scale: HU + 1024 clipped to [0, 2500]; PSNR peak value 4095.
X2CT_SHIFT_HU = 1024.0
X2CT_RANGE = (0.0, 2500.0)
X2CT_PEAK = 4095.0
#: Body voxels for the uncertainty metrics: target above this HU.
BODY_THRESHOLD_HU = -900.0

PSNR_DATA_RANGE_TEXT = "window [{lo:g}, {hi:g}] HU ({span:g}): both volumes clipped to the window"
PSNR_X2CT_TEXT = ("X2CT-GAN convention: HU + 1024 clipped to [0, 2500] (HU in [-1024, 1476]), MSE on that scale, "
                  "peak 4095 (reads 20*log10(4095/2500) = 4.29 dB higher than a PSNR with the 2500 range)")


def _check(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if p.shape != t.shape or p.ndim != 3:
        raise ValueError(f"need two (D, H, W) arrays of one shape, got {p.shape} and {t.shape}")
    return p, t


def _psnr(mse: float, peak: float) -> float:
    if mse <= 0:
        return PSNR_CAP_DB
    return float(min(PSNR_CAP_DB, 10.0 * math.log10(peak * peak / mse)))


def _clip_window(a: np.ndarray, intensity: CTIntensity) -> np.ndarray:
    return np.clip(a, intensity.hu_min, intensity.hu_max)


def psnr_window(pred_hu: np.ndarray, target_hu: np.ndarray, intensity: CTIntensity | None = None) -> float:
    """PSNR (dB) on the true HU range: both clipped to the window, peak ``hu_max - hu_min``."""
    intensity = intensity or CTIntensity()
    p, t = _check(pred_hu, target_hu)
    mse = float(np.mean((_clip_window(p, intensity) - _clip_window(t, intensity)) ** 2))
    return _psnr(mse, intensity.hu_max - intensity.hu_min)


def psnr_x2ct(pred_hu: np.ndarray, target_hu: np.ndarray) -> float:
    """PSNR (dB) as X2CT-GAN reports it (and papers comparing with it, DiffuX2CT included).

    Mapping: ``v = clip(HU + 1024, 0, 2500)`` (i.e. HU clipped to [-1024, 1476]); MSE on ``v``;
    ``PSNR = 10 log10(4095^2 / MSE)``. The peak 4095 (12-bit) exceeds the 2500 actually spanned,
    which inflates the value by ``20 log10(4095/2500) = 4.29 dB`` over a PSNR with the true range.
    """
    p, t = _check(pred_hu, target_hu)
    lo, hi = X2CT_RANGE
    vp = np.clip(p + X2CT_SHIFT_HU, lo, hi)
    vt = np.clip(t + X2CT_SHIFT_HU, lo, hi)
    return _psnr(float(np.mean((vp - vt) ** 2)), X2CT_PEAK)


def to_unit(hu: np.ndarray, intensity: CTIntensity) -> np.ndarray:
    """HU -> [0, 1] on the window (clipped), float32."""
    return ((intensity.normalize(np.asarray(hu, np.float32)) + 1.0) / 2.0).astype(np.float32)


def ssim3d(pred_hu: np.ndarray, target_hu: np.ndarray, intensity: CTIntensity | None = None) -> float:
    """3D SSIM (MONAI, Gaussian window <= 11) on the window mapped to [0, 1]; as
    :func:`DiffuX2CTLib.metrics.volume_metrics` computes it."""
    from DiffuX2CTLib.metrics import volume_metrics

    _check(pred_hu, target_hu)
    return float(volume_metrics(np.asarray(pred_hu, np.float32), np.asarray(target_hu, np.float32),
                                intensity or CTIntensity())["ssim"])


def _win(shape: tuple[int, ...]) -> int:
    """The largest odd SSIM window <= 11 that fits ``shape``."""
    n = min(shape)
    return max(1, min(11, n if n % 2 else n - 1))


def ssim2d_slices(pred_hu: np.ndarray, target_hu: np.ndarray, intensity: CTIntensity | None = None) -> float:
    """X2CT-GAN's slice SSIM: for the axial, coronal and sagittal directions the mean 2D SSIM of
    all slices, then the mean of the three; on the window mapped to [0, 1] (MONAI
    ``SSIMMetric(spatial_dims=2)``, Gaussian window <= 11, slices batched)."""
    import torch
    from monai.metrics import SSIMMetric

    intensity = intensity or CTIntensity()
    p, t = _check(pred_hu, target_hu)
    pu, tu = torch.from_numpy(to_unit(p, intensity)), torch.from_numpy(to_unit(t, intensity))
    means = []
    for axis in range(3):
        a = pu.movedim(axis, 0)[:, None].contiguous()
        b = tu.movedim(axis, 0)[:, None].contiguous()
        metric = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=_win(tuple(a.shape[2:])))
        means.append(float(metric(a, b).mean()))
    return float(np.mean(means))


def mae_rmse_hu(pred_hu: np.ndarray, target_hu: np.ndarray, intensity: CTIntensity | None = None) -> tuple[float, float]:
    """``(MAE, RMSE)`` in HU of the window-clipped volumes."""
    intensity = intensity or CTIntensity()
    p, t = _check(pred_hu, target_hu)
    d = _clip_window(p, intensity) - _clip_window(t, intensity)
    return float(np.mean(np.abs(d))), float(np.sqrt(np.mean(d * d)))


def projection_metrics(pred_hu: np.ndarray, input_line_integrals: np.ndarray, projector: Any,
                       normalization: Any | None = None) -> dict[str, float]:
    """Consistency of the prediction with the radiographs the model was conditioned on.

    ``proj_mae``: mean absolute difference (in the [-1, 1] radiograph range, so at most 2) of the
    normalised DRRs of the prediction and the normalised input views; ``proj_rel_l2``:
    ``||L_pred - L_in|| / ||L_in||`` of the line integrals (dimensionless). ``projector`` is a
    :class:`~DiffuX2CTLib.drr.DRRProjector` of the checkpoint geometry; ``normalization`` defaults
    to the projector's. The prediction is projected as given (not clipped to the window).
    """
    import torch

    norm = normalization if normalization is not None else projector.normalization
    volume = torch.as_tensor(np.asarray(pred_hu, np.float32))[None, None]  # projected on the CPU
    with torch.no_grad():
        ours = projector(volume)[0].double().cpu().numpy()
    given = np.asarray(input_line_integrals, np.float64)
    if ours.shape != given.shape:
        raise ValueError(f"input line integrals have shape {given.shape}, the projector gives {ours.shape}")
    denom = float(np.linalg.norm(given))
    rel = float(np.linalg.norm(ours - given) / denom) if denom > 0 else float("nan")
    mae = float(np.mean(np.abs(norm.normalize_numpy(ours) - norm.normalize_numpy(given))))
    return {"proj_mae": mae, "proj_rel_l2": rel}


def uncertainty_metrics(pred_hu: np.ndarray, target_hu: np.ndarray, std_hu: np.ndarray,
                        intensity: CTIntensity | None = None,
                        body_threshold_hu: float = BODY_THRESHOLD_HU) -> dict[str, float]:
    """How well the per-voxel sample std (HU) predicts the error of the sample mean ``pred_hu``.

    Over body voxels (``target > body_threshold_hu``, -900 HU): Pearson and Spearman correlation
    of ``std`` with ``|pred - target|`` (window-clipped HU; NaN when either is constant), and
    ``coverage_2sigma``, the fraction of voxels with ``|error| <= 2 std`` (0.95 for a calibrated
    Gaussian spread).
    """
    from scipy.stats import spearmanr

    intensity = intensity or CTIntensity()
    p, t = _check(pred_hu, target_hu)
    s = np.asarray(std_hu, np.float64)
    if s.shape != p.shape:
        raise ValueError(f"std has shape {s.shape}, expected {p.shape}")
    body = t > body_threshold_hu
    if not body.any():
        return {"unc_pearson": float("nan"), "unc_spearman": float("nan"), "coverage_2sigma": float("nan")}
    err = np.abs(_clip_window(p, intensity) - _clip_window(t, intensity))[body]
    sd = s[body]
    coverage = float(np.mean(err <= 2.0 * sd))
    if err.size < 2 or np.ptp(err) == 0 or np.ptp(sd) == 0:
        return {"unc_pearson": float("nan"), "unc_spearman": float("nan"), "coverage_2sigma": coverage}
    pearson = float(np.corrcoef(sd, err)[0, 1])
    spearman = float(spearmanr(sd, err).statistic)
    return {"unc_pearson": pearson, "unc_spearman": spearman, "coverage_2sigma": coverage}


def case_metrics(pred_hu: np.ndarray, target_hu: np.ndarray, *, intensity: CTIntensity,
                 projector: Any | None = None, input_line_integrals: np.ndarray | None = None,
                 normalization: Any | None = None, std_hu: np.ndarray | None = None,
                 bone_threshold_hu: float = BONE_THRESHOLD_HU) -> dict[str, float]:
    """All metrics of one case (see the module docstring for keys and ranges).

    Projection metrics need ``projector`` and ``input_line_integrals``; uncertainty metrics need
    ``std_hu`` (with ``pred_hu`` the mean of the samples).
    """
    mae, rmse = mae_rmse_hu(pred_hu, target_hu, intensity)
    out = {
        "psnr_db": psnr_window(pred_hu, target_hu, intensity),
        "psnr_x2ct_db": psnr_x2ct(pred_hu, target_hu),
        "ssim3d": ssim3d(pred_hu, target_hu, intensity),
        "ssim2d_slices": ssim2d_slices(pred_hu, target_hu, intensity),
        "mae_hu": mae,
        "rmse_hu": rmse,
        "bone_dice": bone_dice(pred_hu, target_hu, bone_threshold_hu),
    }
    if projector is not None and input_line_integrals is not None:
        out.update(projection_metrics(pred_hu, input_line_integrals, projector, normalization))
    if std_hu is not None:
        out.update(uncertainty_metrics(pred_hu, target_hu, std_hu, intensity))
    return out


__all__ = [
    "PSNR_CAP_DB", "X2CT_PEAK", "X2CT_RANGE", "X2CT_SHIFT_HU", "BODY_THRESHOLD_HU", "BONE_THRESHOLD_HU",
    "PSNR_DATA_RANGE_TEXT", "PSNR_X2CT_TEXT", "psnr_window", "psnr_x2ct", "to_unit", "ssim3d", "ssim2d_slices",
    "mae_rmse_hu", "bone_dice", "projection_metrics", "uncertainty_metrics", "case_metrics",
]
