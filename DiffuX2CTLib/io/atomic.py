"""Write files and folders so that a failure never leaves partial output behind.

Files are written under a temporary name in the destination folder and moved into place with
``os.replace`` (atomic on POSIX and Windows within one file system).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _suffixes(path: Path) -> str:
    """Full suffix of a path, e.g. ``.nii.gz`` (writers pick the format from it)."""
    return "".join(path.suffixes[-2:]) if path.name.endswith(".gz") else path.suffix


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, else delete it.

    The temporary name keeps the file's suffix (``.nii.gz``, ``.nrrd``, ``.png`` ...) so that
    writers choosing the format from the extension behave as for the final name.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{_suffixes(final)}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def staged_directory(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder; on success move its files into ``out_dir``.

    On any exception (including ``KeyboardInterrupt``) the staging folder is removed and
    ``out_dir`` is left exactly as it was. Files already present in ``out_dir`` with the same
    names are replaced only when everything succeeded.
    """
    final = Path(out_dir)
    final.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=final))
    try:
        yield stage
        for item in sorted(stage.iterdir()):
            os.replace(item, final / item.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
