"""Planned failover, reverse and failback between two real daemons, through REST and CIM, without a guest.

The VM never boots: its "writes" go into its turned-off disk with an NBD writer (``qemu-nbd``), which QEMU's
persistent dirty bitmap records exactly as it records a guest's writes. That keeps the test quick and lets it
measure the figures of issue 5: the time of a planned failover (prepare + InitiateFailover) and the bytes a
failback ships compared with the disk size. Content checks are hashes of the flattened images.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from standby.storage import chain
from standby.testing import cim, guestvm, scenario
from standby.testing.cluster import TwoHosts
from standby.testing.host import TestHost
from tests.integration.conftest import define_vm

MiB = 1024 * 1024
DISK = 64 * MiB


def _write(image: Path, offset: int, length: int) -> None:
    """Incompressible bytes into a turned-off VM's disk (its persistent bitmap records them)."""
    with chain.NbdServer(image, writable=True) as server, server.connect() as client:
        client.write(offset, os.urandom(length))
        client.flush()


def _job(host: TestHost, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST a REST route that answers 202 with a job; wait for the job; its result."""
    with host.control() as client:
        answer = client.post(path, json=body)
        assert answer.status_code == 202, answer.text
        job = answer.json()
        deadline = time.monotonic() + 300
        while not job["terminal"] and time.monotonic() < deadline:
            job = client.get(f"/api/v1/jobs/{job['id']}/wait", params={"timeout": 30}, timeout=60).json()
    assert job["state_name"] == "Completed", job
    return dict(job["result"])


def _refused_start(host: TestHost, vm_id: str) -> dict[str, Any]:
    with host.control() as client:
        answer = client.post(f"/api/v1/vms/{vm_id}/start")
    assert answer.status_code == 409, answer.text
    return dict(answer.json())


def _same(site: TwoHosts, vm_id: str) -> bool:
    a, b = (guestvm.image_sha256(guestvm.disk_path(h, vm_id)) for h in site.hosts)
    return a == b


def _mode(host: TestHost, vm_id: str) -> int:
    return int(guestvm.vm_info(host, vm_id)["replication_mode"])


def _reverse(site: TwoHosts, host: TestHost, vm_id: str) -> dict[str, Any]:
    other = site.other(host)
    body = {"replica": scenario.connection_point(site, other), "port": other.peer_port, "interval": 2}
    return _job(host, f"/api/v1/vms/{vm_id}/replication/reverse", body)


def test_planned_failover_reverse_and_failback_ship_only_what_changed(site: TwoHosts) -> None:
    vm = define_vm(site.a, "pf-web")
    _write(guestvm.disk_path(site.a, vm.vm_id), 0, 8 * MiB)
    scenario.enable_replication(site, site.a, vm, interval=2)
    scenario.wait_state(site.a, vm.vm_id, scenario.REPLICATING)
    scenario.wait_points(site.b, vm.vm_id, beyond=-1)
    scenario.wait_primary_settled(site.a, site.b, vm.vm_id)  # the initial replication let go of the image
    _write(guestvm.disk_path(site.a, vm.vm_id), 20 * MiB, MiB)  # not replicated yet: the prepare sends it
    refusal = _refused_start(site.b, vm.vm_id)
    assert refusal["code"] == 32775 and "failover" in refusal["message"]

    started = time.monotonic()
    prepared = _job(site.a, f"/api/v1/vms/{vm.vm_id}/failover/prepare")
    assert prepared["ReplicationState"] == "4" and int(prepared["DirtyBytes"]) >= MiB
    assert _refused_start(site.a, vm.vm_id)["code"] == 32775  # locked from starting
    scenario.failover(site.b, vm.vm_id)
    scenario.wait_state(site.b, vm.vm_id, scenario.RECOVERED)
    planned_seconds = time.monotonic() - started
    assert _same(site, vm.vm_id), "the planned point must equal the primary's disk"
    assert int(cim.vm(site.b.cim(), vm.vm_id)["FailedOverReplicationType"]) == 3  # Planned

    reversed_ = _reverse(site, site.b, vm.vm_id)
    assert reversed_["Planned"] == "true" and int(reversed_["DirtyBytes"]) == 0  # B wrote nothing yet
    scenario.wait_state(site.b, vm.vm_id, scenario.REPLICATING)
    assert (_mode(site.b, vm.vm_id), _mode(site.a, vm.vm_id)) == (1, 2)
    assert scenario.replication_state(site.a, vm.vm_id)[0] == scenario.REPLICATING

    # B runs the VM for a while (here: writes 2 MiB), then fails back to A.
    _write(guestvm.disk_path(site.b, vm.vm_id), 40 * MiB, 2 * MiB)
    back = _job(site.b, f"/api/v1/vms/{vm.vm_id}/failover/prepare")
    scenario.failover(site.a, vm.vm_id)
    scenario.wait_state(site.a, vm.vm_id, scenario.RECOVERED)
    assert _same(site, vm.vm_id)
    home = _reverse(site, site.a, vm.vm_id)
    scenario.wait_state(site.a, vm.vm_id, scenario.REPLICATING)
    assert (_mode(site.a, vm.vm_id), _mode(site.b, vm.vm_id)) == (1, 2)
    shipped = int(back["WireBytes"]) + int(home["WireBytes"])
    assert 2 * MiB <= shipped < 3 * MiB, shipped  # B's 2 MiB and framing: no copy of the 64 MiB disk
    print(f"\nplanned failover (prepare + InitiateFailover) {planned_seconds:.2f} s; failback shipped "
          f"{shipped} bytes for a {DISK} byte disk ({100 * shipped / DISK:.1f} %) after B wrote 2 MiB")


def test_reverse_is_refused_on_a_primary_and_on_a_replica_that_is_not_failed_over(site: TwoHosts) -> None:
    vm = define_vm(site.a, "pf-refuse")
    scenario.enable_replication(site, site.a, vm, interval=2)
    scenario.wait_state(site.a, vm.vm_id, scenario.REPLICATING)
    for host in site.hosts:
        with pytest.raises(cim.CimCallFailed) as failed:
            scenario.reverse(site, host, vm)
        assert failed.value.code == 32775
    refused = site.a.cli("replication", "reverse", vm.vm_id, check=False)  # the CLI says why, exit 1
    assert refused.returncode == 1 and "32775" not in refused.stdout and refused.stderr.strip()
    # RevertFailover on the prepared primary cancels the prepare: Replicating again.
    prepared = site.a.cli_json("failover", "start", vm.vm_id, "--prepare")
    assert prepared["result"]["ReplicationState"] == "4"
    assert scenario.replication_state(site.a, vm.vm_id)[0] == scenario.SYNCED
    scenario.revert(site.a, vm.vm_id)
    scenario.wait_state(site.a, vm.vm_id, scenario.REPLICATING)
