"""The steps of the replication and failover story, as a WMI script would run them against the two hosts.

Every step is a Hyper-V method over CIM-XML (pywbem, HTTPS) that waits for its job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pywbem

from standby.guest.build import GuestImage
from standby.testing import cim, guestvm
from standby.testing.cluster import TwoHosts
from standby.testing.guestvm import GuestVm
from standby.testing.host import TestHost

T = TypeVar("T")

# ReplicationState (hyperv-api §6.1) and health (§6.2) values the story waits for.
READY = 1
REPLICATING = 3
SYNCED = 4  # prepared for planned failover
RECOVERED = 5
COMMITTED = 6
RESYNC_REQUIRED = 9
HEALTH_CRITICAL = 3

def poll(what: str, probe: Callable[[], T | None], *, timeout: float, interval: float = 0.5) -> T:
    """Call ``probe`` until it answers something other than None/False; raise with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def connection_point(site: TwoHosts, host: TestHost) -> str:
    """How one host names another: its DNS name inside namespaces (resolvable there), else its address."""
    return host.name if site.network.mode == "netns" else host.address


# -- replication ---------------------------------------------------------------------------------------


def enable_replication(site: TwoHosts, primary: TestHost, vm: GuestVm, *, interval: int = 2,
                       history: int = 24) -> None:
    """CreateReplicationRelationship to the other host, then StartReplication (network IR)."""
    conn = primary.cim()
    svc = cim.service(conn)
    settings = _settings(site, primary, vm, interval, history)
    cim.call(conn, svc, "CreateReplicationRelationship", ComputerSystem=cim.vm_path(vm.vm_id),
             ReplicationSettingData=settings)
    cim.call(conn, svc, "StartReplication", ComputerSystem=cim.vm_path(vm.vm_id),
             InitialReplicationType=pywbem.Uint16(1))


def _settings(site: TwoHosts, source: TestHost, vm: GuestVm, interval: int, history: int) -> str:
    target = site.other(source)
    return cim.replication_settings(vm_name=vm.name, vm_id=vm.vm_id,
                                    recovery_point=connection_point(site, target), port=target.peer_port,
                                    thumbprint=source.cert.thumbprint, interval=interval, history=history)


def replication_state(host: TestHost, vm_id: str) -> tuple[int, int]:
    """(ReplicationState, ReplicationHealth) of the VM's primary relationship on ``host``."""
    inst = cim.vm(host.cim(), vm_id)
    return int(inst["ReplicationState"] or 0), int(inst["ReplicationHealth"] or 0)


def wait_state(host: TestHost, vm_id: str, state: int, *, timeout: float = 300) -> None:
    """Wait until the VM's ReplicationState on ``host`` is ``state``."""
    poll(f"ReplicationState {state} of {vm_id} on {host.label}",
         lambda: replication_state(host, vm_id)[0] == state, timeout=timeout)


def points(host: TestHost, vm_id: str) -> list[cim.PointInfo]:
    """The recovery points of the replica VM on ``host``, oldest first."""
    return cim.recovery_points(host.cim(), vm_id)


def head_sequence(host: TestHost, vm_id: str) -> int:
    """The newest point's sequence (-1: none yet)."""
    found = points(host, vm_id)
    return max((p.sequence or 0 for p in found), default=-1)


def wait_points(host: TestHost, vm_id: str, *, beyond: int, timeout: float = 300) -> list[cim.PointInfo]:
    """Wait until a point with a sequence greater than ``beyond`` exists; all points then."""
    def probe() -> list[cim.PointInfo] | None:
        found = points(host, vm_id)
        return found if any((p.sequence or 0) > beyond for p in found) else None

    return poll(f"a recovery point after sequence {beyond} on {host.label}", probe, timeout=timeout)


def wait_primary_settled(primary: TestHost, replica: TestHost, vm_id: str, *, beyond: int = -1,
                         timeout: float = 180) -> int:
    """Wait until no cycle of the VM is in flight on ``primary``: its relationship has no intent and its
    acknowledged sequence is the replica's head (after ``beyond``); that sequence. The intent is cleared
    after the cut's bitmaps were committed, so nothing rewrites the VM's images any more."""
    def probe() -> int | None:
        with primary.control() as client:
            answer = client.get(f"/api/v1/vms/{vm_id}/replication")
        if answer.status_code != 200:
            return None
        rel = answer.json()
        head = head_sequence(replica, vm_id)
        return head if rel.get("intent") is None and rel.get("sequence") == head > beyond else None

    return poll(f"{vm_id}'s cycles on {primary.label} to settle", probe, timeout=timeout)


def wait_last_changes(host: TestHost, vm_id: str, records: int, *, timeout: float = 120) -> cim.PointInfo:
    """After a clean stop of the primary VM its last changes are sent in one more cycle: wait until the
    replica's newest point holds all ``records`` the writer wrote, and return that point."""
    def probe() -> cim.PointInfo | None:
        found = points(host, vm_id)
        if not found:
            return None
        check = guestvm.check_image(point_image(host, vm_id, found[-1]))
        return found[-1] if check.good and check.records == records else None

    return poll(f"the last changes ({records} records) on {host.label}", probe, timeout=timeout, interval=1.0)


def point_image(host: TestHost, vm_id: str, point: cim.PointInfo, disk_id: str = "d0") -> Path:
    """The top image of a point's disk in the replica folder (docs/replication.md, "Files")."""
    assert point.sequence is not None, "a recovery point without a sequence number"
    pattern = f"*_{vm_id}/disks/{disk_id}/rp-{point.sequence:010d}.qcow2"
    found = sorted(host.replica_location.glob(pattern))
    if not found:
        raise FileNotFoundError(f"no {pattern} under {host.replica_location}")
    return found[0]


def statistics(host: TestHost, vm_id: str) -> dict[str, Any]:
    """GetReplicationStatistics: the embedded Msvm_ReplicationStatistics as a dict."""
    conn = host.cim()
    out = cim.call(conn, cim.service(conn), "GetReplicationStatistics", ComputerSystem=cim.vm_path(vm_id))
    texts = out.get("ReplicationStatistics") or []
    if not texts:
        return {}
    value = texts[0]
    inst = value if isinstance(value, pywbem.CIMInstance) else _parse(str(value))
    return dict(inst.items())


def _parse(text: str) -> Any:
    from pywbem._tupleparse import TupleParser  # pywbem has no public parser for a lone INSTANCE
    from pywbem._tupletree import xml_to_tupletree_sax

    return TupleParser().parse_instance(xml_to_tupletree_sax(text, "embedded instance"))


def resynchronize(host: TestHost, vm_id: str) -> None:
    """Resynchronize now (StartTime NULL)."""
    conn = host.cim()
    cim.call(conn, cim.service(conn), "Resynchronize", ComputerSystem=cim.vm_path(vm_id))


def request_replication_state(host: TestHost, vm_id: str, state: int) -> None:
    """Msvm_ComputerSystem.RequestReplicationStateChange(state)."""
    conn = host.cim()
    cim.call(conn, cim.vm_path(vm_id), "RequestReplicationStateChange", RequestedState=pywbem.Uint16(state))


# -- failover ------------------------------------------------------------------------------------------


def failover(host: TestHost, vm_id: str, point: cim.PointInfo | None = None) -> None:
    """InitiateFailover to ``point`` (None: the latest)."""
    conn = host.cim()
    params: dict[str, Any] = {"ComputerSystem": cim.vm_path(vm_id)}
    if point is not None:
        params["SnapshotSettingData"] = point.path
    cim.call(conn, cim.service(conn), "InitiateFailover", **params)


def revert(host: TestHost, vm_id: str) -> None:
    """RevertFailover."""
    conn = host.cim()
    cim.call(conn, cim.service(conn), "RevertFailover", ComputerSystem=cim.vm_path(vm_id))


def commit(host: TestHost, vm_id: str) -> None:
    """CommitFailover."""
    conn = host.cim()
    cim.call(conn, cim.service(conn), "CommitFailover", ComputerSystem=cim.vm_path(vm_id))


def reverse(site: TwoHosts, host: TestHost, vm: GuestVm, *, interval: int = 2, history: int = 24) -> None:
    """ReverseReplicationRelationship on ``host`` (now the primary) back to the other host."""
    conn = host.cim()
    settings = _settings(site, host, vm, interval, history)
    cim.call(conn, cim.service(conn), "ReverseReplicationRelationship", ComputerSystem=cim.vm_path(vm.vm_id),
             ReplicationSettingData=settings)


def test_failover(host: TestHost, vm_id: str, point: cim.PointInfo | None = None) -> str:
    """TestReplicaSystem; the test VM's GUID (from ResultingSystem)."""
    conn = host.cim()
    params: dict[str, Any] = {"ComputerSystem": cim.vm_path(vm_id)}
    if point is not None:
        params["SnapshotSettingData"] = point.path
    out = cim.call(conn, cim.service(conn), "TestReplicaSystem", **params)
    resulting = out.get("ResultingSystem")
    if resulting is None:
        raise cim.CimCallFailed("TestReplicaSystem", 0, "no ResultingSystem")
    return str(resulting.keybindings["Name"])


def destroy_system(host: TestHost, vm_id: str) -> None:
    """Msvm_VirtualSystemManagementService.DestroySystem (how a test VM is cleaned up)."""
    conn = host.cim()
    cim.call(conn, cim.service(conn, "Msvm_VirtualSystemManagementService"), "DestroySystem",
             AffectedSystem=cim.vm_path(vm_id))


# -- composite steps -----------------------------------------------------------------------------------


def start_replicating_guest(site: TwoHosts, guest: GuestImage, name: str = "web", *, rate: int = 50,
                            interval: int = 2, history: int = 24) -> GuestVm:
    """A test guest writing on host A and replicating to B, past initial replication (state 3, a point)."""
    vm = guestvm.define_guest_vm(site.a, guest, name, rate=rate)
    guestvm.power(site.a, vm.vm_id, "start")
    guestvm.wait_ready(site.a, vm.vm_id)
    enable_replication(site, site.a, vm, interval=interval, history=history)
    wait_state(site.a, vm.vm_id, REPLICATING)
    wait_points(site.b, vm.vm_id, beyond=-1)
    return vm


@dataclass(frozen=True, slots=True)
class CutComparison:
    """A cut taken while the primary was paused: the primary's disk and the replica point hold the same."""

    point: cim.PointInfo
    primary_sha256: str
    replica: guestvm.ImageCheck

    @property
    def equal(self) -> bool:
        """Replica point content == primary disk content at the cut."""
        return self.primary_sha256 == self.replica.sha256


def compare_cut(primary: TestHost, replica: TestHost, vm_id: str, *, timeout: float = 300) -> CutComparison:
    """Pause the primary VM, wait for a cycle that began after the pause, hash both sides, resume.

    The primary's LastReplicationTime is the cut time of the last acknowledged log, or the start of the last
    heartbeat (an idle cycle: nothing written since the head's cut, no new point). Once it is past the
    pause, the replica's head holds the paused disk exactly: it is a point cut after the pause, or the head
    a heartbeat confirmed after it (a paused VM writes nothing, so once what it wrote before the pause is
    shipped its cycles are heartbeats).
    """
    guestvm.power(primary, vm_id, "pause")
    try:
        paused_at = datetime.now(UTC)

        def replicated_since_pause() -> bool:
            last = last_replication_time(primary, vm_id)
            return last is not None and last > paused_at

        poll(f"a replication cycle of {vm_id} begun after the pause", replicated_since_pause, timeout=timeout)
        point = max(points(replica, vm_id), key=lambda p: p.sequence or 0)
        primary_hash = guestvm.image_sha256(guestvm.disk_path(primary, vm_id))
        check = guestvm.check_image(point_image(replica, vm_id, point))
    finally:
        guestvm.power(primary, vm_id, "resume")
    return CutComparison(point, primary_hash, check)


def last_replication_time(host: TestHost, vm_id: str) -> datetime | None:
    """The VM's LastReplicationTime on ``host`` (Msvm_ComputerSystem), None before the first."""
    value = cim.vm(host.cim(), vm_id)["LastReplicationTime"]
    if value is None:
        return None
    moment = value.datetime if isinstance(value, pywbem.CIMDateTime) else None
    return moment if isinstance(moment, datetime) else None
