"""Pure rules of the primary side's replication cycles (issue 4): no clock reads, no I/O.

- what a cycle records (``CycleRecord``) and how records add up to ``Msvm_ReplicationStatistics`` (hyperv-api
§5.5);
- the bandwidth ceiling of a time-of-day schedule and a token bucket over an injected monotonic time;
- the names of a cut's intents (``cycle:N`` …; every intent's vocabulary is ``domain.intents``);
- bitmap names (``rep-<seq>``) and the AutoResynchronize window (hyperv-api §9.7).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time
from enum import StrEnum

from standby.domain import intents as _intents
from standby.domain.errors import InvalidParameter

#: QEMU dirty bitmaps of replication are named ``rep-<sequence>`` (docs/replication.md).
BITMAP_PREFIX = "rep-"
_BITMAP = re.compile(r"^rep-(\d+)$")


class CycleOutcome(StrEnum):
    """How one cycle attempt ended."""

    SUCCESS = "success"
    #: The cycle could not run at its time (the previous one overran, the VM was busy).
    MISS = "miss"
    #: The replica could not be reached, or the transfer broke off.
    NETWORK = "network"
    #: Anything else: capture failed, the replica refused the log.
    FAILURE = "failure"


class CycleKind(StrEnum):
    """What a cycle shipped (mirrors ``storage.logformat.LogKind``)."""

    DELTA = "delta"
    INITIAL = "initial"
    RESYNC = "resync"
    PLANNED = "planned"


@dataclass(frozen=True, slots=True)
class CycleRecord:
    """One cycle attempt of one relationship, as the statistics see it."""

    vm_id: str
    index: int
    sequence: int
    kind: CycleKind
    outcome: CycleOutcome
    started_at: datetime
    finished_at: datetime
    dirty_bytes: int = 0
    wire_bytes: int = 0
    latency_ms: int = 0
    app_consistent: bool = False
    app_consistent_failed: bool = False
    detail: str = ""


#: ``CycleRecord.detail`` of a successful cycle that sent a heartbeat instead of a log (nothing changed).
HEARTBEAT_DETAIL = "heartbeat"


@dataclass(frozen=True, slots=True)
class CycleTotals:
    """The counters of ``Msvm_ReplicationStatistics`` over one window (hyperv-api §5.5)."""

    success_count: int = 0
    size_bytes: int = 0
    max_size_bytes: int = 0
    latency_seconds: int = 0
    max_latency_seconds: int = 0
    miss_count: int = 0
    network_failure_count: int = 0
    failure_count: int = 0
    app_consistent_failure_count: int = 0
    dirty_bytes: int = 0
    initial_size_bytes: int = 0
    last_success_at: datetime | None = None
    last_app_consistent_at: datetime | None = None
    #: The failures since the last success, newest last (health: "cannot send").
    failures_since_success: int = 0
    #: Successes that shipped a log (not heartbeats), and their latency in seconds: the average latency is
    #: theirs. A heartbeat's round trip would count as a whole second and hide a slow link's transfers.
    shipped_count: int = 0
    shipped_latency_seconds: int = 0

    @property
    def total_cycles(self) -> int:
        """Every cycle that was due: successes, misses and failures."""
        return self.success_count + self.miss_count + self.network_failure_count + self.failure_count

    @property
    def average_latency_seconds(self) -> float | None:
        """Mean transfer latency of the successful cycles that shipped a log (None without one)."""
        return self.shipped_latency_seconds / self.shipped_count if self.shipped_count else None

    @property
    def compression_efficiency(self) -> float | None:
        """Wire bytes ÷ dirty bytes of the successful cycles (lower is better; None without data)."""
        return self.size_bytes / self.dirty_bytes if self.dirty_bytes else None


def _ceil_seconds(milliseconds: int) -> int:
    return -(-milliseconds // 1000)


def totals(records: Iterable[CycleRecord]) -> CycleTotals:
    """Add up cycle records (oldest first) into the statistics counters."""
    success = size = max_size = latency = max_latency = dirty = initial = 0
    miss = network = failure = app_failed = streak = shipped = shipped_latency = 0
    last_success: datetime | None = None
    last_app: datetime | None = None
    for record in records:
        if record.app_consistent_failed:
            app_failed += 1
        if record.outcome is CycleOutcome.SUCCESS:
            success += 1
            size += record.wire_bytes
            dirty += record.dirty_bytes
            max_size = max(max_size, record.wire_bytes)
            seconds = _ceil_seconds(record.latency_ms)
            latency += seconds
            max_latency = max(max_latency, seconds)
            if record.detail != HEARTBEAT_DETAIL:
                shipped += 1
                shipped_latency += seconds
            last_success, streak = record.finished_at, 0
            if record.kind is CycleKind.INITIAL:
                initial += record.wire_bytes
            if record.app_consistent:
                last_app = record.finished_at
            continue
        streak += record.outcome is not CycleOutcome.MISS
        miss += record.outcome is CycleOutcome.MISS
        network += record.outcome is CycleOutcome.NETWORK
        failure += record.outcome is CycleOutcome.FAILURE
    return CycleTotals(success, size, max_size, latency, max_latency, miss, network, failure, app_failed,
                       dirty, initial, last_success, last_app, streak, shipped, shipped_latency)


# -- bandwidth ----------------------------------------------------------------------------------------

Window = tuple[time, time, int]


def in_daily_window(start: time, end: time, moment: time) -> bool:
    """Whether ``moment`` lies in ``[start, end)``; a window with ``end < start`` wraps past midnight."""
    if start <= end:
        return start <= moment < end
    return moment >= start or moment < end


def bandwidth_limit(schedule: Iterable[Window], moment: time) -> int | None:
    """Bytes/s allowed at local time ``moment`` (the first matching window wins); None = unlimited."""
    for start, end, rate in schedule:
        if in_daily_window(start, end, moment):
            return rate
    return None


class TokenBucket:
    """A token bucket over an injected monotonic time: ``delay(n, now)`` says how long to wait before
    sending ``n`` more bytes at the current ``rate`` (bytes/s, None = unlimited). Burst = one second."""

    def __init__(self) -> None:
        self._tokens = 0.0
        self._stamp: float | None = None
        self._rate: int | None = None

    def delay(self, size: int, now: float, rate: int | None) -> float:
        """Seconds to wait before ``size`` bytes may go; the bytes are accounted for at once."""
        if rate is None:
            self._rate, self._stamp = None, now
            return 0.0
        if self._rate != rate or self._stamp is None:
            # A new window starts with a full one-second burst.
            self._rate, self._tokens, self._stamp = rate, float(rate), now
        self._tokens = min(float(rate), self._tokens + (now - self._stamp) * rate)
        self._stamp = now
        self._tokens -= size
        return 0.0 if self._tokens >= 0 else -self._tokens / rate


# -- names and intents -------------------------------------------------------------------------------------


def bitmap_name(sequence: int) -> str:
    """The dirty bitmap that records writes after cut ``sequence``."""
    return f"{BITMAP_PREFIX}{sequence}"


def bitmap_sequence(name: str) -> int | None:
    """The sequence of a replication bitmap name, None for other bitmaps."""
    match = _BITMAP.match(name)
    return int(match.group(1)) if match else None


# The cut intents under the names the cycle runner and the scheduler use; ``domain.intents`` holds them.
IntentKind = _intents.IntentKind
#: A cut's intent as stored (``cycle:12``), and read back as ``(kind, sequence)`` (None for any other).
intent = _intents.cut_intent
parse_intent = _intents.parse_cut


def next_sequence(acknowledged: int, bitmaps: Iterable[str], pending: int | None = None) -> int:
    """A sequence never used before: above the acknowledged one, every bitmap and any pending cut."""
    used = [acknowledged, pending or 0]
    used.extend(seq for seq in (bitmap_sequence(name) for name in bitmaps) if seq is not None)
    return max(used) + 1


def auto_resync_allowed(start: time, end: time, moment: time) -> bool:
    """AutoResynchronize window (local time): 00:00-23:59 means any time; else ``[start, end)`` wrapping."""
    if start == time(0, 0) and end >= time(23, 59):
        return True
    return in_daily_window(start, end, moment)


def interval_misses(started: float, finished: float, interval: float) -> int:
    """How many scheduled starts a cycle running from ``started`` to ``finished`` overran (Hyper-V counts
    a transfer that overruns the interval as missed cycles)."""
    if interval <= 0 or finished <= started:
        return 0
    return max(0, int((finished - started) // interval))


_WINDOW = re.compile(
    r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*=\s*(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?(?:/s)?\s*$",
    re.IGNORECASE)
_UNITS = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3}


def parse_bandwidth_window(text: str) -> Window:
    """``"08:00-18:00=50M"`` → (08:00, 18:00, 50 000 000 bytes/s); ``InvalidParameter`` when malformed."""
    match = _WINDOW.match(text)
    try:
        if match is None:
            raise ValueError(text)
        start = time(int(match[1]), int(match[2]))
        end = time(int(match[3]), int(match[4]))
        rate = int(float(match[5]) * _UNITS[match[6].upper()])
    except ValueError:
        raise InvalidParameter(f"bandwidth window {text!r} is not HH:MM-HH:MM=RATE (e.g. 08:00-18:00=50M)",
                               message_id="InvalidSettingValue", property="bandwidth_schedule",
                               label="bandwidth window", value=text, allowed="HH:MM-HH:MM=RATE") from None
    return start, end, rate
