"""DiffuX2CTNet: the conditional denoiser of DiffuX2CT.

``encode_condition`` runs once per pair of radiographs (tri-plane generator + implicit decoder
on the volume grid); ``forward`` is the denoiser called at every diffusion step with that
condition. The diffusion schedule, prediction type and sampling live in
``DiffuX2CTLib.diffusion``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..geometry.biplanar import BiplanarGeometry
from .config import NetworkConfig
from .implicit_decoder import ImplicitDecoder
from .triplane import Triplanes, TriplaneGenerator, check_geometry
from .unet3d import UNet3D

__all__ = ["DiffuX2CTNet"]


class DiffuX2CTNet(nn.Module):
    """Tri-plane condition encoder + 3D U-Net denoiser.

    Args:
        config: hyper-parameters; ``volume_size``/``xray_size`` must match ``geometry``
            (:class:`~DiffuX2CTLib.errors.InputError` otherwise).
        geometry: the biplanar cone-beam set-up the radiographs were taken (or rendered) with;
            it fixes the projective alignment of detector features to the volume.
    """

    def __init__(self, config: NetworkConfig, geometry: BiplanarGeometry) -> None:
        super().__init__()
        check_geometry(config, geometry)
        self.config = config
        self.geometry = geometry
        self.triplane = TriplaneGenerator(config, geometry)
        self.decoder = ImplicitDecoder(
            config.triplane_channels,
            config.condition_channels,
            num_frequencies=config.fourier_frequencies,
            width=config.decoder_width,
            depth=config.decoder_depth,
            chunk_size=config.decoder_chunk_size,
            use_checkpointing=config.use_checkpointing,
        )
        self.unet = UNet3D(config)

    def encode_triplanes(self, xrays: torch.Tensor) -> Triplanes:
        """Radiographs (B, 2, M, M) in [-1, 1] (channels in ``geometry.views`` order, AP then
        lateral by default) -> coronal (B,C,N,N), sagittal (B,C,N,N), axial (B,C,N,N)."""
        return self.triplane(xrays)

    def encode_condition(self, xrays: torch.Tensor, size: int | tuple[int, int, int] | None = None) -> torch.Tensor:
        """Radiographs (B, 2, M, M) in [-1, 1] -> condition (B, F, N, N, N) on the volume grid
        (or on a ``size`` grid covering the same physical box)."""
        planes = self.triplane(xrays)
        return self.decoder.decode_grid(planes, self.config.volume_size if size is None else size)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Denoiser: ``x_t`` (B, 1, D, H, W), ``t`` (B,) timesteps (long or float),
        ``condition`` (B, F, D, H, W) from :meth:`encode_condition` -> (B, 1, D, H, W)."""
        return self.unet(x_t, t, condition)

    def set_checkpointing(self, enabled: bool) -> None:
        """Switch activation checkpointing (U-Net blocks, decoder chunks) on or off."""
        self.unet.set_checkpointing(enabled)
        self.decoder.use_checkpointing = bool(enabled)

    def num_parameters(self, trainable_only: bool = True) -> int:
        """Number of (trainable) parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
