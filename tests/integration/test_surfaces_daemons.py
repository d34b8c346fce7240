"""The methods whose CIM and REST forms used to differ, over the wire between two real daemons: on the replica
host, RemoveReplicationRelationship through pywbem and Remove-VMReplication through REST both remove the
replica's side (the VM stays, in mode None; the primary keeps its relationship), and ImportInitialReplica
through pywbem and Import-VMInitialReplication through REST both apply an exported initial replication, after
which the replica's head holds exactly the primary's bytes.

The VMs never boot: blank disks with a known pattern written while they are off.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from standby.storage import chain
from standby.testing import cim, guestvm, scenario
from standby.testing.cluster import TwoHosts
from standby.testing.host import TestHost

MiB = 1024 * 1024
WAITING_FOR_INITIAL_REPLICATION = 2


@pytest.fixture(scope="module")
def site(loopback_site: TwoHosts) -> TwoHosts:
    return loopback_site


def _define(host: TestHost, name: str, pattern: int) -> str:
    with host.control() as client:
        answer = client.post("/api/v1/vms", json={"name": name, "memory": "128M", "disks": [{"size": "16M"}]})
    assert answer.status_code == 201, answer.text
    vm_id = str(answer.json()["id"])
    with chain.NbdServer(guestvm.disk_path(host, vm_id), writable=True) as server, server.connect() as nbd:
        nbd.write(MiB, bytes([pattern]) * MiB)
        nbd.flush()
    return vm_id


def _job(host: TestHost, answer: Any) -> dict[str, Any]:
    assert answer.status_code == 202, answer.text
    with host.control() as client:
        job = client.get(f"/api/v1/jobs/{answer.json()['id']}/wait", params={"timeout": 300},
                         timeout=330).json()
    assert job["state_name"] == "Completed", job
    return dict(job)


def _enable(site: TwoHosts, vm_id: str, start: dict[str, Any]) -> None:
    body = {"replica": scenario.connection_point(site, site.b), "port": site.b.peer_port, "interval": 30}
    with site.a.control() as client:
        _job(site.a, client.post(f"/api/v1/vms/{vm_id}/replication", json=body))
        _job(site.a, client.post(f"/api/v1/vms/{vm_id}/replication/start", json=start))


def _cim_job(host: TestHost, method: str, vm_id: str, **params: Any) -> None:
    conn = host.cim()
    rv, out = conn.InvokeMethod(method, cim.service(conn), ComputerSystem=cim.vm_path(vm_id), **params)
    assert int(rv) == cim.METHOD_STARTED, (method, int(rv))
    job = cim.wait_job(conn, out["Job"], timeout=300)
    assert int(job["JobState"]) == 7, job["ErrorDescription"]


def _side(host: TestHost, vm_id: str) -> tuple[int, int]:
    """(ReplicationMode, status of GET …/replication) of the VM on ``host``."""
    with host.control() as client:
        vm = client.get(f"/api/v1/vms/{vm_id}").json()
        relationship = client.get(f"/api/v1/vms/{vm_id}/replication")
    return int(vm["replication_mode"]), relationship.status_code


def _head_sha256(host: TestHost, vm_id: str) -> str:
    return guestvm.image_sha256(guestvm.disk_path(host, vm_id))


def test_removing_on_the_replica_removes_its_side_through_cim_and_rest(site: TwoHosts) -> None:
    by_cim, by_rest = _define(site.a, "rm-cim", 0x31), _define(site.a, "rm-rest", 0x32)
    for vm_id in (by_cim, by_rest):
        _enable(site, vm_id, {"type": "network"})
        scenario.wait_state(site.b, vm_id, scenario.REPLICATING)
        scenario.wait_primary_settled(site.a, site.b, vm_id)

    _cim_job(site.b, "RemoveReplicationRelationship", by_cim)
    with site.b.control() as client:
        _job(site.b, client.delete(f"/api/v1/vms/{by_rest}/replication"))

    for vm_id in (by_cim, by_rest):
        assert _side(site.b, vm_id) == (0, 404)  # the replica VM stays, without a relationship
        assert _side(site.a, vm_id)[1] == 200  # each side removes only its own relationship
        assert cim.relationship(site.b.cim(), vm_id) is None


def test_an_exported_initial_replication_is_imported_through_cim_and_rest(site: TwoHosts) -> None:
    folder = Path(tempfile.mkdtemp(prefix="sbexport-", dir="/tmp"))
    by_cim, by_rest = _define(site.a, "imp-cim", 0x41), _define(site.a, "imp-rest", 0x42)
    for vm_id in (by_cim, by_rest):
        _enable(site, vm_id, {"type": "export", "export_dir": str(folder)})
        assert scenario.replication_state(site.b, vm_id)[0] == WAITING_FOR_INITIAL_REPLICATION

    _cim_job(site.b, "ImportInitialReplica", by_cim, InitialReplicationImportLocation=str(folder))
    with site.b.control() as client:
        _job(site.b, client.post(f"/api/v1/vms/{by_rest}/replication/import", json={"location": str(folder)}))

    for vm_id in (by_cim, by_rest):
        points = scenario.points(site.b, vm_id)
        assert points, vm_id
        scenario.wait_state(site.a, vm_id, scenario.REPLICATING)
        scenario.wait_primary_settled(site.a, site.b, vm_id)
        assert _head_sha256(site.b, vm_id) == _head_sha256(site.a, vm_id)


def test_refusals_over_the_wire_answer_the_same_code(site: TwoHosts) -> None:
    vm_id = _define(site.a, "plain", 0x51)
    conn = site.a.cim()
    rv, _ = conn.InvokeMethod("ImportInitialReplica", cim.service(conn), ComputerSystem=cim.vm_path(vm_id),
                              InitialReplicationImportLocation="/tmp")
    with site.a.control() as client:
        rest = client.post(f"/api/v1/vms/{vm_id}/replication/import", json={"location": "/tmp"})
    assert int(rv) == rest.json()["code"] == 32775
    rv, _ = conn.InvokeMethod("RemoveReplicationRelationship", cim.service(conn),
                              ComputerSystem=cim.vm_path(vm_id))
    with site.a.control() as client:
        rest = client.delete(f"/api/v1/vms/{vm_id}/replication")
    assert int(rv) == rest.json()["code"] == 32775
