"""Who may act on whose VM, with three real daemons in network namespaces (docs/security.md).

A replicates to B. C is a host of the same site (a certificate from the site CA) that A and B each admit
with an authorization entry of its own, as an administrator adds one for a new host, but it is at neither
end of the relationship. Everything C sends on the peer routes of A's VM is refused, on A and on B, and A
and B go on as before. A host presenting another CA's certificate does not get past TLS.

When an administrator does put C into the trust group of A's entry on B, C may write to A's replica (that is
what the group means); then A, replicating a writing guest, must not take the replica's "repeat, not applied"
answers as shipped: it turns to Resynchronization required / Critical, and a resync brings B's head back to
the guest's bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from standby.domain.entities import ReplicationSettings
from standby.domain.errors import AccessDenied, Unavailable
from standby.engine.reverse import BecomeReplica
from standby.guest.build import GuestImage, build_guest
from standby.peer.client import PeerClient
from standby.peer.tls import PeerTls
from standby.storage import chain
from standby.storage.logformat import DiskInfo, LogHeader, LogKind, encode_log
from standby.testing import cim, guestvm, scenario
from standby.testing.cluster import TwoHosts
from standby.testing.guestvm import GuestVm
from standby.testing.host import TestHost
from standby.testing.pki import SiteCA
from tests.integration.conftest import define_vm

MiB = 1024 * 1024
DISK = 64 * MiB
MARK = b"HIJACKED-BY-HOSTC!"


@pytest.fixture(scope="module")
def guest() -> GuestImage:
    return build_guest()


@pytest.fixture(scope="module")
def three() -> Iterator[TwoHosts]:
    site = TwoHosts.start(third_host=True, network_mode="netns")
    try:
        c = site.c
        assert c is not None
        for host in (site.a, site.b):  # C gets an entry of its own (no trust group) on both
            conn = host.cim()
            cim.call(conn, cim.service(conn), "AddAuthorizationEntry",
                     AuthorizationEntry=cim.authorization_entry(c.name, str(host.replica_location)))
        yield site
    finally:
        assert not site.close(), "processes outlived their daemons"


def _c(site: TwoHosts) -> TestHost:
    assert site.c is not None
    return site.c


def _as_c(site: TwoHosts, target: TestHost) -> PeerClient:
    c = _c(site)
    return PeerClient(target.peer_url, PeerTls(site.ca.cert_file, c.cert.cert_file, c.cert.key_file),
                      timeout=20)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


#: What the peer's refusal says (domain.peer_access, "PeerNotOwner"): the caller's kind and the route.
NOT_OWNER = "(other group) may not call"


async def _refused(client: PeerClient, method: str, *args: object) -> str:
    """The peer's refusal (403) of one call; fails the test when the call is let through."""
    async with client:
        with pytest.raises(AccessDenied) as info:
            await getattr(client, method)(*args)
    return str(info.value)


def _write(image: Path, offset: int, data: bytes) -> None:
    """Bytes into a turned-off VM's disk (its persistent bitmap records them, as a guest's writes)."""
    with chain.NbdServer(image, writable=True) as server, server.connect() as client:
        client.write(offset, data)
        client.flush()


def _read(image: Path, offset: int, length: int) -> bytes:
    with chain.NbdServer(image, writable=False) as server, server.connect() as client:
        data: bytes = client.read(offset, length)
    return data


def _replicating_vm(site: TwoHosts, name: str, *, interval: int) -> GuestVm:
    vm = define_vm(site.a, name)
    _write(guestvm.disk_path(site.a, vm.vm_id), 0, b"ORIGINAL-DATA-OF-A" * 1000)
    scenario.enable_replication(site, site.a, vm, interval=interval)
    scenario.wait_state(site.a, vm.vm_id, scenario.REPLICATING)
    scenario.wait_points(site.b, vm.vm_id, beyond=-1)
    scenario.wait_primary_settled(site.a, site.b, vm.vm_id)
    return vm


def _head_image(host: TestHost, vm_id: str) -> Path:
    return scenario.point_image(host, vm_id, scenario.points(host, vm_id)[-1])


def _forged_log(vm_id: str, sequence: int, parent: int) -> list[bytes]:
    header = LogHeader(vm_id, 0, sequence, parent, LogKind.DELTA, "2026-12-07T00:00:00+00:00",
                       (DiskInfo("d0", DISK),))
    return list(encode_log(header, [(0, 0, MARK + bytes(65536 - len(MARK)), 65536)]))


async def _stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def test_a_host_at_neither_end_cannot_take_over_or_touch_the_vm(three: TwoHosts) -> None:
    site, c = three, _c(three)
    vm = _replicating_vm(site, "victim", interval=2)
    disk = guestvm.disk_path(site.a, vm.vm_id)
    before = guestvm.image_sha256(disk)
    head = scenario.head_sequence(site.b, vm.vm_id)

    # 1. On A (the primary): become C's replica, prepare or cancel a planned move, ask whether it runs.
    reverse = BecomeReplica(ReplicationSettings(recovery_connection_point=c.name, recovery_port=c.peer_port),
                            (("d0", DISK),), planned_sequence=None, at_least=0).to_json()
    assert NOT_OWNER + " become-replica" in _run(_refused(_as_c(site, site.a), "become_replica", vm.vm_id,
                                                          reverse))
    for method in ("prepare_planned", "cancel_planned", "vm_running"):
        assert NOT_OWNER in _run(_refused(_as_c(site, site.a), method, vm.vm_id)), method

    # 2. On B (the replica): read it, suspend it, hash it, inject a point, take it over, remove it.
    forged = _forged_log(vm.vm_id, head + 1000, head)
    calls: list[tuple[str, tuple[object, ...]]] = [
        ("replica_status", (vm.vm_id,)), ("set_state", (vm.vm_id, 7)), ("hashes", (vm.vm_id, "d0", 65536)),
        ("put_log", (vm.vm_id, head + 1000, _stream(forged))), ("heartbeat", (vm.vm_id, head)),
        ("take_over", (vm.vm_id, {"port": c.peer_port})), ("remove_replica", (vm.vm_id,)),
        ("set_settings", (vm.vm_id, ReplicationSettings(recovery_connection_point=c.name,
                                                        interval_seconds=30))),
    ]
    for method, args in calls:
        assert NOT_OWNER in _run(_refused(_as_c(site, site.b), method, *args)), method

    # A and B go on as before: A the primary with its own bytes, B's head still A's last point, holding
    # exactly what A's (turned-off, settled) disk holds.
    assert int(guestvm.vm_info(site.a, vm.vm_id)["replication_mode"]) == 1
    assert scenario.replication_state(site.a, vm.vm_id) == (scenario.REPLICATING, 1)
    assert scenario.replication_state(site.b, vm.vm_id)[0] == scenario.REPLICATING
    assert [p.sequence for p in scenario.points(site.b, vm.vm_id)][-1] == head
    assert guestvm.image_sha256(disk) == before
    assert _read(disk, 0, len(MARK)) != MARK
    assert guestvm.image_sha256(_head_image(site.b, vm.vm_id)) == before

    # The owner's settings route still works: A's ModifyReplicationSettings reaches B's relationship.
    with site.a.control() as client:
        answer = client.put(f"/api/v1/vms/{vm.vm_id}/replication", json={
            "replica": scenario.connection_point(site, site.b), "port": site.b.peer_port, "interval": 30})
    assert answer.status_code == 202, answer.text
    scenario.poll("B to take A's new interval", lambda: _interval(site.b, vm.vm_id) == 30 or None, timeout=60)
    assert scenario.replication_state(site.b, vm.vm_id)[0] == scenario.REPLICATING


def _interval(host: TestHost, vm_id: str) -> int:
    with host.control() as client:
        return int(client.get(f"/api/v1/vms/{vm_id}/replication").json()["interval"])


def test_a_certificate_of_another_ca_does_not_get_past_tls(three: TwoHosts, tmp_path: Path) -> None:
    site = three
    foreign = SiteCA.create(tmp_path / "foreign-ca", "not-our-site")
    impostor = foreign.issue(tmp_path / "impostor", site.a.name, (site.a.address,))  # claims to be A
    tls = PeerTls(site.ca.cert_file, impostor.cert_file, impostor.key_file)

    async def ping() -> None:
        async with PeerClient(site.b.peer_url, tls, timeout=10) as client:
            await client.ping()

    with pytest.raises(Unavailable):
        _run(ping())


def _set_group(host: TestHost, primary: str, group: str) -> None:
    conn = host.cim()
    cim.call(conn, cim.service(conn), "ModifyAuthorizationEntry",
             AuthorizationEntry=cim.authorization_entry(primary, str(host.replica_location), group))


def test_the_primary_does_not_count_logs_the_replica_did_not_apply(three: TwoHosts,
                                                                    guest: GuestImage) -> None:
    site = three
    # The administrator of B puts A and C into one trust group: C may now write to A's replicas.
    _set_group(site.b, site.a.name, "site-1")
    _set_group(site.b, _c(site).name, "site-1")
    try:
        vm = scenario.start_replicating_guest(site, guest, "grouped", interval=2)  # it writes all the time
        head = scenario.head_sequence(site.b, vm.vm_id)

        async def inject() -> bool:
            async with _as_c(site, site.b) as client:
                ack = await client.put_log(vm.vm_id, head + 1000, _stream(_forged_log(vm.vm_id, head + 1000,
                                                                                       head)))
            return ack.applied

        assert _run(inject())  # the group let it in: B's head is now a point A never sent
        assert _read(_head_image(site.b, vm.vm_id), 0, len(MARK)) == MARK

        # A's next log is answered "repeat, not applied" with B's new head: A must not count it as shipped.
        scenario.poll("A turns to Resynchronization required",
                      lambda: scenario.replication_state(site.a, vm.vm_id) == (
                          scenario.RESYNC_REQUIRED, scenario.HEALTH_CRITICAL) or None, timeout=120)
        with site.a.control() as client:
            stats = client.get(f"/api/v1/vms/{vm.vm_id}/replication").json()
        assert stats["sequence"] < head + 1000
        # The resync compares against B's head, wherever that is, and brings B back to the guest's bytes.
        scenario.resynchronize(site.a, vm.vm_id)
        scenario.wait_state(site.a, vm.vm_id, scenario.REPLICATING)
        compared = scenario.compare_cut(site.a, site.b, vm.vm_id)
        assert compared.point.sequence is not None and compared.point.sequence > head + 1000
        assert compared.equal, "B's head must hold the guest's disk byte for byte after the resync"
        assert compared.replica.good, compared.replica.verdict()
    finally:
        _set_group(site.b, site.a.name, "")
        _set_group(site.b, _c(site).name, "")


def test_what_the_daemons_write_is_theirs_alone(three: TwoHosts) -> None:
    """umask 0077: the store, the VMs' disks and the replicas' point files are 0600, their folders 0700
    (the test's own config and certificates are left out: the daemon did not write them)."""
    written: list[Path] = []
    for host in three.all_hosts:
        written += [host.data_dir / name for name in ("standby.db", "standby.pid", "host-id")]
        for folder in (host.data_dir / "vms", host.replica_location):
            written += [p for p in folder.rglob("*") if p.is_file() or p.is_dir()]
    assert any(p.suffix == ".qcow2" and "rp-" in p.name for p in written), "no point file to look at"
    loose = [f"{p} {p.stat().st_mode & 0o777:o}" for p in written if p.exists() and p.stat().st_mode & 0o077]
    assert not loose
