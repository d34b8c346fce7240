"""A wrong-password flood against a daemon's HTTPS listener, as a separate process (so its CPU is not the test
process's, and so it can run inside another host's network namespace).

    python -m standby.testing.flood --url https://10.0.0.2:5989 --ca ca.crt --clients 20 --seconds 10

Each client keeps one connection and sends, as fast as answers come (plus ``--pause``), a REST ``GET
/api/v1/vms`` or a CIM-XML ``EnumerateInstances`` (alternating by client) with a fresh wrong password, and
ignores ``Retry-After`` as an attacker would. It prints one JSON object: the answers by status, the
``Retry-After`` values seen, transport errors, and per status the median answer time in ms.

``flood_sources``, ``start_flood``, ``head_sequence`` and ``audit_lines`` set it up against a ``TwoHosts``
site and read the results back (``tests/integration/test_auth_flood.py``, ``bench/auth_flood.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:  # the flood process itself needs none of the site's machinery
    from standby.testing.cluster import TwoHosts
    from standby.testing.host import TestHost

LOOPBACK_FLOOD_BASE = 200  # 127.0.0.200…: no host of a loopback site uses these

CIM_ENUMERATE = (
    b'<?xml version="1.0" encoding="utf-8"?><CIM CIMVERSION="2.0" DTDVERSION="2.0"><MESSAGE ID="1" '
    b'PROTOCOLVERSION="1.0"><SIMPLEREQ><IMETHODCALL NAME="EnumerateInstances"><LOCALNAMESPACEPATH>'
    b'<NAMESPACE NAME="root"/><NAMESPACE NAME="virtualization"/><NAMESPACE NAME="v2"/></LOCALNAMESPACEPATH>'
    b'<IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="Msvm_ComputerSystem"/></IPARAMVALUE></IMETHODCALL>'
    b"</SIMPLEREQ></MESSAGE></CIM>"
)
CIM_HEADERS = {"CIMOperation": "MethodCall", "CIMMethod": "EnumerateInstances",
               "CIMObject": "root/virtualization/v2", "Content-Type": 'application/xml; charset="utf-8"'}


@dataclass
class Tally:
    """What the clients saw."""

    statuses: Counter[int] = field(default_factory=Counter)
    retry_after: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    times: dict[int, list[float]] = field(default_factory=dict)

    def report(self, seconds: float) -> dict[str, object]:
        """The JSON the process prints."""
        return {
            "seconds": round(seconds, 2),
            "requests": sum(self.statuses.values()),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "retry_after": dict(self.retry_after.most_common(10)),
            "errors": dict(self.errors),
            "median_ms": {str(k): round(statistics.median(v) * 1000, 1)
                          for k, v in sorted(self.times.items())},
        }


async def _client(index: int, args: argparse.Namespace, context: ssl.SSLContext, until: float,
                  tally: Tally) -> None:
    binds = [b for b in (args.bind or "").split(",") if b]
    transport = httpx.AsyncHTTPTransport(verify=context, local_address=binds[index % len(binds)] if binds
                                         else None)
    cim = index % 2 == 1
    sent = 0
    async with httpx.AsyncClient(base_url=args.url, transport=transport, timeout=30,
                                 trust_env=False) as client:
        while time.monotonic() < until:
            sent += 1
            auth = (args.user, f"wrong-{index}-{sent}")
            started = time.monotonic()
            try:
                if cim:
                    answer = await client.post("/cimom", content=CIM_ENUMERATE, headers=CIM_HEADERS,
                                               auth=auth)
                else:
                    answer = await client.get("/api/v1/vms", auth=auth)
            except httpx.HTTPError as exc:
                tally.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.1)
                continue
            tally.statuses[answer.status_code] += 1
            tally.times.setdefault(answer.status_code, []).append(time.monotonic() - started)
            if "retry-after" in answer.headers:
                tally.retry_after[answer.headers["retry-after"]] += 1
            if args.pause:
                await asyncio.sleep(args.pause)


async def flood(args: argparse.Namespace) -> dict[str, object]:
    """Run the clients for ``args.seconds``; the tally."""
    context = ssl.create_default_context(cafile=args.ca)
    tally = Tally()
    started = time.monotonic()
    until = started + args.seconds
    await asyncio.gather(*(_client(i, args, context, until, tally) for i in range(args.clients)))
    return tally.report(time.monotonic() - started)


def attacker(site: TwoHosts) -> TestHost:
    """Where a flood comes from: host C when the site has one (a third host, at neither end of A → B),
    else host A."""
    return site.c if site.c is not None else site.a


def flood_sources(site: TwoHosts, count: int) -> list[str]:
    """``count`` source addresses on the attacker's side (the first is its own inside namespaces; the others
    are added to its namespace and go with it)."""
    if site.network.mode != "netns":
        return [f"127.0.0.{LOOPBACK_FLOOD_BASE + i}" for i in range(count)]
    a = attacker(site).net
    assert a.namespace is not None
    shown = subprocess.run(["ip", "-n", a.namespace, "-o", "-4", "addr", "show"], capture_output=True,
                           text=True, check=True).stdout
    device = next(line.split()[1] for line in shown.splitlines() if f" {a.address}/" in line)
    base = a.address.rsplit(".", 1)[0]
    extra = [f"{base}.{100 + i}" for i in range(count - 1)]
    for address in extra:
        subprocess.run(["ip", "-n", a.namespace, "addr", "add", f"{address}/24", "dev", device], check=True)
    return [a.address, *extra]


def start_flood(site: TwoHosts, sources: list[str], *, clients: int,
                seconds: float) -> subprocess.Popen[str]:
    """The flood process against B's HTTPS listener, run on the attacker (its namespace, if any)."""
    b = site.b
    command = [*attacker(site).net.prefix, sys.executable, "-m", "standby.testing.flood",
               "--url", f"https://{b.address}:{b.https_port}", "--ca", str(site.ca.cert_file),
               "--clients", str(clients), "--seconds", str(seconds), "--bind", ",".join(sources)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def head_sequence(host: TestHost, vm_id: str) -> int:
    """The replica's newest point sequence (-1: none), over the control socket (no password, no limiter)."""
    with host.control() as client:
        answer = client.get(f"/api/v1/vms/{vm_id}/points")
    answer.raise_for_status()
    return max((int(p["sequence"] or 0) for p in answer.json()), default=-1)


def audit_lines(host: TestHost) -> list[dict[str, Any]]:
    """The ``standby.audit`` lines of the host's log (written with ``[log] format = "json"``)."""
    lines = []
    for raw in host.daemon.log().splitlines():
        with contextlib.suppress(ValueError):
            line = json.loads(raw)
            if isinstance(line, dict) and line.get("logger") == "standby.audit":
                lines.append(line)
    return lines


@dataclass
class Watch:
    """While it runs: B's head sequence over time (control socket) and the answers a correct user gets over
    HTTPS from the test process (another address than the flood's)."""

    site: TwoHosts
    vm_id: str
    heads: list[tuple[float, int]] = field(default_factory=list)
    admitted: list[tuple[int, float]] = field(default_factory=list)
    period: float = 0.25
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def start(cls, site: TwoHosts, vm_id: str) -> Watch:
        """Begin sampling in a thread."""
        watch = cls(site, vm_id)
        watch._thread = threading.Thread(target=watch._run, name="flood-watch", daemon=True)
        watch._thread.start()
        return watch

    def finish(self) -> None:
        """Stop sampling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def gaps(self) -> list[float]:
        """Seconds between consecutive changes of the head (resolution: the sampling period)."""
        changes = [t for (_, before), (t, head) in itertools.pairwise(self.heads) if head > before]
        return [later - earlier for earlier, later in itertools.pairwise(changes)]

    def _run(self) -> None:
        b = self.site.b
        with b.rest() as rest:
            while not self._stop.is_set():
                with contextlib.suppress(Exception):
                    self.heads.append((time.monotonic(), head_sequence(b, self.vm_id)))
                started = time.monotonic()
                with contextlib.suppress(Exception):
                    self.admitted.append((rest.get("/api/v1/vms").status_code, time.monotonic() - started))
                self._stop.wait(self.period)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, flood, print the tally."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", required=True, help="https://host:port of the HTTPS listener")
    parser.add_argument("--ca", required=True, help="the CA file that signed its certificate")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds each client waits between requests")
    parser.add_argument("--user", default="admin", help="the user name tried (a real one costs the same)")
    parser.add_argument("--bind", default="", help="source addresses, comma-separated (client i: i mod n)")
    args = parser.parse_args(argv)
    json.dump(asyncio.run(flood(args)), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
