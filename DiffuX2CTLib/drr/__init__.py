"""Digitally reconstructed radiographs: exact Siddon system matrix and the differentiable projector."""

from .projector import DRRProjector, SystemMatrix, default_cache_dir, load_system_matrix
from .siddon import system_matrix

__all__ = ["DRRProjector", "SystemMatrix", "default_cache_dir", "load_system_matrix", "system_matrix"]
