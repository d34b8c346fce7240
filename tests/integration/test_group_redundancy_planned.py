"""Msvm_RedundancySet.Failover between two real daemons with both hosts up: a planned failover with reverse
replication, zero loss, through pywbem over CIM-XML (issue 7 item 4).

The VM never boots (a planned failover needs it off): known byte patterns go into its turned-off disk with an
NBD writer, which QEMU's persistent dirty bitmap records as it records a guest's writes. The last pattern is
written after the last replication cycle, so only the planned failover's own log can carry it; the disk
hashes before and after the move must be equal.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pywbem
from pywbem import CIMInstanceName

from standby.storage import chain
from standby.testing import guestvm, scenario
from standby.testing.cluster import TwoHosts
from standby.testing.host import TestHost
from tests.integration.conftest import define_vm

MiB = 1024 * 1024
CLUSTER = "root/HyperVCluster/v2"


def _write(image: Path, offset: int, length: int, pattern: int) -> None:
    """A known pattern into a turned-off VM's disk (its persistent bitmap records it)."""
    with chain.NbdServer(image, writable=True) as server, server.connect() as client:
        client.write(offset, bytes([pattern]) * length)
        client.flush()


def _system(name: str) -> CIMInstanceName:
    return CIMInstanceName("Msvm_ComputerSystem", {"CreationClassName": "Msvm_ComputerSystem", "Name": name},
                           namespace=CLUSTER)


def _failover(host: TestHost, vm_id: str, source: str, target: str) -> int:
    conn = host.cim(CLUSTER)
    (path,) = [p for p in conn.EnumerateInstanceNames("Msvm_RedundancySet")
               if p.keybindings["InstanceID"] == f"Microsoft:VM-{vm_id}"]
    rv, _ = conn.InvokeMethod("Failover", path, FailoverFrom=_system(source), FailoverTo=_system(target))
    return int(rv)


def _mode(host: TestHost, vm_id: str) -> int:
    return int(guestvm.vm_info(host, vm_id)["replication_mode"])


def _hash(host: TestHost, vm_id: str) -> str:
    return guestvm.image_sha256(guestvm.disk_path(host, vm_id))


def _planned_indications(host: TestHost, vm_id: str) -> list[pywbem.CIMInstance]:
    return [i for i in host.cim(CLUSTER).EnumerateInstances("Msvm_FailoverIndication")
            if vm_id in i["HostedElement"] and i["OtherFailoverType"] == "Planned"]


def test_redundancy_set_failover_with_both_hosts_up_is_planned_and_loses_nothing(site: TwoHosts) -> None:
    vm = define_vm(site.a, "rs-web")
    _write(guestvm.disk_path(site.a, vm.vm_id), 0, 8 * MiB, 0x5A)
    scenario.enable_replication(site, site.a, vm, interval=2)
    scenario.wait_state(site.a, vm.vm_id, scenario.REPLICATING)
    scenario.wait_points(site.b, vm.vm_id, beyond=-1)
    scenario.wait_primary_settled(site.a, site.b, vm.vm_id)  # the initial replication let go of the image
    _write(guestvm.disk_path(site.a, vm.vm_id), 20 * MiB, MiB, 0xC3)  # only the planned log can carry it
    before = _hash(site.a, vm.vm_id)

    # Driven by the primary host A: From = the VM here, To = its copy on B.
    b_name = scenario.connection_point(site, site.b)
    assert _failover(site.a, vm.vm_id, vm.vm_id, f"{vm.vm_id}@{b_name}") == 0
    assert (_mode(site.b, vm.vm_id), _mode(site.a, vm.vm_id)) == (1, 2)  # B primary, A its replica
    scenario.wait_state(site.b, vm.vm_id, scenario.REPLICATING)
    assert _hash(site.b, vm.vm_id) == before, "the VM on B must hold every byte A had"
    assert int(scenario.replication_state(site.b, vm.vm_id)[0]) == scenario.REPLICATING
    (moved,) = _planned_indications(site.a, vm.vm_id)
    assert int(moved["FailoverType"]) == 1 and b_name in moved["HostingSystem"]
    # The old direction's set is gone from A's view: now A holds the replica and B is the active member.
    conn = site.a.cim(CLUSTER)
    (path,) = [p for p in conn.EnumerateInstanceNames("Msvm_RedundancySet")
               if p.keybindings["InstanceID"] == f"Microsoft:VM-{vm.vm_id}"]
    assert int(conn.GetInstance(path)["RedundancyStatus"]) in (2, 3)  # Fully Redundant or Degraded

    if site.network.mode != "netns":
        pytest.skip("the failback driven by the replica host reaches the primary by its name (netns only)")
    # Failback driven by the replica host (A now): From = the VM's copy on B, To = the VM here.
    _write(guestvm.disk_path(site.b, vm.vm_id), 40 * MiB, 2 * MiB, 0x77)  # B's writes, not replicated yet
    on_b = _hash(site.b, vm.vm_id)
    source = f"{vm.vm_id}@{_peer_member(site.a, vm.vm_id)}"
    assert _failover(site.a, vm.vm_id, source, vm.vm_id) == 0
    assert (_mode(site.a, vm.vm_id), _mode(site.b, vm.vm_id)) == (1, 2)
    scenario.wait_state(site.a, vm.vm_id, scenario.REPLICATING)
    assert _hash(site.a, vm.vm_id) == on_b, "the VM back on A must hold every byte B had"
    assert len(_planned_indications(site.a, vm.vm_id)) == 2


def _peer_member(host: TestHost, vm_id: str) -> str:
    """The host part of the VM's other member as ``host`` names it (from its redundancy set)."""
    conn = host.cim(CLUSTER)
    names = [p.keybindings["Name"] for p in conn.EnumerateInstanceNames("Msvm_ComputerSystem")
             if str(p.keybindings["Name"]).startswith(f"{vm_id}@")]
    assert len(names) == 1, names
    return str(names[0]).split("@", 1)[1]
