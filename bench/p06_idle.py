"""P6: how many idle VMs one host replicates at a 30 s interval, and the daemon's CPU use meanwhile.

A fresh two-host site (its own, so the VMs go away with it): on host A, N VMs (64 MiB RAM, a blank 64 MiB
disk, QEMU started then paused) are defined, started and replicated to B through the REST API with
ReplicationInterval 30 s, exactly as an operator would; A's real scheduler then runs every cycle (cut,
empty delta read, log, mutual-TLS put, B applies an empty point and merges). After all N are Replicating,
the CPU of A's daemon (with the qemu-img/qemu-nbd children it reaps), B's daemon and all QEMUs is measured
over a window of several intervals. 20 VMs and 120 s by default; ``--full`` runs 200 VMs for 300 s.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from bench.common import Figure, Options, say
from bench.rig import cpu_seconds
from standby.testing.cluster import TwoHosts, processes_using
from standby.testing.host import TestHost

INTERVAL = 30
TARGET_VMS = 200
TARGET_CPU = 10.0  # % of one core


def _job(client: httpx.Client, answer: httpx.Response, what: str) -> None:
    if answer.status_code >= 400:
        raise RuntimeError(f"{what}: HTTP {answer.status_code} {answer.text[:300]}")
    job = answer.json()
    deadline = time.monotonic() + 600
    while not job.get("terminal") and time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job['id']}/wait", params={"timeout": 30}, timeout=60).json()
    if job.get("state_name") not in ("Completed", "CompletedWithWarnings"):
        raise RuntimeError(f"{what}: {job.get('state_name')} {job.get('error_description')}")


def _add(site: TwoHosts, client: httpx.Client, index: int) -> str:
    answer = client.post("/api/v1/vms", json={"name": f"idle{index:03d}", "memory": "64M",
                                              "disks": [{"size": "64M"}]})
    answer.raise_for_status()
    vm_id = str(answer.json()["id"])
    _job(client, client.post(f"/api/v1/vms/{vm_id}/start", params={"timeout": 120}), "start")
    _job(client, client.post(f"/api/v1/vms/{vm_id}/pause", params={"timeout": 120}), "pause")
    body = {"replica": site.b.address, "port": site.b.peer_port, "interval": INTERVAL}
    _job(client, client.post(f"/api/v1/vms/{vm_id}/replication", json=body), "enable replication")
    _job(client, client.post(f"/api/v1/vms/{vm_id}/replication/start", json={}), "initial replication")
    return vm_id


def _cycles(host: TestHost, since: datetime) -> tuple[int, int]:
    """(successful, unsuccessful) cycles A recorded since ``since`` (read-only look at its store)."""
    conn = sqlite3.connect(f"file:{host.data_dir / 'standby.db'}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT outcome, count(*) FROM replication_cycles WHERE started_at >= ? "
                            "GROUP BY outcome", (since.isoformat(),)).fetchall()
    finally:
        conn.close()
    counts = dict(rows)
    ok = counts.pop("success", 0)
    return ok, sum(counts.values())


def _qemus(host: TestHost) -> list[int]:
    return [pid for pid, cmd in processes_using(host.data_dir) if "qemu-system" in cmd]


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def _measure(site: TwoHosts, count: int, window: float) -> dict[str, Any]:
    with site.a.control() as client:
        for index in range(count):
            _add(site, client, index)
            if (index + 1) % 10 == 0:
                say(f"P6: {index + 1}/{count} VMs replicating")
    time.sleep(INTERVAL)  # let the first round of delta cycles settle in
    a, b = site.a.daemon.process, site.b.daemon.process
    assert a is not None and b is not None
    qemus = _qemus(site.a)
    before = {"a": cpu_seconds(a.pid), "b": cpu_seconds(b.pid), "qemu": sum(cpu_seconds(p) for p in qemus)}
    since = datetime.now(UTC)
    t0 = time.monotonic()
    time.sleep(window)
    wall = time.monotonic() - t0
    after = {"a": cpu_seconds(a.pid), "b": cpu_seconds(b.pid), "qemu": sum(cpu_seconds(p) for p in qemus)}
    ok, bad = _cycles(site.a, since)
    return {"cpu": {k: (after[k] - before[k]) / wall * 100 for k in before}, "ok": ok, "bad": bad,
            "wall": wall, "rss": _rss_mib(qemus), "qemus": len(qemus)}


def run_row(site: Any, opts: Options) -> list[Figure]:
    """The row's figures (on a site of its own)."""
    count = TARGET_VMS if opts.full else (5 if opts.quick else 20)
    window = 300.0 if opts.full else (60.0 if opts.quick else 120.0)
    own = TwoHosts.start(network_mode="loopback")
    try:
        say(f"P6: {count} idle VMs at {INTERVAL} s, then {window:.0f} s of measurement")
        got = _measure(own, count, window)
    finally:
        own.close()
    expected = count * got["wall"] / INTERVAL
    cpu = got["cpu"]
    note = (f"{got['ok']} cycles succeeded ({expected:.0f} due), {got['bad']} missed/failed in "
            f"{got['wall']:.0f} s; "
            f"replica daemon {cpu['b']:.1f} %, all {got['qemus']} QEMUs {cpu['qemu']:.1f} % of one core, "
            f"QEMU RSS {got['rss']:.0f} MiB")
    return [Figure("P6", f"{count} idle VMs replicated at {INTERVAL} s: primary daemon CPU", cpu["a"],
                   "% of one core", target=f"{TARGET_VMS} VMs, < {TARGET_CPU:.0f} %",
                   met=(count >= TARGET_VMS and cpu["a"] < TARGET_CPU) if count >= TARGET_VMS else None,
                   note=note + ("" if count >= TARGET_VMS else
                                f"; {count} VMs is the short default, --full runs {TARGET_VMS}"))]
