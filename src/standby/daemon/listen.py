"""The accept loop of every listener: budgeted, and quiet when the file table is full.

uvicorn hands its sockets to ``loop.create_server``, which accepts whatever arrives, wraps TLS connections in
a protocol uvicorn only sees after the handshake, and logs every failed ``accept`` (EMFILE) on its own. So
``GuardedServer`` accepts itself: each new connection first takes a ``Slot`` from the listener budget
(``edge.limits``; refused: closed at once with a reset, logged once per episode), then its TLS handshake
runs under the header deadline, then ``edge.guard.GuardedHttpToolsProtocol`` serves it. An ``accept`` that
fails for lack of descriptors or memory is logged once per episode and retried after a growing pause, so
the loop neither spins nor floods the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn

from standby.edge.guard import Deadlines, GuardedHttpToolsProtocol
from standby.edge.limits import ConnectionBudget, Door, EpisodeLog, Slot

log = logging.getLogger("standby.listeners")

#: ``accept`` errors that mean "out of descriptors or buffers": back off instead of retrying at once.
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: ``accept`` errors about one connection that went away while queued: just take the next one.
_TRANSIENT_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EINTR, errno.EAGAIN, errno.EPERM})
_BACKOFF_FIRST, _BACKOFF_MAX = 0.05, 1.0


@dataclass(frozen=True, slots=True)
class Guarding:
    """What ``GuardedServer`` needs besides uvicorn's config: the protocol, the door and the budget."""

    protocol: type[GuardedHttpToolsProtocol]
    door: Door
    budget: ConnectionBudget
    deadlines: Deadlines


class GuardedServer(uvicorn.Server):
    """uvicorn's server with our own accept loop (see the module docstring) and without signal handling
    (the daemon owns SIGTERM/SIGINT for all listeners)."""

    def __init__(self, config: uvicorn.Config, guarding: Guarding) -> None:
        super().__init__(config)
        self.guarding = guarding
        self._acceptors: list[asyncio.Task[None]] = []
        self._handshakes: set[asyncio.Task[None]] = set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """The daemon handles signals; uvicorn must not install its own handlers."""
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start one accept loop per socket (instead of ``loop.create_server``)."""
        await self.lifespan.startup()
        self.servers = []
        for sock in sockets or []:
            acceptor = Acceptor(sock, self._factory, self.guarding, self.config.ssl, self._handshakes)
            name = f"accept-{self.guarding.door.name}"
            self._acceptors.append(asyncio.create_task(acceptor.run(), name=name))
        self.started = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting, abandon pending handshakes, then uvicorn's graceful shutdown of the rest."""
        for task in [*self._acceptors, *self._handshakes]:
            task.cancel()
        await asyncio.gather(*self._acceptors, *self._handshakes, return_exceptions=True)
        await super().shutdown(sockets=sockets)

    def _factory(self, slot: Slot) -> GuardedHttpToolsProtocol:
        return self.guarding.protocol(
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state,
            deadlines=self.guarding.deadlines, slot=slot)


class Acceptor:
    """One listening socket's accept loop."""

    def __init__(self, sock: socket.socket, factory: Callable[[Slot], GuardedHttpToolsProtocol],
                 guarding: Guarding, tls: ssl.SSLContext | None, pending: set[asyncio.Task[None]]) -> None:
        self.sock = sock
        self.factory = factory
        self.guarding = guarding
        self.tls = tls
        self.pending = pending
        self.starved = EpisodeLog(log, "cannot accept connections: out of file descriptors or memory",
                                  "accepting connections again after running out of descriptors",
                                  {"listener": guarding.door.name})

    async def run(self) -> None:
        """Accept until cancelled."""
        loop = asyncio.get_running_loop()
        backoff = _BACKOFF_FIRST
        door, budget = self.guarding.door, self.guarding.budget
        while True:
            try:
                conn, address = await loop.sock_accept(self.sock)
            except OSError as exc:
                if exc.errno in _TRANSIENT_ERRNOS:
                    continue
                self.starved.hit(reason=exc.strerror or str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            backoff = _BACKOFF_FIRST
            self.starved.relieve()
            slot = budget.admit(door, _host(address))
            if slot is None:
                _reset(conn)
                continue
            task = asyncio.create_task(self._serve(conn, slot))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def _serve(self, conn: socket.socket, slot: Slot) -> None:
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        deadline = self.guarding.deadlines.header_seconds
        try:
            if self.tls is None:
                await loop.connect_accepted_socket(lambda: self.factory(slot), conn)
            else:
                await loop.connect_accepted_socket(lambda: self.factory(slot), conn, ssl=self.tls,
                                                   ssl_handshake_timeout=deadline,
                                                   ssl_shutdown_timeout=deadline)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
            # A failed or missed handshake: the transport closed the socket; the protocol never saw it.
            slot.release()
            with contextlib.suppress(OSError):
                conn.close()
        except BaseException:
            slot.release()
            with contextlib.suppress(OSError):
                conn.close()
            raise


def _host(address: object) -> str | None:
    if isinstance(address, tuple) and address and isinstance(address[0], str):
        return address[0]
    return None  # the unix socket: no address to count by


def _reset(conn: socket.socket) -> None:
    # A reset instead of a FIN: nothing lingers in TIME_WAIT or in our buffers for a refused client.
    with contextlib.suppress(OSError):
        if conn.family in (socket.AF_INET, socket.AF_INET6):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        conn.close()
