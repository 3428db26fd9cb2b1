"""Hyper-parameters of the DiffuX2CT network (tri-plane generator, implicit decoder, 3D U-Net).

Plain data, no torch import: a config is saved next to each checkpoint as JSON and must load
without building the network. The diffusion schedule and prediction type live in
``DiffuX2CTLib.diffusion``, not here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import InputError

_TUPLE_FIELDS = {"channel_mult": int, "attention_levels": bool, "xray_encoder_channels": int}


@dataclass(frozen=True)
class NetworkConfig:
    """All network hyper-parameters. Sizes are voxels/pixels; channels are feature counts.

    Volume and radiograph sizes must equal the ``BiplanarGeometry`` the network is built with
    (``volume_shape == (volume_size,)*3``, ``detector_shape == (xray_size,)*2``).

    Attributes:
        volume_size: CT cube side N; the denoiser works on ``(B, in_channels, N, N, N)``.
        xray_size: radiograph side M; the condition input is ``(B, 2, M, M)``.
        in_channels: channels of the noisy volume ``x_t`` (1 for a CT).
        out_channels: channels the denoiser predicts (1: noise, x0 or v, as the diffusion decides).
        base_channels: U-Net channels at full resolution.
        channel_mult: U-Net channels per level are ``base_channels * channel_mult[l]``; level l has
            side ``ceil(N / 2**l)``.
        num_res_blocks: residual blocks per encoder level (the decoder has one more).
        attention_levels: per level, whether shifted-window attention stages follow the residual
            blocks (the middle block uses ``attention_levels[-1]``).
        window_size: side of the cubic attention window (4 or 8 in practice); shift is half of it.
        num_heads: attention heads in each window-attention block.
        swin_depth: Swin blocks per attention stage, alternating unshifted / shifted windows.
        swin_mlp_ratio: hidden width of the Swin MLP relative to the channels.
        norm_num_groups: GroupNorm groups (reduced to the largest divisor of the channel count).
        dropout: dropout inside the residual blocks.
        condition_channels: F, channels of the 3D condition ``(B, F, N, N, N)``.
        triplane_channels: C, channels of each of the three feature planes.
        xray_encoder_channels: channels per level of the shared 2D radiograph encoder (a small
            U-Net, ``len - 1`` downsamplings).
        triplane_heads: heads of the axial-plane fusion (attention over z); divides C.
        fourier_frequencies: L octaves of the point positional encoding (``3 + 6 L`` features).
        decoder_width: hidden width of the implicit-decoder MLP.
        decoder_depth: hidden layers of the implicit-decoder MLP.
        decoder_chunk_size: points decoded per chunk when evaluating a grid (bounds memory).
        use_checkpointing: activation checkpointing of U-Net blocks and decoder chunks in training.
    """

    volume_size: int = 128
    xray_size: int = 128
    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[bool, ...] = (False, False, True, True)
    window_size: int = 4
    num_heads: int = 8
    swin_depth: int = 2
    swin_mlp_ratio: float = 2.0
    norm_num_groups: int = 32
    dropout: float = 0.0
    condition_channels: int = 8
    triplane_channels: int = 32
    xray_encoder_channels: tuple[int, ...] = (32, 64, 128, 256)
    triplane_heads: int = 4
    fourier_frequencies: int = 6
    decoder_width: int = 128
    decoder_depth: int = 3
    decoder_chunk_size: int = 262144
    use_checkpointing: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name, kind in _TUPLE_FIELDS.items():
            value = getattr(self, name)
            try:
                set_(self, name, tuple(kind(v) for v in value))
            except (TypeError, ValueError) as exc:
                raise InputError(None, f"network config field {name!r} must be a list, got {value!r}") from exc
        self._validate()

    def _validate(self) -> None:
        def need(cond: bool, problem: str) -> None:
            if not cond:
                raise InputError(None, f"network config: {problem}")

        positive = (
            "volume_size", "xray_size", "in_channels", "out_channels", "base_channels", "num_res_blocks",
            "num_heads", "swin_depth", "norm_num_groups", "condition_channels", "triplane_channels",
            "triplane_heads", "decoder_width", "decoder_chunk_size",
        )
        for name in positive:
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                 f"{name} must be a positive integer, got {value!r}")
        need(isinstance(self.fourier_frequencies, int) and self.fourier_frequencies >= 0,
             "fourier_frequencies must be an integer >= 0")
        need(isinstance(self.decoder_depth, int) and self.decoder_depth >= 1, "decoder_depth must be >= 1")
        need(isinstance(self.window_size, int) and self.window_size >= 2, "window_size must be an integer >= 2")
        need(len(self.channel_mult) >= 1 and min(self.channel_mult) > 0, "channel_mult needs positive entries")
        need(len(self.attention_levels) == len(self.channel_mult),
             f"attention_levels has {len(self.attention_levels)} entries, channel_mult {len(self.channel_mult)}")
        need(len(self.xray_encoder_channels) >= 1 and min(self.xray_encoder_channels) > 0,
             "xray_encoder_channels needs positive entries")
        for level, (mult, attn) in enumerate(zip(self.channel_mult, self.attention_levels)):
            need(not attn or (self.base_channels * mult) % self.num_heads == 0,
                 f"level {level} has {self.base_channels * mult} channels, not divisible by num_heads={self.num_heads}")
        need(self.triplane_channels % self.triplane_heads == 0, "triplane_channels must be divisible by triplane_heads")
        need(0.0 <= float(self.dropout) < 1.0, "dropout must be in [0, 1)")
        need(float(self.swin_mlp_ratio) > 0, "swin_mlp_ratio must be positive")
        need(isinstance(self.use_checkpointing, bool), "use_checkpointing must be true or false")

    # --- derived ---------------------------------------------------------------------
    @property
    def level_channels(self) -> tuple[int, ...]:
        """U-Net channels per level."""
        return tuple(self.base_channels * m for m in self.channel_mult)

    def replace(self, **changes: Any) -> "NetworkConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    # --- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists)."""
        data = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            data[f.name] = list(value) if isinstance(value, tuple) else value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NetworkConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an :class:`InputError`, missing keys default."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(None, f"unknown network config fields {sorted(unknown)}")
        return cls(**dict(data))

    # --- presets ---------------------------------------------------------------------
    @classmethod
    def tiny(cls) -> "NetworkConfig":
        """16^3 CT from 16^2 radiographs with a handful of channels: unit tests and smoke runs."""
        return cls(
            volume_size=16, xray_size=16, base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1,
            attention_levels=(False, True, True), window_size=4, num_heads=2, swin_depth=2,
            swin_mlp_ratio=2.0, norm_num_groups=4, condition_channels=4, triplane_channels=8,
            xray_encoder_channels=(8, 16), triplane_heads=2, fourier_frequencies=2, decoder_width=16,
            decoder_depth=2, decoder_chunk_size=1024,
        )

    @classmethod
    def small(cls) -> "NetworkConfig":
        """64^3 CT from 64^2 radiographs: a single-GPU development model (levels 64, 32, 16, 8)."""
        return cls(
            volume_size=64, xray_size=64, base_channels=32, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
            attention_levels=(False, False, True, True), window_size=4, num_heads=4,
            norm_num_groups=16, condition_channels=8, triplane_channels=32,
            xray_encoder_channels=(32, 64, 128), triplane_heads=4, fourier_frequencies=6,
            decoder_width=64, decoder_depth=3, decoder_chunk_size=131072,
        )

    @classmethod
    def paper(cls) -> "NetworkConfig":
        """128^3 CT from 128^2 radiographs, the resolution of the paper.

        U-Net levels 128, 64, 32, 16 with 64, 128, 256, 256 channels (the usual DDPM/ADM
        progression), two residual blocks per level, 4^3 shifted-window attention (8 heads) at
        32^3 and 16^3 where a window holds 64 tokens, F = 8 condition channels from 32-channel
        tri-planes. Train it with ``use_checkpointing=True`` (on the order of 10^8 parameters,
        several GB of activations per sample otherwise).
        """
        return cls()
