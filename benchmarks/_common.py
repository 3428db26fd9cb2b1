"""Small helpers shared by the benchmarks: machine description, timing, memory, formatting."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def ensure_repo_on_path() -> None:
    """Let ``python benchmarks/X.py`` import DiffuX2CTLib from this checkout without installing it."""
    root = str(REPO_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device) -> str:
    """``torch.cuda.get_device_name`` for a CUDA device, the CPU model otherwise."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def cpu_has_fast_bf16() -> bool:
    """True when this CPU computes bfloat16 matrix products in hardware (AVX512-BF16 or AMX tiles),
    so that bf16 autocast speeds up convolutions instead of emulating them."""
    import torch

    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(bool(check()) for check in checks if check is not None)
    except RuntimeError:
        return False


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other processes competing for the CPUs), if known."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def max_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Stopwatch:
    """Wall time and CPU time of a block; synchronises CUDA on entry and exit when asked.

    ``cpu_util`` = CPU seconds / wall seconds: about the thread count when the process had the
    cores to itself, less when other processes competed for them (meaningless on a GPU run).
    """

    def __init__(self, cuda: bool = False) -> None:
        self.cuda = cuda
        self.seconds = 0.0
        self.cpu_util = 0.0

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def __enter__(self) -> "Stopwatch":
        self._sync()
        self._cpu0 = cpu_seconds()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self._t0
        self.cpu_util = (cpu_seconds() - self._cpu0) / self.seconds if self.seconds > 0 else 0.0


def fmt_seconds(s: float | None) -> str:
    """Seconds as a short human string (ms below 1 s, min above 10 min, h above 10 h)."""
    if s is None:
        return "-"
    if s < 1.0:
        return f"{s * 1e3:.1f} ms"
    if s < 600:
        return f"{s:.2f} s"
    if s < 36000:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"
