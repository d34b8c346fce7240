"""The one adapter around ``qemu.qmp`` (pinned 0.0.6): QMP and guest-agent channels.

Nothing else in standby imports ``qemu.qmp`` (its client is subclassed here only to keep its debug hooks
from formatting every message when debug logging is off). Its exceptions are translated here, once, into
``standby.domain.errors``: a failed command keeps QEMU's error class and description in the message; a lost
or refused connection is ``Unavailable``; a command or event that takes too long is ``OperationTimeout``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from qemu.qmp import EventListener, ExecInterruptedError, ExecuteError, QMPClient, QMPError, Runstate
from qemu.qmp.message import Message

from standby.domain.errors import (
    InvalidParameter,
    InvalidState,
    NotFound,
    NotSupported,
    OperationTimeout,
    StandbyError,
    Unavailable,
)

Event = dict[str, Any]

#: QEMU error classes with a closer match in our tree than the generic failure.
_ERROR_CLASSES: dict[str, type[StandbyError]] = {
    "CommandNotFound": NotSupported,
    "DeviceNotFound": NotFound,
    "DeviceNotActive": InvalidState,
    "KVMMissingCap": NotSupported,
}


def _translate(exc: BaseException, command: str, name: str) -> StandbyError:
    if isinstance(exc, ExecuteError):
        error_class = exc.error_class
        cls = _ERROR_CLASSES.get(error_class, StandbyError)
        err = cls(f"{command} failed on {name}: {exc}", message_id="QmpCommandFailed")
        err.args_map.update(command=command, error_class=error_class)
        return err
    if isinstance(exc, TimeoutError):
        return OperationTimeout(f"{command} on {name} did not answer in time", message_id="QmpTimeout")
    if isinstance(exc, (ExecInterruptedError, QMPError, OSError, EOFError)):
        return Unavailable(
            f"the monitor of {name} is not reachable ({exc or type(exc).__name__})",
            message_id="QmpUnavailable",
        )
    return StandbyError(f"{command} on {name}: {exc}")


class _Client(QMPClient):
    """``QMPClient`` whose message hooks format a message only when its debug log is on.

    The library's hooks log ``str(msg)`` — JSON pretty-printed by the pure-Python encoder — for every message
    in and out, and build that string before the logger discards it: CPU on the event loop for every reply
    and event (a group cut pause is dozens of them; ``query-named-block-nodes`` answers are kilobytes).
    """

    def _cb_outbound(self, msg: Message) -> Message:
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("--> %s", str(msg))
        return msg

    def _cb_inbound(self, msg: Message) -> Message:
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("<-- %s", str(msg))
        return msg


class _RefusedConnects(logging.Filter):
    """Drops the library's ERROR record of a refused connect: QEMU binds its socket before it listens, so
    the driver retries those while QEMU starts, and reports the failure itself if it lasts."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        return not any(retried in message for retried in _RETRIED)


#: The failures ``driver._connect`` retries (``_not_listening``), as the library's summary names them.
_RETRIED = ("ConnectionRefusedError", "FileNotFoundError")
_REFUSED = _RefusedConnects()


class QmpChannel:
    """A connection to QEMU's QMP socket, or (``agent=True``) to a qemu-guest-agent channel."""

    def __init__(self, name: str, *, agent: bool = False) -> None:
        self.name = name
        self._client = _Client(name)
        self._client.logger.addFilter(_REFUSED)
        if agent:
            # The guest agent sends no greeting and knows no capabilities negotiation.
            self._client.await_greeting = False
            self._client.negotiate = False

    async def connect(self, path: Path, timeout: float = 10.0) -> None:
        """Connect to the unix socket at ``path``."""
        try:
            await asyncio.wait_for(self._client.connect(str(path)), timeout)
        except (QMPError, OSError, EOFError, TimeoutError) as exc:
            await self.close()
            raise _translate(exc, "connect", self.name) from exc

    async def execute(
        self, command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float | None = 30.0
    ) -> Any:
        """Run ``command`` and return its ``return`` value."""
        try:
            # ``asyncio.timeout`` rather than ``wait_for``: no extra task per command (a group cut pause
            # is a few dozen commands on one event loop; each costs the loop ~0.3 ms of CPU already).
            async with asyncio.timeout(timeout):
                return await self._client.execute(command, arguments)
        except (QMPError, OSError, EOFError, TimeoutError) as exc:
            raise _translate(exc, command, self.name) from exc

    async def hmp(self, command_line: str) -> str:
        """A human-monitor command through ``human-monitor-command``; its text output."""
        out = await self.execute("human-monitor-command", {"command-line": command_line})
        return str(out)

    @asynccontextmanager
    async def listen(self, *names: str) -> AsyncIterator[EventStream]:
        """Receive events (all, or only ``names``) while the block runs; register before you trigger them."""
        listener = EventListener(list(names) if names else None)
        self._client.register_listener(listener)
        try:
            yield EventStream(listener, self.name)
        finally:
            self._client.remove_listener(listener)

    async def close(self) -> None:
        """Disconnect; never raises."""
        with suppress(QMPError, OSError, EOFError):
            await self._client.disconnect()

    @property
    def connected(self) -> bool:
        """Whether the session is up."""
        return self._client.runstate is Runstate.RUNNING


class EventStream:
    """Events of one listener, taken one at a time."""

    def __init__(self, listener: EventListener, name: str) -> None:
        self._listener = listener
        self._name = name

    async def get(self, timeout: float | None = None) -> Event:
        """The next event (a dict with ``event``, ``data``, ``timestamp``)."""
        try:
            msg = await asyncio.wait_for(self._listener.get(), timeout)
        except TimeoutError as exc:
            raise OperationTimeout(
                f"no event from {self._name} in {timeout} s", message_id="QmpTimeout"
            ) from exc
        return dict(msg)

    async def wait_for(self, name: str, *, timeout: float, **data: Any) -> Event:
        """The next ``name`` event whose data matches every ``data`` item."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.get(max(0.0, deadline - loop.time()))
            payload = event.get("data", {})
            if event.get("event") == name and all(payload.get(k) == v for k, v in data.items()):
                return event


def require_text(value: object, what: str) -> str:
    """Reject empty or non-string names before they reach QEMU."""
    if not isinstance(value, str) or not value:
        raise InvalidParameter(f"{what} must be a non-empty string")
    return value
