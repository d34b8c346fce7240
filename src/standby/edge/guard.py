"""Read deadlines on top of uvicorn's httptools protocol (llhttp), which has none of its own.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but waits forever for a request that was
begun and never finished: a client sending half a header, or a body shorter than its ``Content-Length``,
held its connection (and a file descriptor) for as long as it liked. ``GuardedHttpToolsProtocol`` adds:

* a header deadline: from the connection (after its TLS handshake) or the first byte of a later request
  until the end of its headers; missed, the client gets 408 and the connection is closed;
* a body stall deadline: while the app waits for more of the body and none arrives for that long, the
  client gets 408 (or, once a response has started, the connection is simply closed). Time the app itself
  spends (reading paused, or bytes already buffered for it) never counts, so a replica that applies a log
  slowly does not cut its primary off; a body that keeps moving is never cut, however long it is;
* the connection's ``Slot`` of the listener budget (``edge.limits``) is given back when it closes.

Without ``deadlines`` (uvicorn's own factory, as in ``bench/``) it behaves exactly like its base class.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import TimerHandle
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from standby.edge.limits import Slot

log = logging.getLogger("standby.listeners")

_TIMEOUT_BODY = b"request timed out\n"


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Seconds a client may take: to finish a request's headers, and between two pieces of its body."""

    header_seconds: float
    body_seconds: float


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the header and body deadlines of the module docstring."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        deadlines: Deadlines | None = None,
        slot: Slot | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.deadlines = deadlines
        self.slot = slot
        self._header_timer: TimerHandle | None = None
        self._body_timer: TimerHandle | None = None
        self._body_seen = 0.0  # loop time of the last body bytes (or of the headers)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the header deadline."""
        super().connection_made(transport)
        self._arm_header()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the deadlines and give the budget slot back."""
        self._stop_header()
        self._stop_body()
        if self.slot is not None:
            self.slot.release()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        """A new request (after keep-alive) gets its own header deadline."""
        super().on_message_begin()
        if self._header_timer is None:
            self._arm_header()

    def on_headers_complete(self) -> None:
        """Headers in time: the body deadline takes over (cancelled at once when there is no body)."""
        self._stop_header()
        super().on_headers_complete()
        if self.deadlines is not None and self._body_timer is None and not self.transport.is_closing():
            self._body_seen = self.loop.time()
            self._body_timer = self.loop.call_later(self.deadlines.body_seconds, self._check_body)

    def on_body(self, body: bytes) -> None:
        """Body bytes arrived: the stall clock starts over."""
        self._body_seen = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        """The whole request is in: no deadline until the next one starts."""
        self._stop_body()
        super().on_message_complete()

    def _arm_header(self) -> None:
        if self.deadlines is None or self.transport is None or self.transport.is_closing():
            return
        self._stop_header()
        self._header_timer = self.loop.call_later(self.deadlines.header_seconds, self._header_missed)

    def _stop_header(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _stop_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _header_missed(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        in_flight = self.cycle is not None and not self.cycle.response_complete
        if in_flight:  # a pipelined request behind a running one: nothing may be written in between
            self.transport.close()
            return
        self._timed_out("header")

    def _check_body(self) -> None:
        self._body_timer = None
        assert self.deadlines is not None
        cycle = self.cycle
        if cycle is None or self.transport.is_closing() or not cycle.more_body:
            return
        now = self.loop.time()
        if not (not self.flow.read_paused and not cycle.body and not cycle.response_complete):
            # The app has not taken what arrived: its time, not the client's.
            self._body_seen = now
        quiet = now - self._body_seen
        if quiet < self.deadlines.body_seconds:
            self._body_timer = self.loop.call_later(self.deadlines.body_seconds - quiet, self._check_body)
            return
        if cycle.response_started:
            self.transport.close()
            return
        # The app sees a disconnect and may not write after our answer.
        cycle.disconnected = True
        cycle.message_event.set()
        self._timed_out("body")

    def _timed_out(self, part: str) -> None:
        log.debug("request %s not received in time; closing", part,
                  extra={"fields": {"client": _client(self.client)}})
        content = [
            b"HTTP/1.1 408 Request Timeout\r\n",
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            _TIMEOUT_BODY,
        ]
        self.transport.write(b"".join(content))
        self.transport.close()


def _client(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "local"
