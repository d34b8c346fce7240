"""How standby names its CIM objects: class names, fixed key values, and the keys of each kind of path.

Every provider and association builds paths through these helpers, so a path built here equals the path of
the instance the provider yields (the object manager compares them).
"""

from __future__ import annotations

from typing import Any

from pywbem import CIMInstance, CIMInstanceName

from standby.cim.backend import CLUSTER_NAMESPACE, VIRTUALIZATION_NAMESPACE
from standby.domain.entities import Host

BOTH = frozenset({VIRTUALIZATION_NAMESPACE, CLUSTER_NAMESPACE})
VIRTUALIZATION_ONLY = frozenset({VIRTUALIZATION_NAMESPACE})
CLUSTER_ONLY = frozenset({CLUSTER_NAMESPACE})

COMPUTER_SYSTEM = "Msvm_ComputerSystem"
CONCRETE_JOB = "Msvm_ConcreteJob"
REPLICATION_SERVICE = "Msvm_ReplicationService"
REPLICATION_SERVICE_NAME = "replicasvc"
COLLECTION_MANAGEMENT_SERVICE = "Msvm_CollectionManagementService"
COLLECTION_REPLICATION_SERVICE = "Msvm_CollectionReplicationService"
VIRTUAL_SYSTEM_COLLECTION = "Msvm_VirtualSystemCollection"
VSSD = "Msvm_VirtualSystemSettingData"
#: The prefix of every InstanceID standby makes, as Hyper-V spells its own.
INSTANCE_PREFIX = "Microsoft:"


def system_path(namespace: str, name: str) -> CIMInstanceName:
    """The path of the host or a VM (``Name`` = host name or VM GUID)."""
    return CIMInstanceName(
        COMPUTER_SYSTEM, keybindings={"CreationClassName": COMPUTER_SYSTEM, "Name": name}, namespace=namespace
    )


def service_keys(host: Host, classname: str, name: str) -> dict[str, Any]:
    """The four keys of a CIM_Service hosted by this host."""
    return {
        "SystemCreationClassName": COMPUTER_SYSTEM,
        "SystemName": host.name,
        "CreationClassName": classname,
        "Name": name,
    }


def service_path(namespace: str, host: Host, classname: str, name: str) -> CIMInstanceName:
    """The path of a service of this host."""
    return CIMInstanceName(classname, keybindings=service_keys(host, classname, name), namespace=namespace)


def instance_id_path(namespace: str, classname: str, instance_id: str) -> CIMInstanceName:
    """The path of an instance keyed by InstanceID alone."""
    return CIMInstanceName(classname, keybindings={"InstanceID": instance_id}, namespace=namespace)


def job_path(namespace: str, job_id: str) -> CIMInstanceName:
    """The path of a job (Msvm_ConcreteJob, InstanceID = job GUID)."""
    return instance_id_path(namespace, CONCRETE_JOB, job_id)


def collection_path(namespace: str, collection_id: str) -> CIMInstanceName:
    """The path of a VM collection."""
    return CIMInstanceName(
        VIRTUAL_SYSTEM_COLLECTION, keybindings={"CollectionID": collection_id}, namespace=namespace
    )


def point_instance_id(point_id: str) -> str:
    """The VSSD InstanceID of a recovery point."""
    return f"{INSTANCE_PREFIX}{point_id}"


def point_id_of(instance_id: str | None) -> str | None:
    """The recovery point id inside a VSSD InstanceID (None stays None)."""
    if instance_id is None:
        return None
    return instance_id[len(INSTANCE_PREFIX):] if instance_id.startswith(INSTANCE_PREFIX) else instance_id


def key(instance: CIMInstance | None, name: str) -> Any:
    """A key value of a referenced instance (None when no instance)."""
    if instance is None or instance.path is None:
        return None
    for key_name, value in instance.path.keybindings.items():
        if key_name.lower() == name.lower():
            return value
    return None
