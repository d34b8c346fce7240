"""Test support for the CIM-XML server (no tests here): a small ObjectManager built from compiled MOF.

The real object manager is ``standby.cim.object_manager``; these unit tests exercise the wire layer on its
own, so they use pywbem's in-memory repository (``pywbem_mock``) with a MOF of our own that mirrors the
shapes the Hyper-V classes have (keys, REF parameters, out REFs, embedded-instance arrays, a static method,
an association). Method calls are recorded so tests can check what reached the object manager.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pywbem
import uvicorn
from pywbem import (
    CIM_ERR_METHOD_NOT_FOUND,
    CIMClass,
    CIMClassName,
    CIMError,
    CIMInstance,
    CIMInstanceName,
    Uint16,
    Uint32,
)
from pywbem_mock import FakedWBEMConnection

from standby.cim.backend import RequestContext

VIRT = "root/virtualization/v2"
CLUSTER = "root/HyperVCluster/v2"
INTEROP = "interop"
HOST = "testhost.example"
HTTP_IMPL = "h11"

QUALIFIERS = """
Qualifier Association : boolean = false, Scope(association), Flavor(DisableOverride, ToSubclass);
Qualifier Description : string = null, Scope(any), Flavor(EnableOverride, ToSubclass, Translatable);
Qualifier EmbeddedInstance : string = null, Scope(property, method, parameter),
    Flavor(EnableOverride, ToSubclass);
Qualifier In : boolean = true, Scope(parameter), Flavor(DisableOverride, ToSubclass);
Qualifier Key : boolean = false, Scope(property, reference), Flavor(DisableOverride, ToSubclass);
Qualifier Out : boolean = false, Scope(parameter), Flavor(DisableOverride, ToSubclass);
Qualifier Static : boolean = false, Scope(property, method), Flavor(DisableOverride, ToSubclass);
Qualifier Abstract : boolean = false, Scope(class, association, indication),
    Flavor(EnableOverride, Restricted);
"""

VIRT_MOF = """
[Abstract, Description("Base.")]
class CIM_ManagedElement {
    string Caption;
    string Description;
    string ElementName;
};
class CIM_ComputerSystem : CIM_ManagedElement {
    [Key] string CreationClassName;
    [Key] string Name;
    uint16 EnabledState;
};
class Msvm_ComputerSystem : CIM_ComputerSystem {
    uint16 ReplicationState;
    uint16 ReplicationMode;
    string Notes[];
    boolean Replicated;
    uint32 RequestReplicationStateChange(
        [In] uint16 RequestedState,
        [In] datetime TimeoutPeriod,
        [In(false), Out] CIM_ManagedElement REF Job);
};
class CIM_VirtualSystemSettingData : CIM_ManagedElement {
    [Key] string InstanceID;
    string VirtualSystemType;
};
class Msvm_ConcreteJob : CIM_ManagedElement {
    [Key] string InstanceID;
    uint16 JobState;
    string ErrorDescription;
    uint16 ErrorCode;
};
class Msvm_ReplicationStatistics : CIM_ManagedElement {
    [Key] string InstanceID;
    uint32 ReplicationSuccessCount;
};
class Msvm_ReplicationServiceSettingData : CIM_ManagedElement {
    [Key] string InstanceID;
};
class Msvm_ReplicationService : CIM_ManagedElement {
    [Key] string CreationClassName;
    [Key] string Name;
    [Key] string SystemCreationClassName;
    [Key] string SystemName;
    uint32 InitiateFailover(
        [In] CIM_ComputerSystem REF ComputerSystem,
        [In] CIM_VirtualSystemSettingData REF SnapshotSettingData,
        [In(false), Out] CIM_ManagedElement REF Job);
    uint32 GetSystemCertificates([In(false), Out] string EncodedCertificates[]);
    uint32 GetReplicationStatistics(
        [In] CIM_ComputerSystem REF ComputerSystem,
        [In(false), Out, EmbeddedInstance("Msvm_ReplicationStatistics")] string ReplicationStatistics[],
        [In(false), Out] CIM_ManagedElement REF Job);
    uint32 ModifyServiceSettings(
        [In, EmbeddedInstance("Msvm_ReplicationServiceSettingData")] string SettingData,
        [In(false), Out] CIM_ManagedElement REF Job);
    [Static] uint32 Ping([In] string Text, [In] uint32 Count, [In] boolean Flag,
        [In] string Texts[], [In(false), Out] string Echo);
};
[Association]
class Msvm_SystemReplicationRelationship {
    [Key] CIM_ComputerSystem REF Antecedent;
    [Key] CIM_VirtualSystemSettingData REF Dependent;
};
"""

INTEROP_MOF = """
class CIM_Namespace {
    [Key] string Name;
    string ObjectManagerName;
};
class CIM_ObjectManager {
    [Key] string Name;
    string ElementName;
    string Description;
};
"""

Handler = Callable[
    [CIMInstanceName | CIMClassName, Mapping[str, Any], RequestContext], tuple[Any, dict[str, Any]]
]


@dataclass
class Invocation:
    """What one ``invoke_method`` received."""

    target: CIMInstanceName | CIMClassName
    method: str
    params: dict[str, Any]
    ctx: RequestContext


@dataclass
class MockObjectManager:
    """``cim.backend.ObjectManager`` over pywbem_mock's repository, with Python method handlers."""

    conn: FakedWBEMConnection
    handlers: dict[tuple[str, str], Handler] = field(default_factory=dict)
    calls: list[Invocation] = field(default_factory=list)
    contexts: list[RequestContext] = field(default_factory=list)
    fail_with: Exception | None = None

    def namespaces(self) -> Sequence[str]:
        return [VIRT, CLUSTER, INTEROP]

    def _maybe_fail(self, ctx: RequestContext | None = None) -> None:
        if ctx is not None:
            self.contexts.append(ctx)
        if self.fail_with is not None:
            raise self.fail_with

    def get_class(
        self,
        namespace: str,
        classname: str,
        *,
        local_only: bool = True,
        include_qualifiers: bool = True,
        include_class_origin: bool = False,
        property_list: Sequence[str] | None = None,
    ) -> CIMClass:
        self._maybe_fail()
        return self.conn.GetClass(
            classname,
            namespace=namespace,
            LocalOnly=local_only,
            IncludeQualifiers=include_qualifiers,
            IncludeClassOrigin=include_class_origin,
            PropertyList=property_list,
        )

    def enumerate_classes(
        self, namespace: str, classname: str | None = None, *, deep_inheritance: bool = False
    ) -> list[CIMClass]:
        self._maybe_fail()
        return list(
            self.conn.EnumerateClasses(
                namespace=namespace,
                ClassName=classname,
                DeepInheritance=deep_inheritance,
                LocalOnly=False,
                IncludeClassOrigin=True,
            )
        )

    def enumerate_instances(
        self,
        namespace: str,
        classname: str,
        ctx: RequestContext,
        *,
        deep_inheritance: bool = True,
        property_list: Sequence[str] | None = None,
    ) -> list[CIMInstance]:
        self._maybe_fail(ctx)
        return list(
            self.conn.EnumerateInstances(
                classname, namespace=namespace, DeepInheritance=deep_inheritance, PropertyList=property_list
            )
        )

    def get_instance(
        self, path: CIMInstanceName, ctx: RequestContext, *, property_list: Sequence[str] | None = None
    ) -> CIMInstance:
        self._maybe_fail(ctx)
        return self.conn.GetInstance(path, PropertyList=property_list)

    def invoke_method(
        self,
        target: CIMInstanceName | CIMClassName,
        method: str,
        params: Mapping[str, Any],
        ctx: RequestContext,
    ) -> tuple[Any, dict[str, Any]]:
        self._maybe_fail(ctx)
        self.calls.append(Invocation(target, method, dict(params), ctx))
        handler = self.handlers.get((target.classname.lower(), method.lower()))
        if handler is None:
            raise CIMError(CIM_ERR_METHOD_NOT_FOUND, f"{target.classname} has no method {method}")
        return handler(target, params, ctx)

    def associators(
        self,
        path: CIMInstanceName,
        ctx: RequestContext,
        *,
        assoc_class: str | None = None,
        result_class: str | None = None,
        role: str | None = None,
        result_role: str | None = None,
    ) -> list[CIMInstance]:
        self._maybe_fail(ctx)
        return list(
            self.conn.Associators(
                path, AssocClass=assoc_class, ResultClass=result_class, Role=role, ResultRole=result_role
            )
        )

    def references(
        self,
        path: CIMInstanceName,
        ctx: RequestContext,
        *,
        result_class: str | None = None,
        role: str | None = None,
    ) -> list[CIMInstance]:
        self._maybe_fail(ctx)
        return list(self.conn.References(path, ResultClass=result_class, Role=role))


def vm_path(name: str) -> CIMInstanceName:
    return CIMInstanceName(
        "Msvm_ComputerSystem", {"CreationClassName": "Msvm_ComputerSystem", "Name": name}, namespace=VIRT
    )


def service_path() -> CIMInstanceName:
    return CIMInstanceName(
        "Msvm_ReplicationService",
        {
            "CreationClassName": "Msvm_ReplicationService",
            "Name": "replicasvc",
            "SystemCreationClassName": "Msvm_ComputerSystem",
            "SystemName": HOST,
        },
        namespace=VIRT,
    )


def job_path(job_id: str) -> CIMInstanceName:
    return CIMInstanceName("Msvm_ConcreteJob", {"InstanceID": job_id}, namespace=VIRT)


def snapshot_path(instance_id: str) -> CIMInstanceName:
    return CIMInstanceName("CIM_VirtualSystemSettingData", {"InstanceID": instance_id}, namespace=VIRT)


def _add(conn: FakedWBEMConnection, classname: str, path: CIMInstanceName, props: dict[str, Any]) -> None:
    inst = CIMInstance(classname, properties={**dict(path.keybindings), **props}, path=path)
    conn.add_cimobjects(inst, namespace=path.namespace)


def _failover(target: Any, params: Mapping[str, Any], ctx: RequestContext) -> tuple[Any, dict[str, Any]]:
    vm = params.get("ComputerSystem")
    if not isinstance(vm, CIMInstanceName):
        return Uint32(32773), {"Job": None}
    if vm.keybindings.get("Name") == "REPLICA-1":
        return Uint32(4096), {"Job": job_path("job-1")}
    return Uint32(32775), {"Job": None}


def _state_change(target: Any, params: Mapping[str, Any], ctx: RequestContext) -> tuple[Any, dict[str, Any]]:
    state = params.get("RequestedState")
    value = int(state) if isinstance(state, (int, str)) and str(state).isdigit() else None
    if value is None:
        return Uint32(32773), {"Job": None}
    return Uint32(4096 if value == 3 else 32775), {"Job": job_path("job-2") if value == 3 else None}


def _certificates(target: Any, params: Mapping[str, Any], ctx: RequestContext) -> tuple[Any, dict[str, Any]]:
    return Uint32(0), {"EncodedCertificates": ["AAAA", "BBBB"]}


def _statistics(target: Any, params: Mapping[str, Any], ctx: RequestContext) -> tuple[Any, dict[str, Any]]:
    stats = CIMInstance(
        "Msvm_ReplicationStatistics", {"InstanceID": "s1", "ReplicationSuccessCount": Uint32(7)}
    )
    text = "Statistik" if ctx.language == "de" else "statistics"
    stats["ElementName"] = text
    return Uint32(0), {"ReplicationStatistics": [stats.tocimxmlstr()], "Job": None}


def _modify_settings(
    target: Any, params: Mapping[str, Any], ctx: RequestContext
) -> tuple[Any, dict[str, Any]]:
    return Uint32(0 if isinstance(params.get("SettingData"), str) else 32773), {"Job": None}


def _ping(target: Any, params: Mapping[str, Any], ctx: RequestContext) -> tuple[Any, dict[str, Any]]:
    return Uint32(0), {"Echo": f"{params.get('Text')}|{params.get('Count')!r}|{ctx.language}"}


def build_object_manager() -> MockObjectManager:
    """A populated mock: host + two VMs, a replication service, a job, a recovery point, an association."""
    conn = FakedWBEMConnection(default_namespace=VIRT)
    for ns in (CLUSTER, INTEROP):
        conn.add_namespace(ns)
    for ns in (VIRT, CLUSTER, INTEROP):
        conn.compile_mof_string(QUALIFIERS, namespace=ns)
    conn.compile_mof_string(VIRT_MOF, namespace=VIRT)
    conn.compile_mof_string(VIRT_MOF, namespace=CLUSTER)
    conn.compile_mof_string(INTEROP_MOF, namespace=INTEROP)
    _add(
        conn,
        "Msvm_ComputerSystem",
        vm_path("PRIMARY-1"),
        {
            "ElementName": "web",
            "EnabledState": Uint16(2),
            "ReplicationState": Uint16(3),
            "ReplicationMode": Uint16(1),
            "Notes": ["a", "b"],
            "Replicated": True,
        },
    )
    _add(
        conn,
        "Msvm_ComputerSystem",
        vm_path("REPLICA-1"),
        {
            "ElementName": "db",
            "EnabledState": Uint16(3),
            "ReplicationState": Uint16(3),
            "ReplicationMode": Uint16(2),
            "Notes": pywbem.CIMProperty("Notes", [], type="string"),
            "Replicated": False,
        },
    )
    _add(conn, "Msvm_ReplicationService", service_path(), {"ElementName": "Hyper-V Replica Service"})
    _add(
        conn,
        "Msvm_ConcreteJob",
        job_path("job-1"),
        {"JobState": Uint16(7), "ErrorCode": Uint16(0), "ErrorDescription": ""},
    )
    _add(conn, "CIM_VirtualSystemSettingData", snapshot_path("rp-1"), {"VirtualSystemType": "Replica"})
    assoc_path = CIMInstanceName(
        "Msvm_SystemReplicationRelationship",
        {"Antecedent": vm_path("REPLICA-1"), "Dependent": snapshot_path("rp-1")},
        namespace=VIRT,
    )
    _add(conn, "Msvm_SystemReplicationRelationship", assoc_path, {})
    _add(
        conn,
        "CIM_ObjectManager",
        CIMInstanceName("CIM_ObjectManager", {"Name": "standby"}, namespace=INTEROP),
        {"ElementName": "standby", "Description": "standby CIM server version 0.1.0"},
    )
    for ns in (VIRT, CLUSTER, INTEROP):
        _add(
            conn,
            "CIM_Namespace",
            CIMInstanceName("CIM_Namespace", {"Name": ns}, namespace=INTEROP),
            {"ObjectManagerName": "standby"},
        )
    om = MockObjectManager(conn)
    om.handlers = {
        ("msvm_replicationservice", "initiatefailover"): _failover,
        ("msvm_replicationservice", "getsystemcertificates"): _certificates,
        ("msvm_replicationservice", "getreplicationstatistics"): _statistics,
        ("msvm_replicationservice", "modifyservicesettings"): _modify_settings,
        ("msvm_replicationservice", "ping"): _ping,
        ("msvm_computersystem", "requestreplicationstatechange"): _state_change,
    }
    return om


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Run an ASGI app under a real uvicorn on a loopback port; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", http=HTTP_IMPL
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def pywbem_connection(url: str, namespace: str = VIRT, **kwargs: Any) -> pywbem.WBEMConnection:
    return pywbem.WBEMConnection(url, default_namespace=namespace, timeout=30, **kwargs)
