"""DiffuX2CT training stack: data preparation, training, evaluation and export.

Built on :mod:`DiffuX2CTLib` (geometry, DRR projector, network, diffusion, checkpoints); nothing
here copies library code. Run the entry points from the repository root::

    python -m training.prepare_data --help
    python -m training.train --help        # or: torchrun --nproc_per_node N -m training.train ...
    python -m training.evaluate --help
    python -m training.export --help
"""
