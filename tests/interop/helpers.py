"""Shared bits of the interop tests: paths of the seeded objects, job polling and state reads through pywbem,
and what a failover left on disk."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pywbem
from pywbem import CIMInstance, CIMInstanceName

from standby.domain.failover import FAILOVER_DIR
from tests.interop.conftest import CLUSTER, COLLECTION_ID, PASSWORD, USER, VIRT, Seeded

TERMINAL_JOB_STATES = {7, 8, 9, 10, 32768}


def connect(url: str, namespace: str = VIRT, *, language: str | None = None) -> pywbem.WBEMConnection:
    """A pywbem connection; ``language`` goes out as ``Accept-Language`` on the requests session."""
    conn = pywbem.WBEMConnection(url, (USER, PASSWORD), default_namespace=namespace, timeout=60)
    if language:
        conn.session.headers["Accept-Language"] = language
    return conn


def vm_path(conn: pywbem.WBEMConnection, vm_id: str) -> CIMInstanceName:
    """The Msvm_ComputerSystem path of a seeded VM, as the server names it."""
    (path,) = [
        p for p in conn.EnumerateInstanceNames("Msvm_ComputerSystem") if p.keybindings["Name"] == vm_id
    ]
    return path


def service_path(conn: pywbem.WBEMConnection, classname: str = "Msvm_ReplicationService") -> CIMInstanceName:
    """The singleton service of the host."""
    (path,) = conn.EnumerateInstanceNames(classname)
    return path


def collection_path() -> CIMInstanceName:
    """The seeded collection ``group-1``."""
    return CIMInstanceName("Msvm_VirtualSystemCollection", {"CollectionID": COLLECTION_ID}, namespace=CLUSTER)


def replication_state(conn: pywbem.WBEMConnection, vm_id: str) -> int:
    """The VM's ReplicationState as Msvm_ComputerSystem shows it."""
    return int(conn.GetInstance(vm_path(conn, vm_id))["ReplicationState"])


def collection_state(conn: pywbem.WBEMConnection) -> int:
    """The seeded collection's ReplicationState."""
    return int(conn.GetInstance(collection_path())["ReplicationState"])


def wait_for_job(conn: pywbem.WBEMConnection, job: CIMInstanceName, timeout: float = 60.0) -> CIMInstance:
    """Poll the Msvm_ConcreteJob until it is terminal (as WMI scripts do) and return it."""
    deadline = time.monotonic() + timeout
    while True:
        inst = conn.GetInstance(job)
        if int(inst["JobState"]) in TERMINAL_JOB_STATES:
            return inst
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job} still in state {inst['JobState']} after {timeout} s")
        time.sleep(0.1)


def completed(conn: pywbem.WBEMConnection, rv: int, out: dict[str, object]) -> CIMInstance:
    """A method that started a job (4096) whose job completed (7, ErrorCode 0); the job."""
    assert rv == 4096, rv
    job = wait_for_job(conn, out["Job"])
    assert (job["JobState"], job["ErrorCode"]) == (7, 0), job["ErrorDescription"]
    return job


def failover_overlay(seeded: Seeded, vm_id: str) -> Path:
    """The overlay a failover of ``vm_id`` runs on (``<replica>/failover/d0.qcow2``)."""
    return seeded.folder(vm_id) / FAILOVER_DIR / "d0.qcow2"


def backing_of(image: Path) -> Path:
    """The backing file ``qemu-img info`` reads from an image's header."""
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(image)], check=True,
                         capture_output=True, text=True).stdout
    return Path(json.loads(out)["backing-filename"])


def same_content(a: Path, b: Path) -> bool:
    """``qemu-img compare``: the guest sees the same bytes in both images."""
    command = ["qemu-img", "compare", "-U", "-q", str(a), str(b)]
    done = subprocess.run(command, capture_output=True, check=False)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


__all__ = ["CLUSTER", "VIRT", "backing_of", "collection_path", "collection_state", "completed", "connect",
           "failover_overlay", "replication_state", "same_content", "service_path", "vm_path", "wait_for_job"]
