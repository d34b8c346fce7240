"""What every row shares: the figure record, medians and percentiles, the machine, scratch folders."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MiB = 1 << 20
GiB = 1 << 30


@dataclass
class Figure:
    """One line of the results: a measured value, its baseline from the same run, and the target."""

    row: str  # "P4"
    name: str  # what was measured
    value: float | None  # None: not available (``note`` says why)
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    ratio: float | None = None  # value ÷ baseline, or as the row defines it (``ratio_name``)
    ratio_name: str = ""
    target: str = ""
    met: bool | None = None  # None: no target, or not measurable
    samples: list[float] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        return {k: v for k, v in self.__dict__.items() if v not in (None, "", [])}


def unavailable(row: str, name: str, why: str, target: str = "") -> Figure:
    """A row whose piece is not built yet (or cannot run here): printed as "not available yet"."""
    return Figure(row, name, None, "", target=target, note=f"not available yet: {why}")


@dataclass
class Options:
    """Command-line choices every row reads."""

    quick: bool = False  # fewer repeats, smaller sizes (a smoke run)
    full: bool = False  # the long versions (P2 10 min, P6 200 VMs)
    repeat: int = 3
    verbose: bool = False


def median(samples: Sequence[float]) -> float:
    """Median (the figure we report: the machine is shared and noisy)."""
    return float(statistics.median(samples))


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in [0, 100]."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[rank])


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` took (wall clock, monotonic)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def say(message: str) -> None:
    """Progress on stderr (the results go to stdout)."""
    print(f"  · {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A scratch folder under /tmp (short paths: unix sockets must fit 108 bytes), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=f"sbb-{prefix}-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(*argv: str) -> str:
    """Run a command; its stdout (raises with stderr on failure)."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def fsync_path(path: Path) -> None:
    """fsync a file (a baseline must pay for durability like the replica does)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def machine() -> dict[str, str]:
    """The facts BENCHMARKS.md records next to the figures."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f"{kib / (1 << 20):.1f} GiB"
    qemu = "unknown"
    with contextlib.suppress(OSError, RuntimeError, IndexError):
        qemu = run("qemu-system-x86_64", "--version").splitlines()[0]
    from standby.hypervisor.qemu.accel import choose_accel, probe_host

    accel = "unknown"
    with contextlib.suppress(Exception):
        accel = choose_accel("auto", probe_host())
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "memory": mem,
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "qemu": qemu,
        "accel": accel,
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
