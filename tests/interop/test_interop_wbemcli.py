"""SBLIM wbemcli (Debian ``sblim-wbemcli``) against a real daemon.

wbemcli reads the class (GetClass) to type method parameters, sends untyped VALUEs otherwise, and cannot
parse empty-element tags — the things this test guards. InitiateFailover with a snapshot REF is driven through
pywbem and pywbemcli only: wbemcli cannot send two REF parameters (it reads everything after the first REF's
``=`` as that REF's key bindings, so the server rightly answers 32773 for a key Msvm_ComputerSystem lacks).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

from tests.interop.conftest import PASSWORD, PRIMARY_VM, REPLICA_VM, USER

pytestmark = pytest.mark.skipif(shutil.which("wbemcli") is None, reason="sblim-wbemcli is not installed")

SERVICE = (
    'Msvm_ReplicationService.CreationClassName="Msvm_ReplicationService",Name="replicasvc",'
    'SystemCreationClassName="Msvm_ComputerSystem",SystemName="testhost"'
)


def base(url: str) -> str:
    return url.replace("http://", f"http://{USER}:{PASSWORD}@") + "/root/virtualization/v2"


def vm_ref(vm_id: str, host: str = "") -> str:
    """A REF argument; wbemcli sends it as INSTANCEPATH with HOST (the URL's host unless one is given)."""
    prefix = f"{host}/root/virtualization/v2:" if host else ""
    return f'{prefix}Msvm_ComputerSystem.CreationClassName="Msvm_ComputerSystem",Name="{vm_id}"'


def wbemcli(*args: str) -> str:
    done = subprocess.run(
        ["wbemcli", *args], capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"wbemcli {' '.join(args)} → {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def method_result(output: str, method: str) -> int:
    match = re.search(rf"{method}: (\d+)", output)
    assert match, output
    return int(match.group(1))


def test_enumerate_instance_names(url: str) -> None:
    output = wbemcli("ein", f"{base(url)}:Msvm_ComputerSystem")
    assert f'Name="{PRIMARY_VM}"' in output
    assert f'Name="{REPLICA_VM}"' in output


def test_get_instance(url: str) -> None:
    output = wbemcli(
        "gi", f'{base(url)}:Msvm_ComputerSystem.CreationClassName="Msvm_ComputerSystem",Name="{REPLICA_VM}"'
    )
    assert 'ElementName="web-replica"' in output
    assert "ReplicationMode=2" in output


def test_get_class_and_class_names(url: str) -> None:
    assert "InitiateFailover" not in wbemcli("gc", f"{base(url)}:Msvm_ReplicationService")  # properties only
    assert "Msvm_ReplicationService" in wbemcli("ecn", f"{base(url)}:CIM_Service")


def job_of(output: str) -> str:
    """The Job out-parameter of a ``cm`` call, as a wbemcli object path."""
    match = re.search(r'Msvm_ConcreteJob\.InstanceID="([0-9A-F-]+)"', output)
    assert match, output
    return f'Msvm_ConcreteJob.InstanceID="{match.group(1)}"'


def prop(output: str, name: str) -> int:
    match = re.search(rf"[ ,]{name}=(\d+)", output)
    assert match, output
    return int(match.group(1))


def wait_job(url: str, job: str, timeout: float = 60.0) -> str:
    """``gi`` the job until it is terminal; the last output."""
    deadline = time.monotonic() + timeout
    while True:
        output = wbemcli("gi", f"{base(url)}:{job}")
        if prop(output, "JobState") in (7, 8, 9, 10, 32768):
            return output
        assert time.monotonic() < deadline, f"{job} did not finish:\n{output}"
        time.sleep(0.2)


def replication_state(url: str, vm_id: str) -> int:
    return prop(wbemcli("gi", f"{base(url)}:{vm_ref(vm_id)}"), "ReplicationState")


def run_job(url: str, method: str, params: str) -> str:
    """A ``cm`` on the replication service answering 4096 whose job completes (7, ErrorCode 0)."""
    output = wbemcli("cm", f"{base(url)}:{SERVICE}", f"{method}.{params}")
    assert method_result(output, method) == 4096
    job = wait_job(url, job_of(output))
    assert (prop(job, "JobState"), prop(job, "ErrorCode")) == (7, 0), job
    return job


def test_initiate_failover_refused_on_a_primary(url: str) -> None:
    output = wbemcli("cm", f"{base(url)}:{SERVICE}", f"InitiateFailover.ComputerSystem={vm_ref(PRIMARY_VM)}")
    assert method_result(output, "InitiateFailover") == 32775
    other_host = vm_ref(PRIMARY_VM, host="hv9.example")
    output = wbemcli("cm", f"{base(url)}:{SERVICE}", f"InitiateFailover.ComputerSystem={other_host}")
    assert method_result(output, "InitiateFailover") == 32775


def test_initiate_failover_job_read_to_completion_and_revert(url: str) -> None:
    job = run_job(url, "InitiateFailover", f"ComputerSystem={vm_ref(REPLICA_VM)}")
    assert prop(job, "JobType") == 97
    assert replication_state(url, REPLICA_VM) == 5
    job = run_job(url, "RevertFailover", f"ComputerSystem={vm_ref(REPLICA_VM)}")
    assert prop(job, "JobType") == 98
    assert replication_state(url, REPLICA_VM) == 3


def test_untyped_state_change(url: str) -> None:
    target = f'{base(url)}:Msvm_ComputerSystem.CreationClassName="Msvm_ComputerSystem",Name="{PRIMARY_VM}"'
    output = wbemcli("cm", target, "RequestReplicationStateChange.RequestedState=12345")
    assert method_result(output, "RequestReplicationStateChange") == 32773


def test_job_started_and_read(url: str) -> None:
    output = wbemcli(
        "cm",
        f"{base(url)}:{SERVICE}",
        'TestReplicationConnection.RecoveryConnectionPoint="127.0.0.1",RecoveryServerPortNumber=1,'
        'AuthenticationType=2,CertificateThumbPrint="",BypassProxyServer=false',
    )
    assert method_result(output, "TestReplicationConnection") == 4096
    final = wait_job(url, job_of(output))
    assert (prop(final, "JobState"), prop(final, "ErrorCode")) == (10, 32777)  # nothing listens on port 1
