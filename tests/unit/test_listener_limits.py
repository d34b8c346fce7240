"""Listener limits as pure logic: the cap from the file limit, once-per-episode logging, the budget's doors,
``[listeners.limits]`` in the config, the REST/peer body limit and the CIM-XML parser's limits."""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pywbem import _tupletree as tt

from standby.cimxml import wire
from standby.cimxml.messages import ProtocolError
from standby.daemon.config import ListenerLimits, parse_config, to_toml
from standby.daemon.toml_table import ConfigError
from standby.edge.bodylimit import BodyLimit, Exempt
from standby.edge.limits import (
    ConnectionBudget,
    Doors,
    EpisodeLog,
    connection_cap,
    peer_reserve,
    relief_level,
)

MIB = 1024 * 1024


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "test.limits"]


# ------------------------------------------------------------------------------------------- the cap


@pytest.mark.parametrize(("nofile", "cap"), [
    (1024, 768),  # systemd's default soft limit: 256 descriptors stay for QEMU, images, the database
    (4096, 3584),
    (65536, 4096),  # past a few thousand the event loop is the limit, not the file table
    (300, 44),
    (100, 16),  # never below the minimum
])
def test_connection_cap_leaves_headroom_below_the_file_limit(nofile: int, cap: int) -> None:
    assert connection_cap(nofile) == cap
    assert connection_cap(nofile) <= max(16, nofile - 256)


def test_the_public_listeners_leave_a_quarter_to_the_peer_listener() -> None:
    doors = Doors.for_cap(768, per_client=64, peer_per_client=256, control=64)
    assert peer_reserve(768) == 192
    assert (doors.public.ceiling, doors.http.ceiling, doors.peer.ceiling) == (576, 576, 768)
    assert doors.public.pool == doors.http.pool == doors.peer.pool == "tcp"
    assert (doors.control.pool, doors.control.ceiling, doors.control.per_client) == ("control", 64, None)


def test_relief_level_is_below_the_limit() -> None:
    assert [relief_level(n) for n in (1, 4, 24, 100)] == [0, 3, 18, 75]


# ---------------------------------------------------------------------------------------- episodes


def test_an_episode_logs_once_when_hit_and_once_when_relieved(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    episode = EpisodeLog(logging.getLogger("test.limits"), "limit reached", "limit relieved", {"x": 1}, clock)
    caplog.set_level(logging.INFO, "test.limits")
    episode.relieve()  # nothing running: nothing to say
    for _ in range(1000):
        episode.hit()
    clock.now += 12.5
    episode.relieve()
    episode.relieve()
    assert _messages(caplog) == ["limit reached", "limit relieved"]
    end = caplog.records[-1]
    assert end.fields == {"x": 1, "refused": 1000, "seconds": 12.5}  # type: ignore[attr-defined]
    episode.hit()  # a new episode
    assert _messages(caplog)[-1] == "limit reached" and len(_messages(caplog)) == 3


# -------------------------------------------------------------------------------------------- budget


def test_the_shared_cap_refuses_and_logs_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "test.limits")
    budget = ConnectionBudget(logging.getLogger("test.limits"))
    doors = Doors.for_cap(40, per_client=100, peer_per_client=100, control=4)
    slots = [budget.admit(doors.public, f"10.0.0.{i % 7}") for i in range(30)]
    admitted = [slot for slot in slots if slot is not None]
    assert len(admitted) == doors.public.ceiling == 30
    assert all(budget.admit(doors.public, "10.0.0.99") is None for _ in range(500))
    assert budget.admit(doors.http, "10.0.0.99") is None  # HTTP shares the public ceiling
    peer = [budget.admit(doors.peer, "10.1.0.1") for _ in range(10)]
    assert all(peer) and budget.admit(doors.peer, "10.1.0.1") is None  # the reserve, then the cap
    control = [budget.admit(doors.control, None) for _ in range(4)]
    assert all(control) and budget.admit(doors.control, None) is None  # a pool of its own
    assert budget.open("tcp") == 40 and budget.open("control") == 4
    warnings = [m for m in _messages(caplog) if "reached" in m]
    assert warnings == ["connection limit 30 reached; refusing new connections",
                        "connection limit 40 reached; refusing new connections",
                        "connection limit 4 reached; refusing new connections"]
    for slot in [*admitted, *peer]:
        assert slot is not None
        slot.release()
        slot.release()  # idempotent
    assert budget.open("tcp") == 0
    assert _messages(caplog).count("accepting connections again") == 2  # public and peer, once each
    assert budget.admit(doors.public, "10.0.0.1") is not None


def test_one_address_cannot_take_more_than_its_share(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "test.limits")
    budget = ConnectionBudget(logging.getLogger("test.limits"))
    doors = Doors.for_cap(400, per_client=8, peer_per_client=16, control=4)
    mine = [budget.admit(doors.public, "192.0.2.1") for _ in range(8)]
    assert all(mine)
    assert all(budget.admit(doors.public, "192.0.2.1") is None for _ in range(100))
    assert budget.admit(doors.public, "192.0.2.2") is not None  # another address is served
    assert len([m for m in _messages(caplog) if "client connection limit 8" in m]) == 1
    for slot in mine:
        assert slot is not None
        slot.release()
    assert _messages(caplog).count("client below its connection limit again") == 1
    assert budget.by_client == {("https", "192.0.2.2"): 1}


# ---------------------------------------------------------------------------------------- config


def test_listener_limits_defaults_and_round_trip(tmp_path: Path) -> None:
    config = parse_config({}, data_dir=tmp_path)
    limits = config.listeners.limits
    assert limits == ListenerLimits()
    timeouts = (limits.header_timeout_seconds, limits.body_timeout_seconds, limits.idle_timeout_seconds)
    assert timeouts == (10, 30, 5)
    assert (limits.max_connections, limits.per_client_connections, limits.peer_per_client_connections,
            limits.control_connections) == (0, 64, 256, 64)
    assert (limits.rest_body_bytes, limits.cim_body_bytes, limits.peer_body_bytes) == (MIB, 4 * MIB, MIB)
    changed = parse_config({"listeners": {"limits": {"max_connections": 100, "cim_body_bytes": 65536,
                                                     "header_timeout_seconds": 2.5}}}, data_dir=tmp_path)
    assert changed.listeners.limits.max_connections == 100
    assert changed.listeners.limits.header_timeout_seconds == 2.5
    assert parse_config(tomllib.loads(to_toml(changed))) == changed


@pytest.mark.parametrize(("limits", "error"), [
    ({"max_connections": 2}, "max_connections: must be 0"),
    ({"max_connections": 10.5}, "expected a whole number"),
    ({"per_client_connections": 0}, "per_client_connections: must be at least 1"),
    ({"header_timeout_seconds": 0}, "header_timeout_seconds: must be at least 0.1"),
    ({"rest_body_bytes": 10}, "rest_body_bytes: must be at least 1024"),
    ({"body_limit": 1}, "body_limit"),
])
def test_listener_limits_errors(tmp_path: Path, limits: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_config({"listeners": {"limits": limits}}, data_dir=tmp_path)


# ------------------------------------------------------------------------------------- body limits


def _limited_app() -> TestClient:
    app = FastAPI()

    @app.post("/json")
    async def json_route(request: Request) -> dict[str, int]:
        return {"keys": len(await request.json())}

    @app.put("/stream/{n}")
    async def stream_route(request: Request) -> dict[str, int]:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        return {"bytes": total}

    return TestClient(BodyLimit(app, 64 * 1024, exempt=[Exempt("PUT", re.compile(r"/stream/\d+"))]))


def test_a_declared_body_over_the_limit_gets_413_with_the_json_error_body() -> None:
    client = _limited_app()
    answer = client.post("/json", content=b"[" + b"1," * 40_000 + b"1]",
                         headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert answer.json() == {"code": 32773, "name": "InvalidParameter",
                             "message": "the request body is larger than 65536 bytes"}
    german = client.post("/json", content=b"x" * 70_000, headers={"accept-language": "de"})
    assert german.status_code == 413 and "größer als 65536 Byte" in german.json()["message"]
    assert client.post("/json", json={"a": 1}).json() == {"keys": 1}


def test_a_chunked_body_is_cut_when_it_passes_the_limit() -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 4096

    answer = _limited_app().post("/json", content=chunks())
    assert answer.status_code == 413 and answer.json()["name"] == "InvalidParameter"


def test_a_streamed_route_is_not_limited() -> None:
    answer = _limited_app().put("/stream/7", content=b"y" * (3 * MIB))
    assert answer.status_code == 200 and answer.json() == {"bytes": 3 * MIB}


# ------------------------------------------------------------------------------------ CIM-XML parser


_REQUEST = (b'<?xml version="1.0" encoding="utf-8"?>\n<CIM CIMVERSION="2.0" DTDVERSION="2.0">'
            b'<MESSAGE ID="7" PROTOCOLVERSION="1.0"><SIMPLEREQ><IMETHODCALL NAME="GetInstance">'
            b'<LOCALNAMESPACEPATH><NAMESPACE NAME="root"/><NAMESPACE NAME="cimv2"/></LOCALNAMESPACEPATH>'
            b'<IPARAMVALUE NAME="InstanceName"><INSTANCENAME CLASSNAME="CIM_X">'
            b'<KEYBINDING NAME="Id"><KEYVALUE VALUETYPE="string">a &amp; b\nline 2</KEYVALUE></KEYBINDING>'
            b'</INSTANCENAME></IPARAMVALUE></IMETHODCALL></SIMPLEREQ></MESSAGE></CIM>\n')


def test_the_tuple_tree_is_the_one_pywbem_builds() -> None:
    assert wire.tuple_tree(_REQUEST) == tt.xml_to_tupletree_sax(_REQUEST, "test")
    text = b"line\n" * 50_000
    body = _REQUEST.replace(b"a &amp; b\nline 2", text)
    assert wire.tuple_tree(body) == tt.xml_to_tupletree_sax(body, "test")


def test_many_lines_of_text_parse_in_linear_time() -> None:
    # pywbem's own handler joins text quadratically (minutes of CPU for this); no timing asserted here,
    # bench/cimxml_parse.py measures it.
    body = _REQUEST.replace(b"a &amp; b\nline 2", b"ab\n" * (1024 * 1024))
    call = wire.parse_request(body)
    assert call is not None


def test_deep_nesting_is_refused() -> None:
    body = b"<CIM>" + b"<A>" * (wire.MAX_DEPTH + 1) + b"</A>" * (wire.MAX_DEPTH + 1) + b"</CIM>"
    with pytest.raises(ProtocolError) as refused:
        wire.parse_request(body)
    assert refused.value.status == 400 and "nested deeper" in refused.value.message


def test_a_dtd_is_refused_even_when_the_bytes_do_not_show_it() -> None:
    body = '<?xml version="1.0" encoding="utf-16"?><!DOCTYPE CIM [<!ENTITY a "aaaa">]><CIM>&a;</CIM>'
    encoded = body.encode("utf-16")
    assert b"<!DOCTYPE" not in encoded
    with pytest.raises(ProtocolError) as refused:
        wire.parse_request(encoded)
    assert "DTD" in refused.value.message
