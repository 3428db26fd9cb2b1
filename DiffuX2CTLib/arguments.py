"""Command-line argument helpers shared by the worker, the ``diffux2ct`` CLI and the demo.

Everything here is checked when the arguments are parsed or right after, before any heavy work:
a seed outside ``[0, 2**63 - 1]``, a device that is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``,
or a CUDA device on a machine without one are bad arguments (exit code 2), not runtime failures.
No torch import unless a CUDA device is asked for.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
from typing import Any, Iterator, NoReturn

from .errors import InputError

#: Largest seed accepted (torch generators take 64-bit seeds; negative ones are refused).
MAX_SEED = 2**63 - 1
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def seed(text: str) -> int:
    """argparse ``type`` of ``--seed``: an integer in ``[0, 2**63 - 1]``."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 2**63-1, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 2**63-1 ({MAX_SEED}), got {value}")
    return value


def device(text: str) -> str:
    """argparse ``type`` of ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (syntax only)."""
    value = text.strip().lower()
    if not _DEVICE_RE.match(value):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {text!r}")
    return value


def check_device_available(name: str) -> None:
    """Raise :class:`InputError` (exit code 2) when ``name`` asks for a CUDA device this machine lacks."""
    if not name.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise InputError(None, f"--device {name}: CUDA is not available on this machine or in this torch build; "
                               "use --device cpu or --device auto")
    index = int(name.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise InputError(None, f"--device {name}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")


def positive_int(text: str) -> int:
    """argparse ``type`` of counts such as ``--steps`` and ``--num-samples``."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (unless its help already speaks of one) and keeps the line breaks
    of the description and the epilog."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower():
            return text
        return super()._get_help_string(action)


class ArgumentError(Exception):
    """A command line argparse refused; ``str()`` is argparse's message, ``usage`` the usage line."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


class RaisingArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise :class:`ArgumentError` instead of printing and exiting,
    so a caller can still report them in its own format (e.g. the worker's final JSON line)."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(" ".join(message.split()), self.format_usage().strip())


class Terminated(BaseException):
    """Raised in the main thread by :func:`raise_on_sigterm`'s handler (a BaseException, like
    KeyboardInterrupt, so that every ``atomic_file``/``staged_directory`` removes its partial output)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


@contextlib.contextmanager
def raise_on_sigterm() -> Iterator[None]:
    """While active, SIGTERM raises :class:`Terminated` in the main thread (once; later SIGTERMs are
    ignored so that the clean-up they interrupt is not itself interrupted). Does nothing outside
    the main thread, where Python cannot install signal handlers."""
    fired: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        if not fired:
            fired.append(signum)
            raise Terminated(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def os_error_line(exc: OSError) -> str:
    """One line for an OSError: ``FILE: reason`` (e.g. ``/out/ct.nrrd: Permission denied``)."""
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    return f"{exc.filename}: {reason}" if exc.filename else reason


def exception_line(exc: BaseException) -> str:
    """One line naming an unexpected exception (type and first line of its message)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


__all__ = [
    "MAX_SEED", "ArgumentError", "HelpFormatter", "RaisingArgumentParser", "Terminated", "check_device_available",
    "device", "exception_line", "os_error_line", "positive_int", "raise_on_sigterm", "seed",
]
