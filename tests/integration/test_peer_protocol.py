"""The peer listener's buffered HTTP protocol under uvicorn on a real socket: bodies larger than its buffer,
requests cut at every odd place and pipelined on one connection arrive whole and in order."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket

import uvicorn

from standby.api.gate import Receive, Scope, Send
from standby.peer.app import PeerBufferedProtocol


async def _digest_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer each POST with the sha256 of its body and the client certificate the protocol saw."""
    assert scope["type"] == "http"
    digest = hashlib.sha256()
    while True:
        message = await receive()
        digest.update(message.get("body", b""))
        if not message.get("more_body"):
            break
    seen = scope["state"].get("peer_certificate", "missing")
    body = f"{digest.hexdigest()} {seen}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _request(body: bytes) -> bytes:
    return b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def _answers(raw: bytes, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        head, _, rest = raw.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        out.append(rest[:length])
        raw = rest[length:]
    return out


async def _exchange(port: int, bodies: list[bytes], piece: int) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    wire = b"".join(_request(body) for body in bodies)
    for offset in range(0, len(wire), piece):  # pipelined, cut at arbitrary places
        writer.write(wire[offset:offset + piece])
        await writer.drain()
    raw = b""
    while raw.count(b"HTTP/1.1 200") < len(bodies):  # answers hold digests only, never body bytes
        chunk = await asyncio.wait_for(reader.read(65536), 30)
        assert chunk, "the server closed the connection early"
        raw += chunk
    writer.close()
    return _answers(raw, len(bodies))


def test_bodies_larger_than_the_buffer_arrive_whole_and_in_order() -> None:
    bodies = [os.urandom(700_000), b"", os.urandom(3), os.urandom(300_000)]
    expected = [hashlib.sha256(body).hexdigest().encode() + b" None" for body in bodies]

    async def scenario() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = uvicorn.Config(_digest_app, host="127.0.0.1", port=port, http=PeerBufferedProtocol,
                                lifespan="off", log_config=None, access_log=False)
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            for piece in (1_000_000, 65_537, 4_093):
                assert await _exchange(port, bodies, piece) == expected, piece
        finally:
            server.should_exit = True
            await serving

    asyncio.run(scenario())
