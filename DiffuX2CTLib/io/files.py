"""Where DiffuX2CT keeps cached data, and file hashing for integrity checks."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_ENV = "DIFFUX2CT_CACHE"

#: Image formats SimpleITK writes as one file (header and voxels together), so that a write can
#: be made atomic with a single rename; ``.mhd``/``.nhdr`` write two files and are not offered.
SINGLE_FILE_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def default_cache_dir() -> Path:
    """``$DIFFUX2CT_CACHE`` if set, else ``~/.cache/diffux2ct`` (example data, DRR system matrices).

    Everything in it can be deleted by the user; it is rebuilt or re-fetched on demand.
    """
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "diffux2ct"


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (bounded memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()
