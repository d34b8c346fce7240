"""SBLIM wbemcli (Debian ``sblim-wbemcli``) against a real daemon.

wbemcli reads the class (GetClass) to type method parameters, sends untyped VALUEs otherwise, and cannot
parse empty-element tags — the things this test guards.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

from standby.engine.operations import UseCase
from tests.interop.conftest import PASSWORD, PRIMARY_VM, REPLICA_VM, USER
from tests.interop.helpers import expected_start

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


def test_initiate_failover(url: str) -> None:
    output = wbemcli("cm", f"{base(url)}:{SERVICE}", f"InitiateFailover.ComputerSystem={vm_ref(PRIMARY_VM)}")
    assert method_result(output, "InitiateFailover") == 32775
    output = wbemcli("cm", f"{base(url)}:{SERVICE}", f"InitiateFailover.ComputerSystem={vm_ref(REPLICA_VM)}")
    assert method_result(output, "InitiateFailover") == expected_start(UseCase.INITIATE_FAILOVER)
    other_host = vm_ref(PRIMARY_VM, host="hv9.example")
    output = wbemcli("cm", f"{base(url)}:{SERVICE}", f"InitiateFailover.ComputerSystem={other_host}")
    assert method_result(output, "InitiateFailover") == 32775


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
    match = re.search(r'Msvm_ConcreteJob\.InstanceID="([0-9A-F-]+)"', output)
    assert match, output
    job = f'{base(url)}:Msvm_ConcreteJob.InstanceID="{match.group(1)}"'
    deadline = time.monotonic() + 60
    while True:
        state = re.search(r"JobState=(\d+)", wbemcli("gi", job))
        assert state
        if int(state.group(1)) in (7, 8, 9, 10):
            break
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.2)
    final = wbemcli("gi", job)
    assert "JobState=10" in final and "ErrorCode=32777" in final
