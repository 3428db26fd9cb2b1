"""Training and validation volumes from the prepared cache, with on-the-fly augmentation.

Volumes are HU tensors ``(1, D, H, W)`` (axes S, P, L) on the cache's model grid. Reading is a
MONAI :class:`~monai.data.CacheDataset` of a deterministic load transform (the volumes stay in
memory after the first epoch); the random part runs after it, seeded per sample from the item
``(case_index, epoch, position)`` that :class:`~training.sampler.StreamSampler` yields, so the
same sample gets the same augmentation in any worker, process or resumed run. Radiographs are
not read here: the trainer renders them from the augmented volume (``training.render``), which
keeps the X-rays consistent with the volume by construction.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform, RandAffine

from DiffuX2CTLib.io.ct import AIR_HU

from .cache import CaseRecord, read_case_volume
from .config import AugmentConfig
from .objective import sample_seed


class LoadCaseVolumed(MapTransform):
    """``{"cache": dir, "record": CaseRecord dict}`` -> adds ``"volume"``: float32 ``(1, D, H, W)`` HU."""

    def __init__(self) -> None:
        super().__init__(keys=["record"])

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        record = CaseRecord.from_dict(data["record"])
        volume = read_case_volume(data["cache"], record)
        return {**data, "volume": torch.from_numpy(np.maximum(volume, AIR_HU))[None]}


def _plain(x: Any) -> torch.Tensor:
    """A MONAI MetaTensor (or any tensor) as a plain ``torch.Tensor``."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


class VolumeAugmenter:
    """Random affine (rotation, isotropic scaling, translation) and density variation of a HU volume.

    The affine is MONAI's :class:`~monai.transforms.RandAffine` (bilinear) applied to
    ``HU - AIR_HU`` so that the zero padding it adds outside the volume is air. Density:
    ``hu' = (hu + 1000)(1 + a) - 1000`` for voxels above -1000 HU, ``|a| <= intensity``.
    """

    def __init__(self, config: AugmentConfig, voxel_mm: Sequence[float]) -> None:
        self.config = config
        rot = math.radians(config.rotate_deg)
        shift_vox = [config.shift_mm / float(s) for s in voxel_mm]  # (D, H, W) axes
        self.affine = RandAffine(
            prob=1.0, rotate_range=(rot, rot, rot), scale_range=(config.scale,) * 3,
            translate_range=tuple(shift_vox), mode="bilinear", padding_mode="zeros",
        )

    def __call__(self, volume: torch.Tensor, seed: int) -> torch.Tensor:
        """``volume`` (1, D, H, W) HU -> augmented copy; deterministic for a given ``seed``."""
        rng = np.random.RandomState(seed % (2**32))
        out = volume
        if rng.uniform() < self.config.prob and (self.config.rotate_deg or self.config.scale or self.config.shift_mm):
            self.affine.set_random_state(seed=int(rng.randint(0, 2**31 - 1)))
            shifted = self.affine(out - AIR_HU, randomize=True)
            out = _plain(shifted).float() + AIR_HU
        if self.config.intensity > 0:
            a = float(rng.uniform(-self.config.intensity, self.config.intensity))
            out = torch.where(out > -1000.0, (out + 1000.0) * (1.0 + a) - 1000.0, out)
        return out.clamp_min(AIR_HU).contiguous()


class TrainingVolumes(torch.utils.data.Dataset):
    """Items for ``(case_index, epoch, position)`` keys: ``{"volume", "seed", "index"}``.

    ``volume`` is the (augmented) HU volume (1, D, H, W); ``seed`` the sample's seed for the
    diffusion timestep and noise; ``index`` the case index in ``records``.

    Args:
        cache_dir: the prepared cache.
        records: the cases to draw from.
        voxel_mm: model-grid voxel size (D, H, W axes), for the translation range.
        augment: augmentation settings (``enabled: false`` gives the cached volumes).
        seed: the run seed.
        cache_rate: fraction of volumes kept in memory by MONAI's CacheDataset.
    """

    def __init__(self, cache_dir: str | Path, records: Sequence[CaseRecord], voxel_mm: Sequence[float],
                 augment: AugmentConfig, seed: int, cache_rate: float = 1.0) -> None:
        from monai.data import CacheDataset

        items = [{"cache": str(cache_dir), "record": r.to_dict()} for r in records]
        self.base = CacheDataset(items, transform=LoadCaseVolumed(), cache_rate=cache_rate, num_workers=0,
                                 progress=False, copy_cache=False)
        self.augmenter = VolumeAugmenter(augment, voxel_mm) if augment.enabled else None
        self.seed = int(seed)
        self.case_ids = [r.case_id for r in records]

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        index, epoch, position = key
        volume = self.base[index]["volume"]
        if self.augmenter is not None:
            volume = self.augmenter(volume, sample_seed(self.seed, "augment", epoch, index, position))
        return {"volume": _plain(volume).float(), "seed": sample_seed(self.seed, "noise", position),
                "index": index}


def load_volumes(cache_dir: str | Path, records: Sequence[CaseRecord]) -> torch.Tensor:
    """The cached HU volumes of ``records`` stacked as ``(N, 1, D, H, W)`` float32 (validation)."""
    return torch.stack([torch.from_numpy(np.maximum(read_case_volume(cache_dir, r), AIR_HU))[None] for r in records])


__all__ = ["LoadCaseVolumed", "TrainingVolumes", "VolumeAugmenter", "load_volumes"]
