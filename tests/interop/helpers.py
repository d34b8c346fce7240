"""Shared bits of the interop tests: paths of the seeded objects and job polling through pywbem."""

from __future__ import annotations

import time

import pywbem
from pywbem import CIMInstance, CIMInstanceName

from standby.engine.operations import CollectionUseCase, UseCase, is_implemented
from tests.interop.conftest import CLUSTER, PASSWORD, USER, VIRT

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


def expected_start(use_case: UseCase | CollectionUseCase) -> int:
    """What an allowed call answers today: 4096 once the operation is implemented, else 32770."""
    return 4096 if is_implemented(use_case) else 32770


__all__ = ["CLUSTER", "VIRT", "connect", "expected_start", "service_path", "vm_path", "wait_for_job"]
