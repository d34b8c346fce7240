"""Extended replication end to end with three real daemons and the real test guest (TCG), through CIM.

A → B replicating, B → C extended (``…\\HVR\\1``, mode 4 on C). While A's VM is paused its idle cycles are
heartbeats, which B passes on: C's LastReplicationTime moves on, no new point. The guest writes records on A
and powers off cleanly; the last changes reach B (the last cycle at a clean stop) and from B reach C: C's
head equals A's disk. Then A is lost (its daemon stops). On B: InitiateFailover, CommitFailover,
ChangeReplicationModeToPrimary(vm, the extended relationship) - B is the primary (mode 1, relationship 0
replicating to C) - and the guest booted on B keeps writing; at a cut (B paused) C's head equals B's disk
and holds an exact prefix of the records.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pywbem

from standby.guest.build import GuestImage, build_guest
from standby.testing import cim, guestvm, scenario
from standby.testing.cluster import TwoHosts
from standby.testing.guestvm import GuestVm
from standby.testing.host import TestHost
from standby.testing.network import TestNetwork
from standby.testing.pki import SiteCA

NAMES = ("hosta.standby.test", "hostb.standby.test", "hostc.standby.test")


@dataclass
class ThreeHosts(TwoHosts):
    """``TwoHosts`` plus host ``c``: B admits A, A admits B, C admits B (the extended replica's server)."""

    c: TestHost | None = None

    @classmethod
    def start_three(cls) -> ThreeHosts:
        """Make the site and start the three daemons; undo everything on a failure."""
        folder = Path(tempfile.mkdtemp(prefix="sbx-", dir="/tmp"))
        network = TestNetwork.create(NAMES)
        try:
            ca = SiteCA.create(folder / "ca")
            a, b, c = (TestHost.prepare(label, net, folder, ca)
                       for label, net in zip("ABC", network.hosts, strict=True))
            site = cls(folder, network, ca, a, b, c=c)
        except BaseException:
            network.close()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        try:
            for host in site.hosts:
                host.start()
            site.authorize()
        except BaseException:
            site.close()
            raise
        return site

    @property
    def hosts(self) -> tuple[TestHost, ...]:  # type: ignore[override]
        """All three hosts."""
        assert self.c is not None
        return self.a, self.b, self.c

    def other(self, host: TestHost) -> TestHost:
        """Where ``host`` replicates to: A → B, B → A (reverse), C → B."""
        return self.a if host is self.b else self.b

    def authorize(self) -> None:
        """A and C admit B, B admits A."""
        assert self.c is not None
        self.authorize_on(self.a, self.b.name)
        self.authorize_on(self.b, self.a.name)
        self.authorize_on(self.c, self.b.name)


@pytest.fixture(scope="module")
def guest() -> GuestImage:
    return build_guest()


@pytest.fixture()
def site() -> Iterator[ThreeHosts]:
    hosts = ThreeHosts.start_three()
    try:
        yield hosts
    finally:
        assert not hosts.close(), "processes outlived their daemons"


def _extend(site: ThreeHosts, vm: GuestVm, interval: int) -> None:
    """On B: CreateReplicationRelationship on the replica VM towards C, then StartReplication (network)."""
    assert site.c is not None
    conn = site.b.cim()
    svc = cim.service(conn)
    settings = cim.replication_settings(
        vm_name=vm.name, vm_id=vm.vm_id, recovery_point=scenario.connection_point(site, site.c),
        port=site.c.peer_port, thumbprint=site.b.cert.thumbprint, interval=interval, history=4)
    settings = settings.replace("\\HVR\\0", "\\HVR\\1")
    cim.call(conn, svc, "CreateReplicationRelationship", ComputerSystem=cim.vm_path(vm.vm_id),
             ReplicationSettingData=settings)
    cim.call(conn, svc, "StartReplication", ComputerSystem=cim.vm_path(vm.vm_id),
             InitialReplicationType=pywbem.Uint16(1))


def _relationship_state(host: TestHost, vm_id: str, index: int) -> int | None:
    rel = cim.relationship(host.cim(), vm_id, index)
    return None if rel is None else int(rel["ReplicationState"] or 0)


def _head_image(host: TestHost, vm_id: str) -> Path:
    head = max(scenario.points(host, vm_id), key=lambda p: p.sequence or 0)
    return scenario.point_image(host, vm_id, head)


def _sha256_or_none(host: TestHost, vm_id: str) -> str | None:
    try:
        return guestvm.image_sha256(guestvm.disk_path(host, vm_id))
    except RuntimeError:  # qemu-img -U met a bitmap directory being rewritten
        return None


def _equal_heads(host: TestHost, vm_id: str, disk_sha: str) -> bool:
    with contextlib.suppress(FileNotFoundError, ValueError):  # a merge may swap files under the probe
        return guestvm.image_sha256(_head_image(host, vm_id)) == disk_sha
    return False


def _idle_heartbeats_reach_c(a: TestHost, b: TestHost, c: TestHost, vm_id: str) -> None:
    """A paused VM writes nothing: once what it wrote before the pause is on C, A's cycles are heartbeats,
    B passes them on, and C's LastReplicationTime moves on while C gets no new point."""
    guestvm.power(a, vm_id, "pause")
    try:
        paused_at = datetime.now(UTC)

        def shipped_and_forwarded() -> bool:
            last = scenario.last_replication_time(a, vm_id)  # a cycle begun after the pause, acknowledged
            return (last is not None and last > paused_at
                    and scenario.head_sequence(b, vm_id) == scenario.head_sequence(c, vm_id))

        scenario.poll("what A wrote before the pause to reach C", shipped_and_forwarded, timeout=180)
        head = scenario.head_sequence(c, vm_id)
        since = scenario.last_replication_time(c, vm_id)
        assert since is not None

        def c_heard_again() -> bool:
            now = scenario.last_replication_time(c, vm_id)
            return now is not None and now > since

        scenario.poll("C's LastReplicationTime to move on while A is idle", c_heard_again, timeout=120)
        assert scenario.head_sequence(c, vm_id) == head == scenario.head_sequence(b, vm_id)  # no new point
    finally:
        guestvm.power(a, vm_id, "resume")


def test_extended_replication_continues_from_b_after_a_is_lost(site: ThreeHosts, guest: GuestImage) -> None:
    a, b, c = site.hosts
    vm = scenario.start_replicating_guest(site, guest, "ext", rate=100, interval=2, history=4)
    _extend(site, vm, interval=2)
    scenario.poll("the extended relationship replicating",
                  lambda: _relationship_state(b, vm.vm_id, 1) == scenario.REPLICATING, timeout=300)
    assert int(cim.vm(c.cim(), vm.vm_id)["ReplicationMode"]) == 4  # Extended Replica
    scenario.wait_points(c, vm.vm_id, beyond=-1)
    _idle_heartbeats_reach_c(a, b, c, vm.vm_id)

    # The guest writes, then powers off cleanly: its last changes reach B, and from B reach C.
    guestvm.wait_records(a, vm.vm_id, 300)
    records = guestvm.shut_down(a, vm.vm_id)
    assert records is not None, "the guest did not power off cleanly"
    # The last cycle runs after the power-off and rotates A's bitmaps with qemu-img: wait for it to reach B
    # before reading A's disk, and read again if a bitmap update was caught half-way.
    scenario.wait_last_changes(b, vm.vm_id, records)
    a_disk = scenario.poll("A's disk readable after its last cycle", lambda: _sha256_or_none(a, vm.vm_id),
                           timeout=60)
    scenario.poll("B's head to equal A's disk", lambda: _equal_heads(b, vm.vm_id, a_disk), timeout=180)
    scenario.poll("C's head to equal A's disk", lambda: _equal_heads(c, vm.vm_id, a_disk), timeout=180)
    on_c = guestvm.check_image(_head_image(c, vm.vm_id))
    assert on_c.good and on_c.records >= records, on_c.verdict()

    # A is lost. B fails over without reversing and continues B → C.
    a.stop()
    scenario.failover(b, vm.vm_id)
    scenario.wait_state(b, vm.vm_id, scenario.RECOVERED)
    scenario.commit(b, vm.vm_id)
    scenario.wait_state(b, vm.vm_id, scenario.COMMITTED)
    conn = b.cim()
    relationship = cim.embedded("Msvm_ReplicationRelationship", InstanceID=f"Microsoft:{vm.vm_id}\\HVR\\1")
    cim.call(conn, cim.service(conn), "ChangeReplicationModeToPrimary", ComputerSystem=cim.vm_path(vm.vm_id),
             ReplicationRelationship=relationship)
    scenario.wait_state(b, vm.vm_id, scenario.REPLICATING)
    assert int(cim.vm(b.cim(), vm.vm_id)["ReplicationMode"]) == 1  # Primary
    assert _relationship_state(b, vm.vm_id, 1) is None  # the extended relationship became relationship 0
    assert cim.relationship(b.cim(), vm.vm_id, 0) is not None
    c_mode = int(cim.vm(c.cim(), vm.vm_id)["ReplicationMode"])
    assert c_mode in (2, 4), c_mode  # C stays the replica of the VM (mode 4 kept, or plain replica)

    # The guest boots on B from the failed-over disk and keeps writing; B's writes reach C.
    offset = guestvm.console_offset(b, vm.vm_id)
    guestvm.power(b, vm.vm_id, "start")
    resumed = guestvm.wait_ready(b, vm.vm_id, after=offset)
    assert resumed >= records  # it continues A's records
    guestvm.wait_records(b, vm.vm_id, resumed + 100, after=offset)
    cut = scenario.compare_cut(b, c, vm.vm_id)
    assert cut.equal, f"C's point {cut.point.sequence} differs from B's disk at the cut"
    assert cut.replica.good and cut.replica.records > resumed, cut.replica.verdict()
    assert scenario.replication_state(b, vm.vm_id)[0] == scenario.REPLICATING
