"""The replica's HTTP receive path alone: a log body over mutual TLS into the peer listener, nothing applied.

    .venv/bin/python -m bench.receive_alone [--mib 256] [--repeat 3] [--protocol h11,httptools]
                                            [--server-loop asyncio,uvloop] [--client-loop asyncio,uvloop]
                                            [--malloc tuned|default]

The server is a child process running uvicorn with the peer listener's TLS settings (site CA, client
certificate required) and protocol class, in front of ``PeerGate`` and an app that drains the body the way
the ``put_log`` route does (Starlette's ``request.stream()``) and answers as the route does. The client is
``PeerClient.put_log`` with host A's certificate, streaming 1 MiB chunks from memory. Every combination
runs once per round, round after round (paired), and each reports the median wall time and the CPU seconds
per GiB of the server process and of this (client) process: CPU is the steadier figure on a shared machine.
The server sets the daemon's malloc thresholds (``standby.daemon.allocator``) as ``standby serve`` does;
``--malloc default`` leaves glibc's defaults in both processes, for comparison (run it and the default one
after the other). ``bench.p04_throughput`` reports the httptools/asyncio figure as a breakdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import resource
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from standby.edge.asgi import Receive, Scope, Send

MiB = 1 << 20
PROTOCOLS = ("h11", "httptools")
LOOPS = ("asyncio", "uvloop")


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def _protocol(name: str) -> type[asyncio.Protocol]:
    from standby.peer import app

    return app.PeerH11Protocol if name == "h11" else app.PeerHttpToolsProtocol


async def _drain(scope: Scope, receive: Receive, send: Send) -> None:
    """Read the body as the put_log route does; answer as it does."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    total = 0
    async for chunk in Request(scope, receive).stream():
        total += len(chunk)
    await JSONResponse({"head_sequence": 1, "point_id": None, "applied": total > 0})(scope, receive, send)


def serve(args: argparse.Namespace) -> None:
    """The child: one uvicorn server on ``args.port`` until killed."""
    import uvicorn

    from standby.daemon import allocator
    from standby.peer.app import PeerGate

    if args.malloc == "tuned":
        allocator.tune()
    config = uvicorn.Config(PeerGate(_drain), host="127.0.0.1", port=args.port, http=_protocol(args.protocol),
                            lifespan="off", log_config=None,
                            access_log=False, ssl_certfile=args.cert, ssl_keyfile=args.key,
                            ssl_ca_certs=args.ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    server = uvicorn.Server(config)
    with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
        runner.run(server.serve())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Server:
    """A child serving one protocol on one loop."""

    def __init__(self, protocol: str, loop: str, certs: dict[str, Path], malloc: str = "tuned") -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.receive_alone", "--serve",
                                      "--protocol", protocol, "--server-loop", loop, "--port", str(self.port),
                                      "--ca", str(certs["ca"]), "--cert", str(certs["b.crt"]),
                                      "--key", str(certs["b.key"]), "--malloc", malloc],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.1)
        self.close()
        raise RuntimeError("the receive server did not start")

    def close(self) -> None:
        """Stop the child."""
        self.proc.kill()
        self.proc.wait()


async def _send(url: str, server_pid: int, certs: dict[str, Path], data: bytes,
                rounds: int) -> list[tuple[float, float, float]]:
    from standby.peer.client import PeerClient
    from standby.peer.tls import PeerTls

    client = PeerClient(url, PeerTls(certs["ca"], certs["a.crt"], certs["a.key"]), timeout=120)

    async def chunks(size: int) -> AsyncIterator[bytes]:
        for offset in range(0, size, MiB):
            yield data[offset:offset + MiB]

    out = []
    try:
        await client.put_log("VM", 1, chunks(MiB))  # connection + handshake outside the timing
        for _ in range(rounds):
            wall, cpu, server = time.perf_counter(), _own_cpu(), _server_cpu(server_pid)
            await client.put_log("VM", 1, chunks(len(data)))
            out.append((time.perf_counter() - wall, _own_cpu() - cpu, _server_cpu(server_pid) - server))
    finally:
        await client.aclose()
    return out


def _certs(folder: Path) -> dict[str, Path]:
    from standby.testing.pki import SiteCA

    ca = SiteCA.create(folder / "ca")
    a = ca.issue(folder / "a", "a.bench", ("127.0.0.1",))
    b = ca.issue(folder / "b", "127.0.0.1", ("127.0.0.1",))
    return {"ca": ca.cert_file, "a.crt": a.cert_file, "a.key": a.key_file, "b.crt": b.cert_file,
            "b.key": b.key_file}


def measure(mib: int, repeat: int, protocols: list[str], server_loops: list[str], client_loops: list[str], *,
            malloc: str = "tuned") -> dict[str, dict[str, list[float]]]:
    """Per combination "protocol/server loop/client loop": wall seconds and server/client CPU seconds."""
    data = os.urandom(mib * MiB)
    combos = list(itertools.product(protocols, server_loops, client_loops))
    results: dict[str, dict[str, list[float]]] = {
        "/".join(c): {"wall": [], "server cpu": [], "client cpu": []} for c in combos}
    with tempfile.TemporaryDirectory(prefix="sb-recv-") as tmp:
        certs = _certs(Path(tmp))
        for _ in range(repeat):
            for protocol, server_loop, client_loop in combos:
                server = Server(protocol, server_loop, certs, malloc)
                try:
                    with asyncio.Runner(loop_factory=_loop_factory(client_loop)) as runner:
                        ((wall, client_cpu, server_cpu),) = runner.run(
                            _send(f"https://127.0.0.1:{server.port}", server.proc.pid, certs, data, 1))
                finally:
                    server.close()
                entry = results["/".join((protocol, server_loop, client_loop))]
                entry["wall"].append(wall)
                entry["server cpu"].append(server_cpu)
                entry["client cpu"].append(client_cpu)
    return results


def main() -> None:
    """Print one line per combination."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--protocol", default=",".join(PROTOCOLS))
    parser.add_argument("--server-loop", default="asyncio")
    parser.add_argument("--client-loop", default="asyncio")
    parser.add_argument("--malloc", choices=("tuned", "default"), default="tuned")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        args.loop = args.server_loop
        serve(args)
        return
    if args.malloc == "tuned":
        from standby.daemon import allocator

        allocator.tune()
    results = measure(args.mib, args.repeat, args.protocol.split(","), args.server_loop.split(","),
                      args.client_loop.split(","), malloc=args.malloc)
    gib = args.mib / 1024
    for name, entry in results.items():
        wall = statistics.median(entry["wall"])
        samples = [round(args.mib / w) for w in entry["wall"]]
        print(f"{name:28} {args.mib / wall:7.1f} MiB/s (samples {samples})"
              f"  server CPU {statistics.median(entry['server cpu']) / gib:5.2f} s/GiB"
              f"  client CPU {statistics.median(entry['client cpu']) / gib:5.2f} s/GiB")


if __name__ == "__main__":
    main()
