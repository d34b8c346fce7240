"""Reading the test guest's serial console log: the ready marker and the writer's progress lines.

Tests and benchmarks use these to wait for the guest without timed assertions: a wait that runs out raises
``OperationTimeout`` with the end of the log, so a failure shows what the guest printed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

from standby.domain.errors import OperationTimeout

READY = re.compile(r"STANDBY-GUEST-READY")
_PROGRESS = re.compile(r"STANDBY-WRITER id=(\d+) seq=(\d+)")
_STOP = re.compile(r"STANDBY-WRITER-STOP id=(\d+) next=(\d+)")
_START = re.compile(r"STANDBY-WRITER-START id=(\d+) mode=\w+ next=(\d+)")


def read(path: Path) -> str:
    """The whole log ('' before QEMU created it)."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


async def wait_for(
    path: Path,
    pattern: re.Pattern[str] | str,
    *,
    timeout: float,
    after: int = 0,
    count: int = 1,
    alive: Callable[[], bool] | None = None,
) -> re.Match[str]:
    """Wait until ``pattern`` occurs ``count`` times in the log past offset ``after``; the last match.

    ``alive`` (e.g. "the VM still runs") ends the wait early when it turns false.
    """
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        matches = list(regex.finditer(read(path), after))
        if len(matches) >= count:
            return matches[count - 1]
        if loop.time() > deadline or (alive is not None and not alive()):
            tail = " | ".join(read(path).strip().splitlines()[-5:])
            raise OperationTimeout(f"no {regex.pattern!r} on the console in {timeout} s; last lines: {tail}")
        await asyncio.sleep(0.05)


async def wait_for_seq(path: Path, seq: int, *, writer: int = 0, timeout: float, after: int = 0) -> int:
    """Wait until writer ``writer`` reported a sequence number >= ``seq``; the number it reported."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last = last_seq(read(path)[after:], writer)
        if last is not None and last >= seq:
            return last
        if loop.time() > deadline:
            raise OperationTimeout(f"writer {writer} did not reach seq {seq} in {timeout} s (at {last})")
        await asyncio.sleep(0.05)


def last_seq(text: str, writer: int = 0) -> int | None:
    """The highest sequence number writer ``writer`` reported in ``text``."""
    seqs = [int(m.group(2)) for m in _PROGRESS.finditer(text) if int(m.group(1)) == writer]
    return max(seqs) if seqs else None


def writer_stops(text: str, writer: int = 0) -> list[int]:
    """The ``next`` value of each STANDBY-WRITER-STOP line of ``writer`` (records it had written)."""
    return [int(m.group(2)) for m in _STOP.finditer(text) if int(m.group(1)) == writer]


def writer_starts(text: str, writer: int = 0) -> list[int]:
    """The ``next`` value of each STANDBY-WRITER-START line (where the writer resumed)."""
    return [int(m.group(2)) for m in _START.finditer(text) if int(m.group(1)) == writer]
