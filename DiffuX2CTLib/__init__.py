"""DiffuX2CTLib: CT reconstruction from an AP and a lateral radiograph by conditional 3D diffusion.

The package imports without 3D Slicer and without importing torch; heavy modules are imported
by the submodules that need them.
"""

__version__ = "0.1.0"
