"""How many connections the listeners may hold, and who gets one: pure bookkeeping, no sockets.

The daemon shares one process-wide file table between client connections, QEMU's QMP and NBD sockets, disk
images, the database and its logs. A flood of connections that never finish a request must not be able to
fill it, so every TCP connection takes a slot from one ``ConnectionBudget`` before it is served:

* a shared cap below ``RLIMIT_NOFILE`` (``connection_cap``), with headroom for everything else;
* the public listeners (HTTPS, loopback HTTP) may only fill the cap up to ``public ceiling``; the rest is
  kept for the peer listener, so a flood on 5989 cannot stop a replica from taking logs;
* a per-client-address cap per listener, so one address cannot take the whole budget;
* the control socket has a budget of its own (it is not reachable from the network and must keep working
  while the TCP listeners are full).

Refusals are logged once per episode (``EpisodeLog``): one warning when a limit is first hit, one line when
it is relieved, with the count refused in between, never a line per refused connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Never serve fewer connections than this, whatever the file limit says.
MIN_CONNECTIONS = 16
#: An explicit upper bound for the automatic cap: past a few thousand connections one event loop is the
#: bottleneck, not the file table.
MAX_AUTO_CONNECTIONS = 4096
#: Descriptors kept for everything that is not a client connection, at least (QMP, NBD and qemu-img per VM,
#: images, the database, the control socket's own budget).
MIN_HEADROOM = 256


def connection_cap(nofile_soft: int) -> int:
    """The automatic shared connection cap for a soft ``RLIMIT_NOFILE``: an eighth (at least
    ``MIN_HEADROOM``) stays free for the rest of the daemon."""
    headroom = max(MIN_HEADROOM, nofile_soft // 8)
    return max(MIN_CONNECTIONS, min(MAX_AUTO_CONNECTIONS, nofile_soft - headroom))


def peer_reserve(cap: int) -> int:
    """The part of the shared cap the public listeners may not use (a quarter, at least one)."""
    return max(1, cap // 4)


def relief_level(limit: int) -> int:
    """The count an episode must fall to before it ends: a quarter below the limit, so traffic that keeps
    the count near the limit makes one episode, not one per freed slot."""
    return max(0, limit - max(1, limit // 4))


@dataclass
class EpisodeLog:
    """One warning when a limit is first hit, one info line when it is relieved; counts in between."""

    logger: logging.Logger
    begin_message: str
    end_message: str
    fields: dict[str, object] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    active: bool = False
    refused: int = 0
    started: float = 0.0

    def hit(self, **extra: object) -> None:
        """A refusal: logs only if no episode is running."""
        self.refused += 1
        if self.active:
            return
        self.active, self.started = True, self.clock()
        self.logger.warning(self.begin_message, extra={"fields": {**self.fields, **extra}})

    def relieve(self, **extra: object) -> None:
        """The limit is no longer hit: logs the end of the running episode, if any."""
        if not self.active:
            return
        seconds = round(self.clock() - self.started, 1)
        self.logger.info(self.end_message, extra={"fields": {
            **self.fields, **extra, "refused": self.refused, "seconds": seconds}})
        self.active, self.refused = False, 0


@dataclass(frozen=True, slots=True)
class Door:
    """What one listener may take from the budget."""

    name: str
    #: The count the listener draws on: ``tcp`` (shared by the TCP listeners) or one of its own.
    pool: str
    #: The highest count of ``pool`` at which this listener still admits.
    ceiling: int
    #: Concurrent connections per client address (None: no per-client cap, e.g. the unix socket).
    per_client: int | None


class Slot:
    """One admitted connection; ``release`` (idempotent) gives it back."""

    __slots__ = ("_release",)

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        """Give the slot back (once; later calls do nothing)."""
        release, self._release = self._release, None
        if release is not None:
            release()


class ConnectionBudget:
    """The pool counts, the per-client counts and the episode logs of every door (see the module doc)."""

    def __init__(self, logger: logging.Logger, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.clock = clock
        self.pools: dict[str, int] = {}
        self.by_client: dict[tuple[str, str], int] = {}
        self._full: dict[tuple[str, int], EpisodeLog] = {}
        self._crowded: dict[tuple[str, str], EpisodeLog] = {}

    def open(self, pool: str = "tcp") -> int:
        """Connections currently counted in ``pool``."""
        return self.pools.get(pool, 0)

    def admit(self, door: Door, client: str | None) -> Slot | None:
        """A slot for a new connection through ``door`` from ``client`` (an address), or None: refuse it."""
        count = self.pools.get(door.pool, 0)
        if count >= door.ceiling:
            self._full_log(door).hit(open=count)
            return None
        key = (door.name, client) if client is not None and door.per_client is not None else None
        if key is not None and door.per_client is not None and self.by_client.get(key, 0) >= door.per_client:
            self._crowded_log(door, key[1]).hit()
            return None
        self.pools[door.pool] = count + 1
        if key is not None:
            self.by_client[key] = self.by_client.get(key, 0) + 1
        return Slot(lambda: self._release(door, key))

    def _release(self, door: Door, key: tuple[str, str] | None) -> None:
        count = self.pools[door.pool] - 1
        self.pools[door.pool] = count
        if key is not None:
            left = self.by_client[key] - 1
            if left:
                self.by_client[key] = left
            else:
                del self.by_client[key]
            crowded = self._crowded.get(key)
            if crowded is not None and door.per_client is not None and left <= relief_level(door.per_client):
                crowded.relieve(open=left)
                del self._crowded[key]
        for (pool, ceiling), full in self._full.items():
            if pool == door.pool and count <= relief_level(ceiling):
                full.relieve(open=count)

    def _full_log(self, door: Door) -> EpisodeLog:
        # Doors with the same pool and ceiling (HTTPS and HTTP) share one episode: one limit, one warning.
        key = (door.pool, door.ceiling)
        episode = self._full.get(key)
        if episode is None:
            episode = self._full[key] = EpisodeLog(
                self.logger, f"connection limit {door.ceiling} reached; refusing new connections",
                "accepting connections again",
                {"listener": door.name, "pool": door.pool, "limit": door.ceiling}, self.clock)
        return episode

    def _crowded_log(self, door: Door, client: str) -> EpisodeLog:
        key = (door.name, client)
        episode = self._crowded.get(key)
        if episode is None:
            # Only addresses at their cap have an entry, so the dict stays as small as the cap allows.
            episode = self._crowded[key] = EpisodeLog(
                self.logger,
                f"client connection limit {door.per_client} reached; refusing its new connections",
                "client below its connection limit again",
                {"listener": door.name, "client": client, "limit": door.per_client}, self.clock)
        return episode


@dataclass(frozen=True, slots=True)
class Doors:
    """The doors of the daemon's listeners for one shared cap."""

    public: Door
    http: Door
    peer: Door
    control: Door

    @classmethod
    def for_cap(cls, cap: int, *, per_client: int, peer_per_client: int, control: int) -> Doors:
        """HTTPS and HTTP up to the cap minus the peer reserve, the peer listener up to the cap; the control
        socket outside it, with a pool and limit (``control``) of its own."""
        public_ceiling = max(1, cap - peer_reserve(cap))
        return cls(
            public=Door("https", "tcp", public_ceiling, per_client),
            http=Door("http", "tcp", public_ceiling, per_client),
            peer=Door("peer", "tcp", cap, peer_per_client),
            control=Door("control", "control", control, None),
        )
