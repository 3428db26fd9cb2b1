"""Biplanar cone-beam geometry shared by the DRR projector, the network and the Slicer module."""

from .biplanar import PRESETS, VIEW_NAMES, BiplanarGeometry, ViewGeometry

__all__ = ["PRESETS", "VIEW_NAMES", "BiplanarGeometry", "ViewGeometry"]
