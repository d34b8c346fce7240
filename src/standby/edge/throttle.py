"""What keeps password guessing from costing the daemon its replication: a per-address failure limiter and a
small, bounded pool for the slow password check.

``FailureLimiter`` is pure bookkeeping over an injected clock. An address that fails ``max_failures`` times
within ``window`` seconds is locked out for ``base_backoff`` seconds; once a lockout ran out the address is
on probation, so its next failure locks it again for twice as long (up to ``max_backoff``). While locked it is
answered 429 without any password check. A success forgets the address; an address quiet for ``forget``
seconds is forgotten too. At most ``max_tracked`` addresses are kept (least recently seen dropped first), so
a flood from many addresses cannot grow the table without bound. Failures of checks that were already
running when the lockout began do not count again. One address may have at most ``max_pending`` checks
running or queued, so a burst from one client cannot fill the pool that everyone else needs.

``SlowCheckPool`` runs the check on a few dedicated threads: the event loop's default executor also carries
SQLite and CIM work, and a flood of key derivations there was what starved replication. Beyond the workers
at most ``max_waiting`` checks queue; the next one is refused at once (``PoolFull``) instead of piling up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """The limiter's thresholds (seconds and counts)."""

    max_failures: int = 5
    window: float = 60.0
    base_backoff: float = 2.0
    max_backoff: float = 300.0
    forget: float = 900.0
    max_tracked: int = 4096
    max_pending: int = 2


@dataclass(frozen=True, slots=True)
class Lockout:
    """An address was just locked: for how long, the how-many-th time, and how many requests the previous
    lockout refused (reported here so that refusals need no log line each)."""

    seconds: float
    strike: int
    failures: int
    refused_before: int


@dataclass(slots=True)
class _Entry:
    failures: list[float]
    strikes: int = 0
    locked_until: float = 0.0
    refused: int = 0
    last_seen: float = 0.0
    total: int = 0


class FailureLimiter:
    """Failed authentications per client address (see the module docstring). Thread-safe."""

    def __init__(self, policy: LimitPolicy | None = None, *, clock: Clock = time.monotonic) -> None:
        self.policy = policy if policy is not None else LimitPolicy()
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again (counted as a refusal), or None when it may try now."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(address)
            if entry is None:
                return None
            if self._stale(entry, now):
                del self._entries[address]
                return None
            if entry.locked_until > now:
                entry.refused += 1
                return entry.locked_until - now
            return None

    def failure(self, address: str) -> Lockout | None:
        """Record a failed check; the lockout it started, if it did."""
        now = self._clock()
        policy = self.policy
        with self._lock:
            entry = self._entries.get(address)
            if entry is None or self._stale(entry, now):
                entry = _Entry([])
                self._entries[address] = entry
            self._entries.move_to_end(address)
            entry.last_seen = now
            entry.total += 1
            if entry.locked_until > now:
                return None
            entry.failures = [t for t in entry.failures if now - t < policy.window]
            entry.failures.append(now)
            # On probation (a lockout already ran out) one failure is enough to lock again.
            threshold = 1 if entry.strikes else policy.max_failures
            lockout: Lockout | None = None
            if len(entry.failures) >= threshold:
                seconds = min(policy.base_backoff * 2.0 ** entry.strikes, policy.max_backoff)
                entry.strikes += 1
                lockout = Lockout(seconds, entry.strikes, len(entry.failures), entry.refused)
                entry.locked_until = now + seconds
                entry.failures = []
                entry.refused = 0
            while len(self._entries) > policy.max_tracked:
                self._entries.popitem(last=False)
            return lockout

    def success(self, address: str) -> int:
        """Forget ``address``; how many failures it had collected (0 when it had none)."""
        with self._lock:
            entry = self._entries.pop(address, None)
        return 0 if entry is None else entry.total

    def begin(self, address: str) -> bool:
        """Count a check of ``address`` as started; False (nothing counted) when it has too many already."""
        with self._lock:
            pending = self._pending.get(address, 0)
            if pending >= self.policy.max_pending:
                return False
            self._pending[address] = pending + 1
            return True

    def end(self, address: str) -> None:
        """A check ``begin`` admitted is over."""
        with self._lock:
            pending = self._pending.pop(address, 0) - 1
            if pending > 0:
                self._pending[address] = pending

    def _stale(self, entry: _Entry, now: float) -> bool:
        return entry.locked_until <= now and now - entry.last_seen >= self.policy.forget


class PoolFull(Exception):
    """The slow-check pool and its queue are full; the caller answers 503."""


def default_workers() -> int:
    """Half the cores, at most 2, at least 1: the rest stays with replication."""
    return max(1, min(2, (os.cpu_count() or 2) // 2))


class SlowCheckPool:
    """A few dedicated threads for a blocking check, with a bounded queue in front (module docstring)."""

    def __init__(self, workers: int | None = None, max_waiting: int = 16) -> None:
        self.workers = workers or default_workers()
        self.max_waiting = max_waiting
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._admitted = 0  # running + queued
        self._lock = threading.Lock()

    @property
    def admitted(self) -> int:
        """Checks running or waiting right now."""
        return self._admitted

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a pool thread; raises ``PoolFull`` at once when the queue is full."""
        with self._lock:
            if self._admitted >= self.workers + self.max_waiting:
                raise PoolFull
            self._admitted += 1
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.workers, thread_name_prefix="standby-auth")
            executor = self._executor
        try:
            future = executor.submit(fn)
        except BaseException:
            self._release()
            raise
        # Released when the thread is really done (or the job never started), not when the awaiting request
        # is cancelled: a disconnecting client must not free a slot whose derivation still runs.
        future.add_done_callback(lambda _: self._release())
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1

    def close(self) -> None:
        """Stop the threads (tests; the daemon's exit does it too)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
