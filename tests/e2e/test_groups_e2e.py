"""Issue 7, "Done when": three test guests in one collection, replicated from host A to host B with
group-consistent cuts while they write at full speed with cross-dependent records (A writes n, B cites A's
newest written record, C cites B's — relayed by the test through the guest agents); then a collection
failover on B to every retained collection point, each checked for citations missing on another member,
reverted, and the next one taken. Everything goes through CIM-XML (pywbem) but the forced failover, which
the REST API offers (the primaries still run: a disaster would not ask them first).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from typing import Any

import pywbem

from standby.guest import console
from standby.guest.build import GuestImage
from standby.guest.verify import VerifyReport, verify_image
from standby.hypervisor.qemu.agent import GuestAgent
from standby.testing import cim, guestvm, scenario
from standby.testing.cluster import TwoHosts
from standby.testing.guestvm import GuestVm
from standby.testing.host import TestHost

CLUSTER = "root/HyperVCluster/v2"
POINTS_WANTED = 4


def define_writer(host: TestHost, guest: GuestImage, name: str, writer: int) -> GuestVm:
    """A test guest whose writer (id ``writer``) runs at full speed; writers after the first cite."""
    option = f"standby.writer=raw:/dev/vda:rate=0:id={writer}" + (":cite=/tmp/cite" if writer > 1 else "")
    body = {"name": name, "memory": "128M", "cpus": 1, "disks": [{"size": "256M"}],
            "kernel": str(guest.kernel), "initrd": str(guest.initrd), "append": guest.append(option)}
    with host.control() as client:
        answer = client.post("/api/v1/vms", json=body)
    assert answer.status_code in (200, 201), answer.text
    return GuestVm(answer.json()["id"], name)


class Relay(threading.Thread):
    """Hands each writer's newest reported sequence to the next VM's writer (through its guest agent)."""

    def __init__(self, host: TestHost, vms: list[GuestVm]) -> None:
        super().__init__(daemon=True)
        self.host, self.vms = host, vms
        self.stop = threading.Event()
        self.handed = 0

    def run(self) -> None:
        asyncio.run(self._relay())

    async def _relay(self) -> None:
        agents = []
        for vm in self.vms[1:]:
            agent = GuestAgent(self.host.run_dir(vm.vm_id) / "qga.sock", vm.name)
            await agent.connect(60)
            agents.append(agent)
        try:
            while not self.stop.is_set():
                for number, agent in enumerate(agents):
                    log = console.read(self.host.console_log(self.vms[number].vm_id))
                    seq = console.last_seq(log, number + 1)
                    if seq is not None:
                        await agent.write_file("/tmp/cite", f"{number + 1} {seq}\n".encode())
                        self.handed += 1
                await asyncio.sleep(0.05)
        finally:
            for agent in agents:
                with contextlib.suppress(Exception):
                    await agent.close()


def collection_path(collection_id: str) -> pywbem.CIMInstanceName:
    return pywbem.CIMInstanceName("Msvm_VirtualSystemCollection", {"CollectionID": collection_id},
                                  namespace=CLUSTER)


def collection_points(host: TestHost, collection_id: str) -> list[pywbem.CIMInstance]:
    conn = host.cim(CLUSTER)
    found = [p for p in conn.EnumerateInstances("Msvm_CollectionRecoveryPoint")
             if p["CollectionID"] == collection_id]
    return sorted(found, key=lambda p: str(p["CreationTime"]))


def check_members(host: TestHost, vms: list[GuestVm]) -> list[VerifyReport]:
    """Each member's failover disk an exact prefix, every citation held by the cited member's disk."""
    reports = [verify_image(guestvm.disk_path(host, vm.vm_id)) for vm in vms]
    for vm, report in zip(vms, reports, strict=True):
        assert report.exact_prefix, f"{vm.name}: {report.problems}"
    for number in range(1, len(vms)):
        held = reports[number - 1].records
        missing = [(seq, cited) for seq, _writer, cited in reports[number].cites if cited >= held]
        assert not missing, (f"{vms[number].name} cites records {vms[number - 1].name} does not hold "
                             f"(it has {held}): {missing[:5]}")
    return reports


def group_failover(host: TestHost, collection_id: str, point: str) -> dict[str, Any]:
    with host.control() as client:
        answer = client.post(f"/api/v1/groups/{collection_id}/failover", json={"point": point, "force": True})
        assert answer.status_code == 202, answer.text
        job = answer.json()
        while not job["terminal"]:
            job = client.get(f"/api/v1/jobs/{job['id']}/wait", params={"timeout": 30}, timeout=60).json()
    return dict(job)


def test_collection_failover_to_every_retained_point_keeps_cross_vm_citations(site: TwoHosts,
                                                                              guest: GuestImage) -> None:
    vms = [define_writer(site.a, guest, name, number + 1) for number, name in enumerate(("ga", "gb", "gc"))]
    for vm in vms:
        guestvm.power(site.a, vm.vm_id, "start")
    for number, vm in enumerate(vms):
        asyncio.run(console.wait_for_seq(site.a.console_log(vm.vm_id), 50, writer=number + 1, timeout=300))
    relay = Relay(site.a, vms)
    relay.start()
    try:
        made = site.a.cli_json("group", "create", "tier")
        collection_id = str(made["id"])
        for vm in vms:
            site.a.cli_json("group", "add", "tier", vm.vm_id)
        conn = site.a.cim(CLUSTER)
        service = cim.service(conn, "Msvm_CollectionReplicationService")
        settings = cim.embedded(
            "Msvm_CollectionReplicationSettingData", ElementName="tier replication",
            RecoveryConnectionPoint=scenario.connection_point(site, site.b),
            RecoveryServerPortNumber=pywbem.Uint16(site.b.peer_port), AuthenticationType=pywbem.Uint16(2),
            CertificateThumbPrint=site.a.cert.thumbprint, ReplicationInterval=pywbem.Uint16(2),
            RecoveryHistory=pywbem.Uint16(24))
        cim.call(conn, service, "CreateReplicationRelationship", Collection=collection_path(collection_id),
                 CollectionReplicationSettingData=settings)
        cim.call(conn, service, "StartReplication", Collection=collection_path(collection_id),
                 InitialReplicationType=pywbem.Uint16(1))
        def enough() -> list[pywbem.CIMInstance] | None:
            points = collection_points(site.b, collection_id)
            return points if len(points) >= POINTS_WANTED else None

        found = scenario.poll(f"{POINTS_WANTED} collection points on B", enough, timeout=600)
    finally:
        relay.stop.set()
        relay.join(30)
    assert relay.handed > 0
    checked, cites, seconds = [], 0, []
    for point in found:
        point_id = str(point["InstanceID"]).removeprefix("Microsoft:")
        assert list(point["VirtualMachineIds"]) == [vm.vm_id for vm in vms]
        assert int(point["ConsistencyLevel"]) == 3  # group crash consistent
        job = group_failover(site.b, collection_id, point_id)
        assert job["state_name"] == "Completed", job
        seconds.append(round(float(job["elapsed_seconds"]), 3))
        reports = check_members(site.b, vms)
        checked.append([r.records for r in reports])
        cites += sum(len(r.cites) for r in reports[1:])
        conn_b = site.b.cim(CLUSTER)
        cim.call(conn_b, cim.service(conn_b, "Msvm_CollectionReplicationService"), "RevertFailover",
                 Collection=collection_path(collection_id))
    assert len(checked) >= POINTS_WANTED
    assert cites > 0, "no member cited another: the relay did not work"
    times = [str(point["CreationTime"]) for point in found]
    assert all(later[0] >= earlier[0] for earlier, later in itertools.pairwise(checked)), (checked, times)
    print(f"\nrecords per collection point (ga, gb, gc): {checked}; citations checked: {cites}; "
          f"collection failover job seconds: {seconds}")
