"""pywbemcli (PyPI ``pywbemtools``) against a real daemon, as an operator would type it.

Note: ``pywbemcli instance query`` is not used: pywbemtools 1.4.1 cannot iterate pywbem 1.9's
``IterQueryInstances`` result (a client-side bug); ExecQuery is covered through pywbem.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from tests.interop.conftest import (
    CLUSTER,
    COLLECTION_ID,
    COLLECTION_POINT_ID,
    PASSWORD,
    PEER_VM,
    POINT_ID,
    PRIMARY_VM,
    REDUNDANCY_SET_ID,
    REPLICA_VM,
    SECOND_VM,
    USER,
    VIRT,
    Seeded,
)
from tests.interop.helpers import TERMINAL_JOB_STATES, backing_of, failover_overlay

PYWBEMCLI = str(Path(sys.executable).parent / "pywbemcli")
SERVICE = (
    'Msvm_ReplicationService.CreationClassName="Msvm_ReplicationService",Name="replicasvc",'
    'SystemCreationClassName="Msvm_ComputerSystem",SystemName="testhost"'
)
COLLECTION_SERVICE = (
    'Msvm_CollectionReplicationService.CreationClassName="Msvm_CollectionReplicationService",'
    'Name="CollectionReplicationService",SystemCreationClassName="Msvm_ComputerSystem",'
    'SystemName="testhost"'
)


def vm(vm_id: str) -> str:
    return f'Msvm_ComputerSystem.CreationClassName="Msvm_ComputerSystem",Name="{vm_id}"'


def cli(url: str, *args: str, namespace: str = VIRT) -> str:
    """Run pywbemcli; fail with its output unless it exits 0."""
    command = [PYWBEMCLI, "-s", url, "-u", USER, "-p", PASSWORD, "-d", namespace, "--no-warn", *args]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"{' '.join(args)} → {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def return_value(output: str) -> int:
    match = re.search(r"^ReturnValue=(\d+)$", output, re.MULTILINE)
    assert match, output
    return int(match.group(1))


def test_server_info_and_namespaces(url: str) -> None:
    info = cli(url, "server", "info")
    assert "standby" in info and "interop" in info
    namespaces = cli(url, "namespace", "list")
    for ns in ("interop", "root/HyperVCluster/v2", "root/virtualization/v2"):
        assert ns in namespaces


def test_enumerate_vms(url: str) -> None:
    output = cli(
        url, "instance", "enumerate", "Msvm_ComputerSystem", "--pl", "Name", "--pl", "ReplicationMode"
    )
    assert f'Name = "{PRIMARY_VM}"' in output
    assert f'Name = "{REPLICA_VM}"' in output
    names = cli(url, "instance", "enumerate", "Msvm_ComputerSystem", "--names-only")
    assert REPLICA_VM in names


def job_of(output: str) -> str:
    """The Msvm_ConcreteJob path in an invokemethod's output (the Job out-parameter)."""
    joined = output.replace('"\n"', "")  # pywbemcli folds long values MOF-style
    match = re.search(r'Msvm_ConcreteJob\.InstanceID=\\"([0-9A-F-]+)\\"', joined)
    assert match, output
    return f'Msvm_ConcreteJob.InstanceID="{match.group(1)}"'


def prop(output: str, name: str) -> int:
    """An integer property of an ``instance get`` output (MOF)."""
    match = re.search(rf"^\s*{name} = (\d+);$", output, re.MULTILINE)
    assert match, output
    return int(match.group(1))


def wait_job(url: str, job: str, timeout: float = 60.0) -> str:
    """``instance get`` the job until it is terminal; its last output."""
    deadline = time.monotonic() + timeout
    while True:
        output = cli(url, "instance", "get", job)
        if prop(output, "JobState") in TERMINAL_JOB_STATES:
            return output
        assert time.monotonic() < deadline, f"{job} did not finish:\n{output}"
        time.sleep(0.2)


def run_job(url: str, *args: str, namespace: str = VIRT) -> str:
    """An invokemethod that answers 4096, its job polled (always read in root/virtualization/v2) to 7."""
    output = cli(url, "instance", "invokemethod", *args, namespace=namespace)
    assert return_value(output) == 4096, output
    job = wait_job(url, job_of(output))
    assert (prop(job, "JobState"), prop(job, "ErrorCode")) == (7, 0), job
    return job


def replication_state(url: str, vm_id: str) -> int:
    """The VM's ReplicationState through ``instance get``."""
    return prop(cli(url, "instance", "get", vm(vm_id), "--pl", "ReplicationState"), "ReplicationState")


def revert(url: str, vm_id: str) -> None:
    """RevertFailover of a failed-over replica through pywbemcli; state 3 again."""
    job = run_job(url, SERVICE, "RevertFailover", "-p", f"ComputerSystem={vm(vm_id)}")
    assert prop(job, "JobType") == 98
    assert replication_state(url, vm_id) == 3


def test_initiate_failover_null_snapshot_and_revert(url: str) -> None:
    job = run_job(url, SERVICE, "InitiateFailover", "-p", f"ComputerSystem={vm(REPLICA_VM)}")
    assert prop(job, "JobType") == 97
    assert replication_state(url, REPLICA_VM) == 5
    revert(url, REPLICA_VM)
    output = cli(
        url, "instance", "invokemethod", SERVICE, "InitiateFailover", "-p", f"ComputerSystem={vm(PRIMARY_VM)}"
    )
    assert return_value(output) == 32775


def test_initiate_failover_with_a_recovery_point(url: str, seeded: Seeded) -> None:
    point = f'Msvm_VirtualSystemSettingData.InstanceID="Microsoft:{POINT_ID}"'
    run_job(
        url, SERVICE, "InitiateFailover", "-p", f"ComputerSystem={vm(REPLICA_VM)}",
        "-p", f"SnapshotSettingData={point}",
    )
    assert replication_state(url, REPLICA_VM) == 5
    assert backing_of(failover_overlay(seeded, REPLICA_VM)) == seeded.images[REPLICA_VM][0]
    revert(url, REPLICA_VM)


def test_revert_failover_without_a_failover(url: str) -> None:
    output = cli(
        url, "instance", "invokemethod", SERVICE, "RevertFailover", "-p", f"ComputerSystem={vm(REPLICA_VM)}"
    )
    assert return_value(output) == 32775


def test_class_invokemethod(url: str) -> None:
    output = cli(url, "class", "invokemethod", "Msvm_ReplicationService", "GetSystemCertificates")
    assert return_value(output) == 0
    assert "EncodedCertificates=" in output


def test_job_started_and_read(url: str) -> None:
    output = cli(
        url,
        "instance",
        "invokemethod",
        SERVICE,
        "TestReplicationConnection",
        "-p",
        "RecoveryConnectionPoint=127.0.0.1",
        "-p",
        "RecoveryServerPortNumber=1",
        "-p",
        "AuthenticationType=2",
        "-p",
        "CertificateThumbPrint=",
        "-p",
        "BypassProxyServer=false",
    )
    assert return_value(output) == 4096
    job = wait_job(url, job_of(output))
    assert prop(job, "JobType") == 115
    assert (prop(job, "JobState"), prop(job, "ErrorCode")) == (10, 32777)  # nothing listens on port 1


def test_collection_initiate_failover_and_revert(url: str) -> None:
    collection = f'Collection=Msvm_VirtualSystemCollection.CollectionID="{COLLECTION_ID}"'
    point = (
        "CollectionRecoveryPoint=Msvm_CollectionRecoveryPoint."
        f'CollectionID="{COLLECTION_ID}",InstanceID="Microsoft:{COLLECTION_POINT_ID}"'
    )
    run_job(url, COLLECTION_SERVICE, "InitiateFailover", "-p", collection, "-p", point, namespace=CLUSTER)
    assert replication_state(url, REPLICA_VM) == 5 and replication_state(url, SECOND_VM) == 5
    run_job(url, COLLECTION_SERVICE, "RevertFailover", "-p", collection, namespace=CLUSTER)
    assert replication_state(url, REPLICA_VM) == 3 and replication_state(url, SECOND_VM) == 3


def test_redundancy_set_failover(url: str) -> None:
    output = cli(
        url,
        "instance",
        "invokemethod",
        f'Msvm_RedundancySet.InstanceID="Microsoft:{REDUNDANCY_SET_ID}"',
        "Failover",
        "-p",
        f"FailoverFrom={vm(PEER_VM)}",
        "-p",
        f"FailoverTo={vm(REPLICA_VM)}",
        namespace=CLUSTER,
    )
    assert return_value(output) == 0  # the primary host cannot be reached: unplanned, done
    assert replication_state(url, REPLICA_VM) == 5
    revert(url, REPLICA_VM)
