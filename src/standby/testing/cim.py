"""The replication model as a WMI script sees it, over pywbem: method calls that wait for their job, the
embedded settings the methods take, and reads of VMs, relationships and recovery points.

The CIM method names and parameters are fixed by the spec (they are Hyper-V's), so the harness drives
replication and failover through them: the same calls work whichever engine piece lands when.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pywbem
from pywbem import CIMInstance, CIMInstanceName

VIRT = "root/virtualization/v2"
TERMINAL_JOB_STATES = {7, 8, 9, 10, 32768}
JOB_COMPLETED = {7, 32768}  # Completed, CompletedWithWarnings
METHOD_STARTED = 4096
RECOVERY_POINT_PREFIX = "Microsoft:Hyper-V:Snapshot:Replica"


class CimCallFailed(RuntimeError):
    """A method answered something other than 0/4096, or its job did not complete."""

    def __init__(self, method: str, code: int, detail: str = "") -> None:
        super().__init__(f"{method} failed with {code}" + (f": {detail}" if detail else ""))
        self.method = method
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class PointInfo:
    """A recovery point as CIM shows it."""

    instance_id: str
    point_id: str
    vm_id: str
    kind: str  # …Snapshot:Replica:Standard / ApplicationConsistent / PlannedFailover
    created: datetime | None
    sequence: int | None
    path: CIMInstanceName | None


def wait_job(conn: Any, job: CIMInstanceName, timeout: float = 600.0) -> CIMInstance:
    """Poll the Msvm_ConcreteJob until it is terminal (as WMI scripts do) and return it."""
    deadline = time.monotonic() + timeout
    while True:
        inst = conn.GetInstance(job)
        if int(inst["JobState"]) in TERMINAL_JOB_STATES:
            return inst
        if time.monotonic() > deadline:
            raise CimCallFailed(str(job), 32772, f"job still in state {inst['JobState']} after {timeout} s")
        time.sleep(0.2)


def call(conn: Any, target: CIMInstanceName, method: str, *, timeout: float = 600.0,
         **params: Any) -> dict[str, Any]:
    """Invoke ``method``; wait for its job; the out-parameters. Raises ``CimCallFailed`` unless it worked."""
    rv, out = conn.InvokeMethod(method, target, **params)
    code, result = int(rv), dict(out)
    if code == METHOD_STARTED and result.get("Job") is not None:
        job = wait_job(conn, result["Job"], timeout)
        if int(job["JobState"]) not in JOB_COMPLETED:
            raise CimCallFailed(method, int(job["ErrorCode"] or 32768), str(job["ErrorDescription"] or ""))
        return result
    if code != 0:
        raise CimCallFailed(method, code)
    return result


def service(conn: Any, classname: str = "Msvm_ReplicationService") -> CIMInstanceName:
    """The host's singleton service of that class."""
    (path,) = conn.EnumerateInstanceNames(classname)
    return path


def vm_path(vm_id: str) -> CIMInstanceName:
    """The Msvm_ComputerSystem path of a VM."""
    return CIMInstanceName("Msvm_ComputerSystem",
                           keybindings={"CreationClassName": "Msvm_ComputerSystem", "Name": vm_id},
                           namespace=VIRT)


def vm(conn: Any, vm_id: str) -> CIMInstance:
    """The VM's Msvm_ComputerSystem (EnabledState, ReplicationState, ReplicationHealth, ReplicationMode)."""
    return conn.GetInstance(vm_path(vm_id))


def relationship(conn: Any, vm_id: str, index: int = 0) -> CIMInstance | None:
    """The VM's Msvm_ReplicationRelationship (``…\\HVR\\<index>``), or None."""
    wanted = f"Microsoft:{vm_id}\\HVR\\{index}".upper()
    for inst in conn.EnumerateInstances("Msvm_ReplicationRelationship"):
        if str(inst["InstanceID"]).upper() == wanted:
            return inst
    return None


def recovery_points(conn: Any, vm_id: str) -> list[PointInfo]:
    """The VM's recovery points, oldest first (by sequence, then creation time)."""
    points = []
    for inst in conn.EnumerateInstances("Msvm_VirtualSystemSettingData"):
        kind = str(inst["VirtualSystemType"] or "")
        parent = str(inst["Parent"] or inst["VirtualSystemIdentifier"] or "")
        if not kind.startswith(RECOVERY_POINT_PREFIX) or parent.upper() != vm_id.upper():
            continue
        instance_id = str(inst["InstanceID"])
        created = inst["CreationTime"]
        points.append(PointInfo(
            instance_id=instance_id,
            point_id=instance_id.split(":", 1)[-1],
            vm_id=vm_id,
            kind=kind,
            created=created.datetime if created is not None else None,
            sequence=_sequence(inst["Notes"]),
            path=inst.path,
        ))
    return sorted(points, key=lambda p: (p.sequence if p.sequence is not None else -1,
                                         p.created.timestamp() if p.created else 0.0))


def _sequence(notes: Any) -> int | None:
    for note in notes or ():
        text = str(note)
        if text.startswith("sequence "):
            return int(text.split()[1])
    return None


# -- embedded settings ---------------------------------------------------------------------------------


def embedded(classname: str, **props: Any) -> str:
    """An embedded instance as the CIM-XML string WMI scripts pass (``GetText_(2)``)."""
    return str(CIMInstance(classname, properties=props).tocimxmlstr())


def service_settings(https_port: int) -> str:
    """Msvm_ReplicationServiceSettingData: a recovery server with certificate authentication."""
    return embedded("Msvm_ReplicationServiceSettingData",
                    RecoveryServerEnabled=True,
                    AllowedAuthenticationType=pywbem.Uint16(2),
                    HttpsPort=pywbem.Uint16(https_port))


def authorization_entry(primary_host: str, location: str, trust_group: str = "") -> str:
    """Msvm_ReplicationAuthorizationSettingData."""
    return embedded("Msvm_ReplicationAuthorizationSettingData",
                    AllowedPrimaryHostSystem=primary_host, TrustGroup=trust_group,
                    ReplicaStorageLocation=location)


def replication_settings(*, vm_name: str, vm_id: str, recovery_point: str, port: int, thumbprint: str,
                         interval: int, history: int = 4, compression: bool = True) -> str:
    """Msvm_ReplicationSettingData for certificate-authenticated host-to-host replication."""
    return embedded(
        "Msvm_ReplicationSettingData",
        InstanceID=f"Microsoft:{vm_id}\\HVR\\0",
        ElementName=vm_name,
        VirtualSystemIdentifier=vm_id,
        RecoveryConnectionPoint=recovery_point,
        RecoveryServerPortNumber=pywbem.Uint16(port),
        AuthenticationType=pywbem.Uint16(2),
        CertificateThumbPrint=thumbprint,
        CompressionEnabled=compression,
        ReplicationInterval=pywbem.Uint16(interval),
        RecoveryHistory=pywbem.Uint16(history),
        ApplicationConsistentSnapshotInterval=pywbem.Uint16(0),
    )
