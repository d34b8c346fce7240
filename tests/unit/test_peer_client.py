"""PeerClient: request shapes and the one translation of HTTP answers into domain errors (httpx mock)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from standby.domain.entities import Disk, Nic, ReplicationSettings, VirtualMachine
from standby.domain.enums import ReplicationState
from standby.domain.errors import (
    AccessDenied,
    InvalidParameter,
    InvalidState,
    NotFound,
    NotSupported,
    StandbyError,
    Unavailable,
)
from standby.domain.replica import OutOfSequence
from standby.peer.client import PeerClient, replica_request
from standby.storage.logformat import LogCorrupt

VM = VirtualMachine("ABC", "web", 512, 2, disks=(Disk("d0", "/x.qcow2", 1 << 20), Disk("d1", "/y", 4096)),
                    nics=(Nic("n0", "52:54:00:00:00:01"),))


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> PeerClient:
    context = ssl.create_default_context()
    return PeerClient("https://hv2.test:8443/", context, transport=httpx.MockTransport(handler))


def _run(client: PeerClient, method: str, *args: Any, **kwargs: Any) -> Any:
    async def go() -> Any:
        async with client:
            return await getattr(client, method)(*args, **kwargs)
    return asyncio.run(go())


def test_create_replica_body_and_answer() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST" and request.url.path == "/peer/v1/replicas"
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"vm_id": "ABC", "state": 2, "head_sequence": 0})

    answer = _run(_client(handler), "create_replica", VM, ReplicationSettings(recovery_history=3),
                  primary_host="hv1.test", disks=[("d0", 1 << 20)])
    assert answer.state == ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION
    body = seen[0]
    assert body["disks"] == [{"disk_id": "d0", "size": 1 << 20}]
    assert body["settings"]["recovery_history"] == 3 and body["primary_host"] == "hv1.test"
    assert body["nics"] == [{"nic_id": "n0", "mac": "52:54:00:00:00:01"}]
    assert replica_request(VM, ReplicationSettings(), primary_host="p")["disks"] == [
        {"disk_id": "d0", "size": 1 << 20}, {"disk_id": "d1", "size": 4096}]


def test_put_log_streams_the_body() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for piece in (b"SBYLOG01", b"rest", b"of the log"):
            yield piece

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/peer/v1/replicas/ABC/logs/7"
        assert request.headers["content-type"] == "application/x-standby-log"
        assert request.read() == b"SBYLOG01restof the log"
        return httpx.Response(200, json={"head_sequence": 7, "point_id": "P7", "applied": True})

    ack = _run(_client(handler), "put_log", "ABC", 7, chunks())
    assert (ack.head_sequence, ack.point_id, ack.applied, ack.kept_aside) == (7, "P7", True, False)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (403, {"code": 32769, "name": "AccessDenied", "message": "no entry"}, AccessDenied),
        (404, {"code": 32773, "name": "NotFound", "message": "no replica"}, NotFound),
        (409, {"code": 32775, "name": "InvalidState", "message": "busy"}, InvalidState),
        (422, {"code": 32768, "name": "LogCorrupt", "message": "bad frame"}, LogCorrupt),
        (400, {"code": 32773, "name": "InvalidParameter", "message": "bad"}, InvalidParameter),
        (501, {"code": 32770, "name": "NotSupported", "message": "no"}, NotSupported),
        (503, {"code": 32777, "name": "Unavailable", "message": "suspended"}, Unavailable),
        (500, {"code": 32768, "name": "StandbyError", "message": "oops"}, StandbyError),
        (502, None, StandbyError),
    ],
)
def test_errors_are_translated_once(status: int, body: dict[str, Any] | None, expected: type) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, text="<html>")
        return httpx.Response(status, json=body)

    with pytest.raises(expected) as info:
        _run(_client(handler), "replica_status", "ABC")
    assert type(info.value) is expected
    if body is not None:
        assert body["message"] in str(info.value)


def test_out_of_sequence_carries_the_head() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"code": 32775, "name": "OutOfSequence", "message": "x",
                                         "head_sequence": 12, "reason": "parent 3 unknown"})

    async def empty() -> AsyncIterator[bytes]:
        yield b""

    with pytest.raises(OutOfSequence) as info:
        _run(_client(handler), "put_log", "ABC", 14, empty())
    assert info.value.head_sequence == 12 and info.value.reason == "parent 3 unknown"
    assert isinstance(info.value, InvalidState)


def test_transport_failures_are_unavailable() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def not_json(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="hello")

    for handler, message_id in ((refused, "PeerUnreachable"), (slow, "PeerTimeout"),
                                (not_json, "PeerAnswerMalformed")):
        with pytest.raises(Unavailable) as info:
            _run(_client(handler), "ping")
        assert info.value.message_id == message_id


def test_hashes_and_small_routes() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/hashes"):
            assert json.loads(request.content) == {"disk_id": "d0", "block_size": 65536}
            return httpx.Response(200, content=bytes(32))
        if path.endswith("/state"):
            return httpx.Response(200, json={"state": 7})
        if path.endswith("/running"):
            return httpx.Response(200, json={"running": True, "enabled_state": 2})
        assert request.method == "DELETE"
        return httpx.Response(204)

    assert _run(_client(handler), "hashes", "ABC", "d0", 65536) == bytes(32)
    assert _run(_client(handler), "set_state", "ABC", 7) == ReplicationState.SUSPENDED
    assert _run(_client(handler), "vm_running", "ABC") == (True, 2)
    assert _run(_client(handler), "remove_replica", "ABC") is None


def test_heartbeat_posts_the_sequence_and_a_409_is_out_of_sequence() -> None:
    seen: list[tuple[str, str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, json.loads(request.content)))
        if json.loads(request.content)["sequence"] == 7:
            return httpx.Response(200, json={"head_sequence": 7})
        return httpx.Response(409, json={"code": 32775, "name": "InvalidState", "message": "x",
                                         "head_sequence": 7, "reason": "heartbeat for point 6, head is 7"})

    assert _run(_client(handler), "heartbeat", "ABC", 7) == 7
    with pytest.raises(OutOfSequence) as info:
        _run(_client(handler), "heartbeat", "ABC", 6)
    assert info.value.head_sequence == 7 and info.value.message_id == "LogOutOfSequence"
    assert seen[0] == ("POST", "/peer/v1/replicas/ABC/heartbeat", {"sequence": 7})
