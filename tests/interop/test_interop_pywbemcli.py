"""pywbemcli (PyPI ``pywbemtools``) against a real daemon, as an operator would type it.

Note: ``pywbemcli instance query`` is not used: pywbemtools 1.4.1 cannot iterate pywbem 1.9's
``IterQueryInstances`` result (a client-side bug); ExecQuery is covered through pywbem.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from standby.engine.operations import CollectionUseCase, UseCase
from tests.interop.conftest import (
    COLLECTION_ID,
    PASSWORD,
    POINT_ID,
    PRIMARY_VM,
    REDUNDANCY_SET_ID,
    REPLICA_VM,
    USER,
)
from tests.interop.helpers import expected_start

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


def cli(url: str, *args: str, namespace: str = "root/virtualization/v2") -> str:
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


def test_initiate_failover_null_snapshot(url: str) -> None:
    output = cli(
        url, "instance", "invokemethod", SERVICE, "InitiateFailover", "-p", f"ComputerSystem={vm(REPLICA_VM)}"
    )
    assert return_value(output) == expected_start(UseCase.INITIATE_FAILOVER)
    output = cli(
        url, "instance", "invokemethod", SERVICE, "InitiateFailover", "-p", f"ComputerSystem={vm(PRIMARY_VM)}"
    )
    assert return_value(output) == 32775


def test_initiate_failover_with_a_recovery_point(url: str) -> None:
    point = f'Msvm_VirtualSystemSettingData.InstanceID="Microsoft:{POINT_ID}"'
    output = cli(
        url,
        "instance",
        "invokemethod",
        SERVICE,
        "InitiateFailover",
        "-p",
        f"ComputerSystem={vm(REPLICA_VM)}",
        "-p",
        f"SnapshotSettingData={point}",
    )
    assert return_value(output) == expected_start(UseCase.INITIATE_FAILOVER)


def test_revert_failover(url: str) -> None:
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
    joined = output.replace('"\n"', "")  # pywbemcli folds long values MOF-style
    match = re.search(r'Msvm_ConcreteJob\.InstanceID=\\"([0-9A-F-]+)\\"', joined)
    assert match, output
    job = cli(url, "instance", "get", f'Msvm_ConcreteJob.InstanceID="{match.group(1)}"')
    assert "JobState = " in job and "JobType = 115" in job


def test_collection_initiate_failover(url: str) -> None:
    output = cli(
        url,
        "instance",
        "invokemethod",
        COLLECTION_SERVICE,
        "InitiateFailover",
        "-p",
        f'Collection=Msvm_VirtualSystemCollection.CollectionID="{COLLECTION_ID}"',
        namespace="root/HyperVCluster/v2",
    )
    assert return_value(output) in (32775, expected_start(CollectionUseCase.INITIATE_FAILOVER))


def test_redundancy_set_failover(url: str) -> None:
    output = cli(
        url,
        "instance",
        "invokemethod",
        f'Msvm_RedundancySet.InstanceID="Microsoft:{REDUNDANCY_SET_ID}"',
        "Failover",
        "-p",
        f"FailoverFrom={vm(PRIMARY_VM)}",
        "-p",
        f"FailoverTo={vm(REPLICA_VM)}",
        namespace="root/HyperVCluster/v2",
    )
    assert return_value(output) in (0, 1, 4096)
