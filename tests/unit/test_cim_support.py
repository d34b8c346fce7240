"""Shared set-up for the CIM tests: a real in-memory store, the real object manager, and request builders.

Not a test module itself (it holds no tests); the ``test_cim_*`` modules import from it.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pywbem import CIMInstance, CIMInstanceName, Uint16

from standby.cim.backend import CLUSTER_NAMESPACE, VIRTUALIZATION_NAMESPACE, RequestContext
from standby.cim.object_manager import CimObjectManager
from standby.cim.runtime import CimRuntime
from standby.daemon.compose import Services, build_services
from standby.daemon.config import parse_config
from standby.domain.entities import (
    Collection,
    CollectionRecoveryPoint,
    Host,
    Job,
    Nic,
    RecoveryPoint,
    Relationship,
    VirtualMachine,
)
from standby.domain.enums import (
    CollectionReplicationState,
    ConsistencyLevel,
    EnabledState,
    JobState,
    JobType,
    RelationshipIndex,
    ReplicationMode,
    ReplicationState,
    VirtualSystemType,
)
from standby.hypervisor.fake import FakeHypervisor
from standby.store.sqlite import Database

VIRT = VIRTUALIZATION_NAMESPACE
CLUSTER = CLUSTER_NAMESPACE
NOW = datetime(2024, 5, 6, 12, 30, tzinfo=UTC)
VM_ID = "4A0C2E6B-1111-4C3B-9D51-000000000001"
HOST = Host("HOST-ID", "primary-host", "primary-host.example.com")
CTX = RequestContext()


def clock() -> datetime:
    """The fixed time every test runs at."""
    return NOW


@dataclass
class World:
    """A store, the runtime and the object manager over it."""

    db: Database
    runtime: CimRuntime
    om: CimObjectManager
    services: Services

    def reset(self) -> None:
        """Drop every VM, collection, job, point and entry (module-scoped worlds reuse one store)."""
        for job in self.db.jobs.list():
            self.db.jobs.delete(job.job_id)
        for collection in self.db.collections.list():
            self.db.collections.delete(collection.collection_id)
        for vm in self.db.vms.list():
            self.db.vms.delete(vm.vm_id)
        for entry in self.db.auth_entries.list():
            self.db.auth_entries.delete(entry.allowed_primary_host)

    def invoke(self, target: CIMInstanceName, method: str, **params: object) -> tuple[int, dict[str, object]]:
        """InvokeMethod through the object manager; the return value as a plain int."""
        rv, out = self.om.invoke_method(target, method, params, CTX)
        return int(rv), out


def make_world(*, loop: asyncio.AbstractEventLoop | None = None, host: Host = HOST,
               world_clock: Callable[[], datetime] = clock) -> World:
    """A fresh world: the daemon's real composition over an in-memory store and the fake hypervisor.

    Without ``loop`` jobs are persisted but never run (their loop is not running), so a test sees what an
    entry started and the state it left, not what the job did later; pass a running loop to run them.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="standby-world-"))
    (data_dir / "host-id").write_text(host.host_id + "\n", encoding="ascii")
    config = parse_config({"host": {"name": host.name, "fqdn": host.fqdn}}, data_dir=data_dir)
    services = build_services(config, clock=world_clock, loop=loop or asyncio.new_event_loop(),
                              db=Database.memory(), hypervisor=FakeHypervisor(check_files=False))
    assert isinstance(services.object_manager, CimObjectManager)
    runtime = services.object_manager.runtime
    return World(services.db, runtime, services.object_manager, services)


def put_vm(
    world: World,
    *,
    mode: ReplicationMode = ReplicationMode.NONE,
    state: ReplicationState | None = None,
    on: bool = False,
    received: bool = False,
    extended: bool = False,
    point: bool | None = None,
    vm_id: str = VM_ID,
    name: str = "web01",
) -> VirtualMachine:
    """A VM in this mode; with a primary relationship in ``state`` (and an extended one when asked).

    ``received`` sets LastReplicationTime and stores a recovery point (unless ``point`` says otherwise).
    """
    # One NIC, so SetFailoverNetworkAdapterSettings has an adapter to store settings for.
    vm = VirtualMachine(vm_id, name, 256, 1, nics=(Nic("n0", "52:54:00:00:00:01"),), replication_mode=mode,
                        enabled_state=EnabledState.ENABLED if on else EnabledState.DISABLED, created_at=NOW)
    world.db.vms.insert(vm)
    indexes = [RelationshipIndex.PRIMARY] + ([RelationshipIndex.EXTENDED] if extended else [])
    if state is not None:
        for index in indexes:
            world.db.relationships.insert(Relationship(
                vm_id, index, state, last_replication_time=NOW - timedelta(minutes=5) if received else None))
    if received if point is None else point:
        world.db.recovery_points.insert(RecoveryPoint(
            f"{vm_id}-RP1", vm_id, 1, NOW - timedelta(minutes=5), VirtualSystemType.REPLICA_STANDARD))
    return vm


def put_collection(
    world: World,
    *,
    mode: ReplicationMode = ReplicationMode.NONE,
    state: CollectionReplicationState = CollectionReplicationState.DISABLED,
    on: bool = False,
    received: bool = False,
    collection_id: str = "GROUP-1",
) -> Collection:
    """A collection with one member VM (off unless ``on``) and, when ``received``, one group point.

    The member is in the collection's mode with a relationship in the matching state, as replication
    leaves it (a collection is replicated, failed over … through its members).
    """
    known = {int(s) for s in ReplicationState}
    member_state = ReplicationState(int(state)) if int(state) and int(state) in known else None
    member = put_vm(world, on=on, vm_id=f"{collection_id}-VM", name=f"{collection_id}-vm", mode=mode,
                    state=member_state, received=received)
    collection = Collection(collection_id, "group", (member.vm_id,), replication_mode=mode,
                            replication_state=state)
    world.db.collections.insert(collection)
    if received:
        world.db.collection_points.insert(CollectionRecoveryPoint(
            f"{collection_id}-CP1", collection_id, NOW - timedelta(minutes=5),
            ConsistencyLevel.GROUP_CRASH_CONSISTENT, ((member.vm_id, f"{member.vm_id}-RP1"),)))
    return collection


def put_running_job(world: World, element_id: str, job_id: str = "JOB-RUNNING") -> Job:
    """A job still Running on ``element_id`` (as the JobManager would have stored it)."""
    job = Job(job_id, JobType.INITIATE_FAILOVER, JobState.RUNNING, NOW - timedelta(seconds=3),
              description="failover", element_id=element_id, started_at=NOW - timedelta(seconds=2),
              state_changed_at=NOW - timedelta(seconds=2), cancellable=True)
    return world.db.jobs.insert(job)


# -- paths and parameter values ---------------------------------------------------------------------------


def vm_path(vm_id: str = VM_ID, namespace: str = VIRT) -> CIMInstanceName:
    """The REF of a VM."""
    return CIMInstanceName("Msvm_ComputerSystem", {"CreationClassName": "Msvm_ComputerSystem", "Name": vm_id},
                           namespace=namespace)


def service_path(classname: str = "Msvm_ReplicationService", name: str = "replicasvc",
                 namespace: str = VIRT) -> CIMInstanceName:
    """The path of a service of the test host."""
    return CIMInstanceName(classname, {"CreationClassName": classname, "Name": name,
                                       "SystemCreationClassName": "Msvm_ComputerSystem",
                                       "SystemName": HOST.name}, namespace=namespace)


def collection_path(collection_id: str = "GROUP-1", namespace: str = CLUSTER) -> CIMInstanceName:
    """The REF of a collection."""
    return CIMInstanceName("Msvm_VirtualSystemCollection", {"CollectionID": collection_id},
                           namespace=namespace)


def embedded(classname: str, **properties: object) -> str:
    """CIM-XML INSTANCE text as a client would send it (typed properties)."""
    instance = CIMInstance(classname)
    for name, value in properties.items():
        instance[name] = value
    return str(instance.tocimxmlstr())


def settings_xml(**overrides: object) -> str:
    """A valid Msvm_ReplicationSettingData."""
    props: dict[str, object] = {"RecoveryConnectionPoint": "replica.example.com",
                                "RecoveryServerPortNumber": Uint16(443), "AuthenticationType": Uint16(2),
                                "ReplicationInterval": Uint16(300)}
    props.update(overrides)
    return embedded("Msvm_ReplicationSettingData", **props)


def relationship_xml(index: int = 0, vm_id: str = VM_ID) -> str:
    """An embedded Msvm_ReplicationRelationship naming ``…\\HVR\\<index>``."""
    return embedded("Msvm_ReplicationRelationship", InstanceID=f"Microsoft:{vm_id}\\HVR\\{index}")


def entry_xml(host: str = "*.example.com", location: str = "/srv/replicas") -> str:
    """An embedded Msvm_ReplicationAuthorizationSettingData."""
    return embedded("Msvm_ReplicationAuthorizationSettingData", AllowedPrimaryHostSystem=host,
                    TrustGroup="DEFAULT", ReplicaStorageLocation=location)


def network_xml() -> str:
    """An embedded Msvm_FailoverNetworkAdapterSettingData."""
    return embedded("Msvm_FailoverNetworkAdapterSettingData", DHCPEnabled=False,
                    IPAddresses=["192.0.2.10"], Subnets=["255.255.255.0"])


def parse_embedded(text: str) -> CIMInstance:
    """Parse embedded instance text the way a pywbem client would."""
    from pywbem._tupleparse import TupleParser

    result = TupleParser().parse_embeddedObject(text)
    assert isinstance(result, CIMInstance)
    return result


def names(instances: Sequence[CIMInstance]) -> list[str]:
    """Class names of instances, sorted."""
    return sorted(i.classname for i in instances)


