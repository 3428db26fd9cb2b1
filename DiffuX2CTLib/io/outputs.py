"""Checks of output paths, made before any heavy work so that a long run never fails at its end.

Every command line tool calls these right after parsing its arguments:

* an output **file** must not be a folder, its folder must exist and be writable (checked by
  creating and removing a temporary file there, which also catches read-only file systems);
* an output **folder** must not be a file, and it (or the nearest existing folder above it) must
  be writable;
* two outputs must not be the same file, and no output may be one of the inputs (paths compared
  after resolving ``..`` and symbolic links, and by inode when both exist).

Each failure is an :class:`~DiffuX2CTLib.errors.InputError` naming the path, i.e. exit code 2.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import InputError

PathLike = str | os.PathLike


def same_path(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name the same file: equal after resolving, or the same inode."""
    if os.path.realpath(os.fspath(a)) == os.path.realpath(os.fspath(b)):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def probe_writable(folder: Path, path: PathLike, flag: str) -> None:
    """Raise InputError unless a file can be created in ``folder`` (tried, then removed)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".diffux2ct-write-test-", dir=folder)
    except OSError as exc:
        raise InputError(path, f"{flag}: cannot write in {folder} ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass


def _check_not_inputs(path: Path, flag: str, inputs: Iterable[tuple[str, PathLike | None]]) -> None:
    for in_flag, in_path in inputs:
        if in_path is not None and same_path(path, in_path):
            raise InputError(path, f"{flag} is the same file as {in_flag}; it would be overwritten")


def check_output_file(path: PathLike, flag: str, suffixes: Sequence[str] = (),
                      inputs: Iterable[tuple[str, PathLike | None]] = ()) -> Path:
    """Check an output file path (see the module docstring); returns it as a Path.

    Args:
        path: the output file.
        flag: its option, e.g. ``"--output"``, named in the messages.
        suffixes: accepted endings (lower case), e.g. ``(".nrrd", ".nii.gz")``; empty for any.
        inputs: ``(flag, path)`` of the run's inputs, none of which the output may be.
    """
    path = Path(path)
    if suffixes and not str(path).lower().endswith(tuple(suffixes)):
        raise InputError(path, f"{flag} must end with one of {', '.join(suffixes)}")
    if path.is_dir():
        raise InputError(path, f"{flag} is a folder; give a file name inside it")
    folder = path.parent
    if not folder.exists():
        raise InputError(path, f"folder of {flag} does not exist")
    if not folder.is_dir():
        raise InputError(path, f"{flag}: {folder} is not a folder")
    _check_not_inputs(path, flag, inputs)
    probe_writable(folder, path, flag)
    return path


def check_distinct_outputs(outputs: Iterable[tuple[str, PathLike | None]]) -> None:
    """Raise InputError when two outputs (``(flag, path)``, None skipped) name the same file."""
    seen: list[tuple[str, PathLike]] = []
    for flag, path in outputs:
        if path is None:
            continue
        for other_flag, other in seen:
            if same_path(path, other):
                raise InputError(path, f"{flag} and {other_flag} are the same file; one would overwrite the other")
        seen.append((flag, path))


def check_output_folder(path: PathLike, flag: str, inputs: Iterable[tuple[str, PathLike | None]] = (),
                        written: Iterable[str] = ()) -> Path:
    """Check an output folder (created later if missing); returns it as a Path.

    Args:
        path: the folder.
        flag: its option, e.g. ``"--out"``.
        inputs: ``(flag, path)`` of the inputs: the folder may not be an input folder (e.g. a DICOM
            series), and no input may be one of the ``written`` files inside it.
        written: names (relative paths) of the files the tool writes into the folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(path, f"{flag} is a file, not a folder")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise InputError(path, f"{flag}: {existing} is a file, so the folder cannot be created")
    inputs = list(inputs)
    for in_flag, in_path in inputs:
        if in_path is not None and Path(in_path).is_dir() and same_path(path, in_path):
            raise InputError(path, f"{flag} is the {in_flag} folder; outputs would be mixed into the input")
    _check_not_inputs(path, flag, inputs)
    for name in written:
        _check_not_inputs(path / name, f"{flag}/{name}", inputs)
    probe_writable(existing, path, flag)
    return path


__all__ = ["check_distinct_outputs", "check_output_file", "check_output_folder", "probe_writable", "same_path"]
