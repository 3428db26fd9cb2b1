"""DiffuX2CT network: tri-plane decoupling generator, implicit neural decoder, 3D U-Net denoiser.

``NetworkConfig`` imports without torch (checkpoint metadata, CLIs); every other name is
imported lazily on first access and brings in torch and MONAI.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import NetworkConfig

_LAZY = {
    "DiffuX2CTNet": "model",
    "TriplaneGenerator": "triplane",
    "Triplanes": "triplane",
    "XrayEncoder2D": "triplane",
    "ProjectiveAligner": "triplane",
    "AxialFusion": "triplane",
    "check_geometry": "triplane",
    "ImplicitDecoder": "implicit_decoder",
    "FourierEncoding": "implicit_decoder",
    "grid_points": "implicit_decoder",
    "UNet3D": "unet3d",
    "ResAttnBlock": "unet3d",
    "ResBlock": "blocks",
    "SwinStage3D": "swin",
    "SDPAWindowAttention": "swin",
}

__all__ = ["NetworkConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
