"""A collection whose members are all powered off, between two real daemons: enabled and started on host A
through CIM-XML, then failed over on host B through ``Msvm_CollectionReplicationService.InitiateFailover``.

The members never boot. Known byte patterns go into their turned-off disks with an NBD writer before the
collection is enabled (the initial replication carries them). B must then hold the collection and a
collection recovery point (only a group cycle makes one: the members' initial replications are their own),
the failover job must complete with every member Recovered, and each member's failover disk must read
exactly what A's disk holds.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pywbem

from standby.storage import chain
from standby.testing import cim, guestvm, scenario
from standby.testing.cluster import TwoHosts
from standby.testing.guestvm import GuestVm
from standby.testing.host import TestHost
from tests.integration.conftest import define_vm

MiB = 1024 * 1024
CLUSTER = "root/HyperVCluster/v2"
#: (offset, length, byte) written into every member before replication: the initial replication's part.
BEFORE = ((0, 4 * MiB, 0x5A), (17 * MiB, MiB, 0xA5))


def _write(image: Path, offset: int, length: int, pattern: int) -> None:
    """A known pattern into a turned-off VM's disk (its persistent bitmap records it)."""
    with chain.NbdServer(image, writable=True) as server, server.connect() as client:
        client.write(offset, bytes([pattern]) * length)
        client.flush()


def _pattern_holds(image: Path, offset: int, length: int, pattern: int) -> bool:
    """qemu-io reads the range back through the image's backing chain and compares it with the pattern."""
    done = subprocess.run(["qemu-io", "-r", "-U", "-f", "qcow2", "-c",
                           f"read -P {pattern} {offset} {length}", str(image)],
                          capture_output=True, text=True, check=False)
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout + done.stderr


def _collection(collection_id: str) -> pywbem.CIMInstanceName:
    return pywbem.CIMInstanceName("Msvm_VirtualSystemCollection", {"CollectionID": collection_id},
                                  namespace=CLUSTER)


def _define_collection(host: TestHost, name: str, vms: list[GuestVm]) -> str:
    conn = host.cim(CLUSTER)
    service = cim.service(conn, "Msvm_CollectionManagementService")
    out = cim.call(conn, service, "DefineCollection", Name=name, Id="", Type=pywbem.Uint16(0))
    collection = out["DefinedCollection"]
    for vm in vms:
        member = pywbem.CIMInstanceName("Msvm_ComputerSystem", {"CreationClassName": "Msvm_ComputerSystem",
                                                                "Name": vm.vm_id}, namespace=CLUSTER)
        cim.call(conn, service, "AddMember", Member=member, Collection=collection)
    return str(collection.keybindings["CollectionID"])


def _enable(site: TwoHosts, collection_id: str) -> None:
    conn = site.a.cim(CLUSTER)
    service = cim.service(conn, "Msvm_CollectionReplicationService")
    settings = cim.embedded(
        "Msvm_CollectionReplicationSettingData", ElementName="cold replication",
        RecoveryConnectionPoint=scenario.connection_point(site, site.b),
        RecoveryServerPortNumber=pywbem.Uint16(site.b.peer_port), AuthenticationType=pywbem.Uint16(2),
        CertificateThumbPrint=site.a.cert.thumbprint, ReplicationInterval=pywbem.Uint16(30),
        RecoveryHistory=pywbem.Uint16(4))
    cim.call(conn, service, "CreateReplicationRelationship", Collection=_collection(collection_id),
             CollectionReplicationSettingData=settings)
    cim.call(conn, service, "StartReplication", Collection=_collection(collection_id),
             InitialReplicationType=pywbem.Uint16(1))


def _collection_points(host: TestHost, collection_id: str) -> list[pywbem.CIMInstance]:
    return [p for p in host.cim(CLUSTER).EnumerateInstances("Msvm_CollectionRecoveryPoint")
            if p["CollectionID"] == collection_id]


def test_a_collection_of_powered_off_vms_fails_over_on_the_replica_with_the_primarys_bytes(
        site: TwoHosts) -> None:
    vms = [define_vm(site.a, name) for name in ("cold-a", "cold-b")]
    for number, vm in enumerate(vms):
        for offset, length, pattern in BEFORE:
            _write(guestvm.disk_path(site.a, vm.vm_id), offset, length, pattern + number)
    collection_id = _define_collection(site.a, "cold", vms)
    _enable(site, collection_id)
    for vm in vms:
        assert int(cim.vm(site.a.cim(), vm.vm_id)["EnabledState"]) == 3  # off
        scenario.wait_state(site.a, vm.vm_id, scenario.REPLICATING)

    points = scenario.poll("a collection recovery point on B",
                           lambda: _collection_points(site.b, collection_id) or None, timeout=120)
    assert sorted(points[-1]["VirtualMachineIds"]) == sorted(vm.vm_id for vm in vms)
    for vm in vms:
        scenario.wait_primary_settled(site.a, site.b, vm.vm_id)
    collections_b = [c for c in site.b.cim(CLUSTER).EnumerateInstances("Msvm_VirtualSystemCollection")
                     if c["CollectionID"] == collection_id]
    assert len(collections_b) == 1 and int(collections_b[0]["ReplicationMode"]) == 2

    conn_b = site.b.cim(CLUSTER)
    service_b = cim.service(conn_b, "Msvm_CollectionReplicationService")
    rv, out = conn_b.InvokeMethod("InitiateFailover", service_b, Collection=_collection(collection_id),
                                  CollectionRecoveryPoint=None)
    assert int(rv) == cim.METHOD_STARTED
    job = cim.wait_job(conn_b, out["Job"], timeout=300)
    assert int(job["JobState"]) == 7, job["ErrorDescription"]
    for vm in vms:
        assert scenario.replication_state(site.b, vm.vm_id)[0] == scenario.RECOVERED
    for number, vm in enumerate(vms):
        primary, failover = guestvm.disk_path(site.a, vm.vm_id), guestvm.disk_path(site.b, vm.vm_id)
        assert "failover" in failover.parts, failover
        for offset, length, pattern in BEFORE:
            assert _pattern_holds(failover, offset, length, pattern + number), (vm.name, offset)
        assert guestvm.image_sha256(failover) == guestvm.image_sha256(primary), vm.name
