"""Half-sent requests (a slowloris), as a library for tests and as a process that can run inside another
host's network namespace.

    python -m standby.testing.halfopen --target 10.0.0.1:5989 --target 10.0.0.2:5989 --count 40 --seconds 30

As a process it keeps ``--count`` connections on each target open with half a request sent over TLS,
reopening whatever the daemon cuts, for ``--seconds``; then it prints one JSON object: per target, how many
connections it opened (``{"opened": {"10.0.0.1:5989": 412, ...}}``).
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import threading
from dataclasses import dataclass

#: Half a CIM-XML request: the headers never end.
HALF_REQUEST = b"POST /cimom HTTP/1.1\r\nHost: standby\r\nCIMOperation: Meth"


def half_open(address: str, port: int, *, tls: bool, source: str | None = None,
              handshake: bool = True) -> socket.socket | None:
    """A connection with half a request sent (or, ``handshake=False`` on TLS, nothing at all); None if the
    daemon refused it at once."""
    try:
        sock = socket.create_connection((address, port), timeout=10,
                                        source_address=(source, 0) if source else None)
    except OSError:
        return None
    try:
        if tls and handshake:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=address)
        if handshake or not tls:
            sock.sendall(HALF_REQUEST)
    except OSError:
        sock.close()
        return None
    return sock


@dataclass
class Flood:
    """Keeps ``count`` half-open TLS connections on one listener, reopening what the daemon cuts."""

    address: str
    port: int
    count: int
    stop: threading.Event
    opened: int = 0

    def run(self) -> None:
        """Until ``stop`` is set."""
        held: list[socket.socket] = []
        while not self.stop.is_set():
            while len(held) < self.count and not self.stop.is_set():
                sock = half_open(self.address, self.port, tls=True)
                self.opened += 1
                if sock is not None:
                    sock.setblocking(False)
                    held.append(sock)
            alive = []
            for sock in held:
                try:
                    gone = sock.recv(1) == b""
                except (BlockingIOError, ssl.SSLWantReadError):
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    sock.close()
                else:
                    alive.append(sock)
            held = alive
            self.stop.wait(0.2)
        for sock in held:
            sock.close()


def flood(targets: list[tuple[str, int]], *, count: int, seconds: float) -> dict[str, int]:
    """Run a ``Flood`` per target for ``seconds``; connections opened per ``address:port``."""
    stop = threading.Event()
    floods = [Flood(address, port, count, stop) for address, port in targets]
    threads = [threading.Thread(target=f.run, daemon=True) for f in floods]
    for thread in threads:
        thread.start()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join(30)
    return {f"{f.address}:{f.port}": f.opened for f in floods}


def _target(text: str) -> tuple[str, int]:
    address, _, port = text.rpartition(":")
    if not address or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not ADDRESS:PORT")
    return address, int(port)


def main() -> None:
    """The command line of the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m standby.testing.halfopen")
    parser.add_argument("--target", type=_target, action="append", required=True)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(json.dumps({"opened": flood(args.target, count=args.count, seconds=args.seconds)}))


if __name__ == "__main__":
    main()
