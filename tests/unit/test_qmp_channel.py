"""``QmpChannel.execute`` over a fake ``QMPClient``: results, the time limit, and error translation."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecInterruptedError
from qemu.qmp.message import Message

from standby.domain.errors import OperationTimeout, Unavailable
from standby.hypervisor.qemu.qmp import QmpChannel, _Client


class SlowClient:
    """Answers after ``delay`` seconds (never, with None)."""

    def __init__(self, delay: float | None) -> None:
        self.delay = delay
        self.cancelled = False

    async def execute(self, command: str, arguments: Any = None) -> Any:
        try:
            await asyncio.sleep(3600 if self.delay is None else self.delay)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return {"command": command, "arguments": arguments}


class LostClient:
    async def execute(self, command: str, arguments: Any = None) -> Any:
        raise ExecInterruptedError("Disconnected")


def _channel(client: object) -> QmpChannel:
    channel = QmpChannel("vm1")
    channel._client = client  # type: ignore[assignment]
    return channel


def test_a_command_returns_its_answer() -> None:
    answer = asyncio.run(_channel(SlowClient(0)).execute("query-status", {"x": 1}))
    assert answer == {"command": "query-status", "arguments": {"x": 1}}


def test_a_command_that_does_not_answer_in_time_is_a_timeout_and_is_cancelled() -> None:
    client = SlowClient(None)
    with pytest.raises(OperationTimeout) as caught:
        asyncio.run(_channel(client).execute("stop", timeout=0.01))
    assert caught.value.message_id == "QmpTimeout" and client.cancelled


def test_no_time_limit_waits_for_the_answer() -> None:
    assert asyncio.run(_channel(SlowClient(0.01)).execute("cont", timeout=None))["command"] == "cont"


def test_a_lost_connection_is_unavailable() -> None:
    with pytest.raises(Unavailable):
        asyncio.run(_channel(LostClient()).execute("stop"))


def test_an_outer_cancellation_is_not_turned_into_a_timeout() -> None:
    async def cancelled() -> None:
        task = asyncio.create_task(_channel(SlowClient(None)).execute("stop", timeout=10))
        await asyncio.sleep(0.01)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancelled())


class CountingMessage(Message):
    formatted = 0

    def __str__(self) -> str:
        CountingMessage.formatted += 1
        return super().__str__()


def test_messages_are_formatted_for_the_debug_log_only_when_on(caplog: pytest.LogCaptureFixture) -> None:
    client = _Client("vm1")
    msg = CountingMessage({"execute": "stop", "id": "__qmp#00001"})
    CountingMessage.formatted = 0
    with caplog.at_level(logging.INFO, logger="qemu.qmp"):
        assert client._cb_outbound(msg) is msg and client._cb_inbound(msg) is msg
    assert CountingMessage.formatted == 0 and not caplog.records
    with caplog.at_level(logging.DEBUG, logger="qemu.qmp"):
        client._cb_outbound(msg)
        client._cb_inbound(msg)
    assert CountingMessage.formatted == 2
    assert [r.getMessage().split()[0] for r in caplog.records] == ["-->", "<--"]


def test_a_refused_connect_raises_without_an_error_record(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    # A socket bound but not listening (QEMU between bind and listen): the driver retries, so the library's
    # ERROR record would be noise; the failure itself still reaches the caller.
    path = tmp_path / "qmp.sock"
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(str(path))
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(Unavailable) as refused:
            asyncio.run(QmpChannel("vm-refused").connect(path, timeout=2))
    finally:
        bound.close()
    assert "refused" in str(refused.value).lower()
    logged = [r for r in caplog.records if "ConnectionRefusedError" in r.getMessage()]
    assert logged and all(r.levelno == logging.DEBUG for r in logged)  # the library's traceback stays
