"""P10: CIM-XML round trips through pywbem against host A's real daemon: GetInstance of a VM, and
InvokeMethod (InitiateFailover refused by its precondition — the whole dispatch without a job — and
GetSystemCertificates), one connection, sequential calls, over loopback HTTP (5988-style listener) and
HTTPS with Basic auth. Moved here from tests/interop/bench_roundtrip.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pywbem

from bench.common import Figure, Options, median, percentile, say
from bench.rig import Site
from standby.testing import cim
from standby.testing.host import PASSWORD, USER, VIRT, TestHost

WARM_UP = 20


def _samples(call: Callable[[], object], count: int) -> list[float]:
    for _ in range(WARM_UP):  # connection, auth cache, schema caches
        call()
    out = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def _define_vm(host: TestHost) -> str:
    with host.control() as client:
        answer = client.post("/api/v1/vms", json={"name": "p10", "memory": "64M", "disks": [{"size": "16M"}]})
    answer.raise_for_status()
    return str(answer.json()["id"])


def _connections(host: TestHost) -> list[tuple[str, Any]]:
    http = pywbem.WBEMConnection(f"http://127.0.0.1:{host.daemon.http_port}", (USER, PASSWORD),
                                 default_namespace=VIRT, timeout=60)
    return [("HTTP", http), ("HTTPS", host.cim())]


def run_row(site: Site, opts: Options) -> list[Figure]:
    """The row's figures."""
    host = site.get().a
    count = 200 if opts.quick else 1000
    vm = cim.vm_path(_define_vm(host))
    figures = []
    for transport, conn in _connections(host):
        service = cim.service(conn)
        calls: list[tuple[str, Callable[[], object]]] = [
            ("GetInstance Msvm_ComputerSystem", lambda c=conn: c.GetInstance(vm)),
            ("InvokeMethod InitiateFailover (refused, 32775)",
             lambda c=conn, s=service: c.InvokeMethod("InitiateFailover", s, ComputerSystem=vm)),
            ("InvokeMethod GetSystemCertificates",
             lambda c=conn, s=service: c.InvokeMethod("GetSystemCertificates", s)),
        ]
        for name, call in calls:
            say(f"P10: {count} × {name} over {transport}")
            samples = _samples(call, count)
            figures.append(Figure("P10", f"{name}, {transport}", median(samples), "ms median",
                                  target="report median / p99",
                                  note=f"p90 {percentile(samples, 90):.2f} ms, "
                                       f"p99 {percentile(samples, 99):.2f} ms, n={count}"))
    return figures
