"""P6: how many idle VMs one host replicates at a 30 s interval, and the daemon's CPU use meanwhile.

A fresh two-host site (its own, so the VMs go away with it): on host A, N VMs (64 MiB RAM, a blank 64 MiB
disk, QEMU started then paused) are defined, started and replicated to B through the REST API with
ReplicationInterval 30 s, exactly as an operator would; A's real scheduler then runs every cycle. An idle
VM's cycle is a heartbeat (QMP dirty count of the recording bitmap, then a mutual-TLS POST; B checks its head
and records LastReplicationTime, no new point); a VM that wrote gets the full cycle (cut, delta read, log,
B applies). After all N are Replicating, the CPU of A's daemon (with the qemu-img/qemu-nbd children it
reaps), B's daemon and all QEMUs is measured over a window of several intervals. 20 VMs and 120 s by
default; ``--full`` runs 200 VMs for 300 s. "Cycles due" is N × window ÷ 30 s; "done" counts successful
cycles, heartbeats included (``replication_cycles.detail`` = "heartbeat") - the note says how many were
heartbeats and how many shipped a log.

A second figure, in process (``bench.rig.Primary`` against the shared site's B): the CPU one idle cycle
costs the primary process and B's daemon, heartbeat against the full empty cut it replaces (the same
runner with the dirty count withheld), in alternating rounds so both see the same machine load.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import Figure, Options, say
from bench.rig import Primary, PrimaryVm, cpu_seconds
from standby.engine.cycle import HEARTBEAT
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


def _cycles(host: TestHost, since: datetime) -> tuple[int, int, int]:
    """(successful, of which heartbeats, unsuccessful) cycles A recorded since ``since`` (read-only)."""
    conn = sqlite3.connect(f"file:{host.data_dir / 'standby.db'}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT outcome, detail = ?, count(*) FROM replication_cycles "
                            "WHERE started_at >= ? GROUP BY 1, 2", (HEARTBEAT, since.isoformat())).fetchall()
    finally:
        conn.close()
    ok = sum(n for outcome, _, n in rows if outcome == "success")
    beats = sum(n for outcome, beat, n in rows if outcome == "success" and beat)
    return ok, beats, sum(n for outcome, _, n in rows if outcome != "success")


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
    ok, beats, bad = _cycles(site.a, since)
    return {"cpu": {k: (after[k] - before[k]) / wall * 100 for k in before}, "ok": ok, "beats": beats,
            "bad": bad, "wall": wall, "rss": _rss_mib(qemus), "qemus": len(qemus)}


@contextlib.contextmanager
def _no_dirty_count(primary: Primary) -> Iterator[None]:
    """The runner as before heartbeats: the dirty count is "unknown", so every cycle cuts and ships."""
    async def unknown(*_args: Any) -> int | None:
        return None

    primary.capture.dirty_bytes = unknown  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        del primary.capture.dirty_bytes


async def _round(primary: Primary, pvm: PrimaryVm, cycles: int, b_pid: int) -> tuple[float, float]:
    """CPU ms per cycle of (this process, B's daemon) over ``cycles`` back-to-back idle cycles."""
    me0, b0 = cpu_seconds(os.getpid()), cpu_seconds(b_pid)
    for _ in range(cycles):
        await primary.cycle(pvm)
    return ((cpu_seconds(os.getpid()) - me0) * 1000 / cycles, (cpu_seconds(b_pid) - b0) * 1000 / cycles)


async def _per_cycle(site: TwoHosts, rounds: int, cycles: int) -> dict[str, list[tuple[float, float]]]:
    folder = Path(tempfile.mkdtemp(prefix="p6-", dir="/tmp"))
    primary = Primary(site, folder)
    try:
        pvm = await primary.add_vm("idle", 64 << 20)
        await primary.enable(pvm, primary.settings(interval=INTERVAL))
        b = site.b.daemon.process
        assert b is not None
        out: dict[str, list[tuple[float, float]]] = {"heartbeat": [], "cut": []}
        for _ in range(rounds):  # alternating, so both modes see the same load
            out["heartbeat"].append(await _round(primary, pvm, cycles, b.pid))
            with _no_dirty_count(primary):
                out["cut"].append(await _round(primary, pvm, cycles, b.pid))
        primary.forget_replica(pvm)
        return out
    finally:
        await primary.close()


def _cycle_figure(site: TwoHosts, opts: Options) -> Figure:
    rounds, cycles = (3, 10) if opts.quick else (max(3, opts.repeat), 20)
    got = asyncio.run(_per_cycle(site, rounds, cycles))
    beat = [a + b for a, b in got["heartbeat"]]
    cut = [a + b for a, b in got["cut"]]
    parts = {mode: (statistics.median(a for a, _ in v), statistics.median(b for _, b in v))
             for mode, v in got.items()}
    value, baseline = statistics.median(beat), statistics.median(cut)
    note = (f"primary {parts['heartbeat'][0]:.1f} + replica {parts['heartbeat'][1]:.1f} ms per heartbeat; "
            f"primary {parts['cut'][0]:.1f} + replica {parts['cut'][1]:.1f} ms per empty cut and log "
            f"(RecoveryHistory 0); medians of {rounds} alternating rounds of {cycles} cycles")
    return Figure("P6", "CPU of one idle cycle (primary process + replica daemon)", value, "ms",
                  baseline=baseline, baseline_name="the same cycle cut and shipped (no dirty count)",
                  ratio=value / baseline if baseline else None, ratio_name="heartbeat ÷ cut",
                  samples=beat, note=note)


def run_row(site: Any, opts: Options) -> list[Figure]:
    """The row's figures: the in-process idle cycle on the shared site, the fleet on a site of its own."""
    figures = [_cycle_figure(site.get(), opts)]
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
    note = (f"{got['ok']} cycles done of {expected:.0f} due ({got['beats']} heartbeats, "
            f"{got['ok'] - got['beats']} logs), {got['bad']} missed/failed in {got['wall']:.0f} s; "
            f"replica daemon {cpu['b']:.1f} %, all {got['qemus']} QEMUs {cpu['qemu']:.1f} % of one core, "
            f"QEMU RSS {got['rss']:.0f} MiB")
    fleet = Figure("P6", f"{count} idle VMs replicated at {INTERVAL} s: primary daemon CPU", cpu["a"],
                   "% of one core", target=f"{TARGET_VMS} VMs, < {TARGET_CPU:.0f} %",
                   met=(count >= TARGET_VMS and cpu["a"] < TARGET_CPU) if count >= TARGET_VMS else None,
                   note=note + ("" if count >= TARGET_VMS else
                                f"; {count} VMs is the short default, --full runs {TARGET_VMS}"))
    return [*figures, fleet]
