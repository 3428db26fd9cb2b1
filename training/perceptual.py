"""LPIPS and FID on 2D CT slices, only from weight files the user supplies (safetensors).

Nothing is downloaded and nothing is unpickled. Both metrics use one AlexNet feature stack laid
out as torchvision's ``alexnet().features`` so that its weights convert directly (load them with
torchvision, then ``safetensors.torch.save_file`` the ``features.*`` tensors)::

    features.0   Conv2d(3, 64, 11, stride 4, pad 2)    -> ReLU (tap 1) -> MaxPool(3, 2)
    features.3   Conv2d(64, 192, 5, pad 2)             -> ReLU (tap 2) -> MaxPool(3, 2)
    features.6   Conv2d(192, 384, 3, pad 1)            -> ReLU (tap 3)
    features.8   Conv2d(384, 256, 3, pad 1)            -> ReLU (tap 4)
    features.10  Conv2d(256, 256, 3, pad 1)            -> ReLU (tap 5)

each with ``.weight`` and ``.bias``. LPIPS (Zhang et al. 2018, "alex" variant) adds five linear
heads ``lin0.weight`` ... ``lin4.weight`` of shapes ``(1, C, 1, 1)`` for C = 64, 192, 384, 256,
256 (the LPIPS package names them ``linK.model.1.weight``; both names are accepted).

Slices: every axial, coronal and sagittal slice of a volume, windowed to [0, 1] by the
checkpoint's HU window, replicated to 3 channels, ImageNet-normalised (identical to LPIPS'
scaling layer) and enlarged bilinearly to at least 64 pixels per side (AlexNet needs it).

* LPIPS per case: mean over all slice pairs (0 for identical volumes).
* FID over a split: Fréchet distance (eigen-decomposition, :func:`frechet_distance`) between the 256-d globally average-pooled tap-5
  features of all predicted and all true slices. This is FID with **AlexNet** features, not
  Inception-v3: values are comparable only between runs of this tool with the same weight file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from DiffuX2CTLib.errors import InputError
from DiffuX2CTLib.io.intensity import CTIntensity

#: ``(name, out, in, kernel, stride, padding)`` of torchvision's AlexNet convolutions.
ALEXNET_CONVS = (
    ("features.0", 64, 3, 11, 4, 2),
    ("features.3", 192, 64, 5, 1, 2),
    ("features.6", 384, 192, 3, 1, 1),
    ("features.8", 256, 384, 3, 1, 1),
    ("features.10", 256, 256, 3, 1, 1),
)
TAP_CHANNELS = tuple(c[1] for c in ALEXNET_CONVS)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_SIDE_PX = 64
SKIP_MESSAGE = ("LPIPS/FID skipped: pass --lpips-weights/--fid-weights (safetensors: AlexNet 'features.*' "
                "[+ LPIPS 'lin0..lin4'] weights you supply; nothing is downloaded)")


def alexnet_shapes() -> dict[str, tuple[int, ...]]:
    """Expected tensor shapes of the feature stack, by name."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, out, inp, k, _, _ in ALEXNET_CONVS:
        shapes[f"{name}.weight"] = (out, inp, k, k)
        shapes[f"{name}.bias"] = (out,)
    return shapes


def lpips_shapes() -> dict[str, tuple[int, ...]]:
    """Expected shapes of the LPIPS heads, by name."""
    return {f"lin{i}.weight": (1, c, 1, 1) for i, c in enumerate(TAP_CHANNELS)}


def read_weights(path: str | os.PathLike, expected: dict[str, tuple[int, ...]],
                 aliases: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """Read the ``expected`` tensors from a safetensors file, checking names and shapes.

    Raises :class:`InputError` naming the file and the first missing or misshapen tensor.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "weights file not found")
    if p.suffix.lower() != ".safetensors":
        raise InputError(p, "perceptual-metric weights must be a .safetensors file (pickles are never loaded)")
    with open(p, "rb") as f:
        head = f.read(2)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise InputError(p, "is a zip/pickle file, not safetensors; it is never unpickled")
    try:
        state = load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(p, f"cannot read safetensors weights ({exc})") from exc
    out: dict[str, torch.Tensor] = {}
    for name, shape in expected.items():
        tensor = state.get(name)
        if tensor is None and aliases and aliases.get(name) in state:
            tensor = state[aliases[name]]
        if tensor is None:
            raise InputError(p, f"missing tensor {name!r} (expected shape {shape})")
        if tuple(tensor.shape) != shape:
            raise InputError(p, f"tensor {name!r} has shape {tuple(tensor.shape)}, expected {shape}")
        out[name] = tensor.float()
    return out


class AlexNetFeatures(torch.nn.Module):
    """torchvision's AlexNet ``features`` (without the last max-pool), returning the five ReLU taps."""

    def __init__(self, weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.convs = torch.nn.ModuleList()
        for name, out, inp, k, stride, pad in ALEXNET_CONVS:
            conv = torch.nn.Conv2d(inp, out, k, stride=stride, padding=pad)
            with torch.no_grad():
                conv.weight.copy_(weights[f"{name}.weight"])
                conv.bias.copy_(weights[f"{name}.bias"])
            self.convs.append(conv)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.eval()

    def forward(self, unit: torch.Tensor) -> list[torch.Tensor]:
        """Taps of ``(N, 1, H, W)`` slices in [0, 1] (replicated to RGB, ImageNet-normalised)."""
        x = (unit.expand(-1, 3, -1, -1) - self.mean) / self.std
        taps = []
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            taps.append(x)
            if i in (0, 1):
                x = F.max_pool2d(x, 3, 2)
        return taps


def _normalize_channels(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (torch.sqrt((x * x).sum(dim=1, keepdim=True)) + eps)


def volume_slices(hu: np.ndarray, intensity: CTIntensity) -> torch.Tensor:
    """All axial, coronal and sagittal slices of a ``(D, H, W)`` HU volume as ``(N, 1, h, w)`` in
    [0, 1]; the three directions are enlarged to a common square size >= 64 px."""
    unit = torch.from_numpy(((intensity.normalize(np.asarray(hu, np.float32)) + 1.0) / 2.0).astype(np.float32))
    side = max(MIN_SIDE_PX, *unit.shape)
    parts = []
    for axis in range(3):
        s = unit.movedim(axis, 0)[:, None]
        if tuple(s.shape[2:]) != (side, side):
            s = F.interpolate(s, size=(side, side), mode="bilinear", align_corners=False)
        parts.append(s)
    return torch.cat(parts)


@dataclass
class PerceptualMetrics:
    """LPIPS (per case) and FID features (pooled over a split), from user-supplied weights.

    Attributes:
        intensity: HU window mapped to [0, 1] before the network.
        lpips_net / lpips_heads: AlexNet and LPIPS heads, or ``None`` without ``--lpips-weights``.
        fid_net: AlexNet for FID features, or ``None`` without ``--fid-weights``.
        batch_slices: slices per forward pass.
    """

    intensity: CTIntensity
    lpips_net: AlexNetFeatures | None = None
    lpips_heads: list[torch.Tensor] = field(default_factory=list)
    fid_net: AlexNetFeatures | None = None
    batch_slices: int = 64
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _fid_pred: list[torch.Tensor] = field(default_factory=list)
    _fid_true: list[torch.Tensor] = field(default_factory=list)

    @classmethod
    def from_files(cls, intensity: CTIntensity, lpips_weights: str | os.PathLike | None = None,
                   fid_weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> "PerceptualMetrics":
        dev = torch.device(device)
        metrics = cls(intensity=intensity, device=dev)
        if lpips_weights is not None:
            heads = lpips_shapes()
            aliases = {f"lin{i}.weight": f"lin{i}.model.1.weight" for i in range(len(TAP_CHANNELS))}
            w = read_weights(lpips_weights, {**alexnet_shapes(), **heads}, aliases)
            metrics.lpips_net = AlexNetFeatures(w).to(dev)
            metrics.lpips_heads = [w[k].to(dev) for k in heads]
        if fid_weights is not None:
            metrics.fid_net = AlexNetFeatures(read_weights(fid_weights, alexnet_shapes())).to(dev)
        return metrics

    @property
    def enabled(self) -> bool:
        return self.lpips_net is not None or self.fid_net is not None

    @torch.no_grad()
    def lpips(self, pred_hu: np.ndarray, target_hu: np.ndarray) -> float:
        """Mean LPIPS (dimensionless, >= 0) over all slice pairs of two ``(D, H, W)`` HU volumes."""
        if self.lpips_net is None:
            raise RuntimeError("LPIPS needs --lpips-weights")
        a, b = volume_slices(pred_hu, self.intensity), volume_slices(target_hu, self.intensity)
        total, count = 0.0, 0
        for i in range(0, a.shape[0], self.batch_slices):
            fa = self.lpips_net(a[i:i + self.batch_slices].to(self.device))
            fb = self.lpips_net(b[i:i + self.batch_slices].to(self.device))
            dist = torch.zeros(fa[0].shape[0], device=self.device)
            for x, y, head in zip(fa, fb, self.lpips_heads):
                d = (_normalize_channels(x) - _normalize_channels(y)) ** 2
                dist = dist + F.conv2d(d, head).mean(dim=(1, 2, 3))
            total += float(dist.sum())
            count += dist.shape[0]
        return total / count

    @torch.no_grad()
    def _pooled(self, hu: np.ndarray) -> torch.Tensor:
        assert self.fid_net is not None
        s = volume_slices(hu, self.intensity)
        feats = [self.fid_net(s[i:i + self.batch_slices].to(self.device))[-1].mean(dim=(2, 3)).double().cpu()
                 for i in range(0, s.shape[0], self.batch_slices)]
        return torch.cat(feats)

    def add_fid_case(self, pred_hu: np.ndarray, target_hu: np.ndarray) -> None:
        """Accumulate the pooled slice features of one case for :meth:`fid`."""
        if self.fid_net is None:
            raise RuntimeError("FID needs --fid-weights")
        self._fid_pred.append(self._pooled(pred_hu))
        self._fid_true.append(self._pooled(target_hu))

    def fid(self) -> float:
        """Fréchet distance (AlexNet features) between all accumulated predicted and true slices."""
        if not self._fid_pred:
            return float("nan")
        return frechet_distance(torch.cat(self._fid_pred).numpy(), torch.cat(self._fid_true).numpy())


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to feature rows ``a`` (N, F) and ``b`` (M, F).

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))``, where the last trace is the
    sum of the square roots of the eigenvalues of the symmetric ``S_a^(1/2) S_b S_a^(1/2)``
    (``eigh``; stable when the covariances are singular, i.e. fewer samples than features).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two (N >= 2, F) feature arrays, got {a.shape} and {b.shape}")
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(sa)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root_a @ sb @ root_a)
    tr_covmean = float(np.sqrt(np.clip(inner, 0, None)).sum())
    diff = a.mean(0) - b.mean(0)
    return max(0.0, float(diff @ diff + np.trace(sa) + np.trace(sb) - 2.0 * tr_covmean))


def case_values(metrics: PerceptualMetrics | None, pred_hu: np.ndarray, target_hu: Any) -> dict[str, float]:
    """``{"lpips": ...}`` for one case (and FID features accumulated); empty without weights."""
    out: dict[str, float] = {}
    if metrics is None:
        return out
    if metrics.lpips_net is not None:
        out["lpips"] = metrics.lpips(pred_hu, target_hu)
    if metrics.fid_net is not None:
        metrics.add_fid_case(pred_hu, target_hu)
    return out


__all__ = ["ALEXNET_CONVS", "SKIP_MESSAGE", "AlexNetFeatures", "PerceptualMetrics", "alexnet_shapes",
           "case_values", "frechet_distance", "lpips_shapes", "read_weights", "volume_slices"]
