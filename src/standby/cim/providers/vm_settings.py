"""The settings of each VM as CIM instances (root/virtualization/v2), and the VM management service.

- ``Msvm_VirtualSystemSettingData`` ``Microsoft:<VM GUID>``, VirtualSystemType ``…System:Realized``: the live
  settings (recovery-point snapshots of the same class come from ``recovery_points.py``);
- ``Msvm_MemorySettingData`` (``…\\Memory``, VirtualQuantity MiB), ``Msvm_ProcessorSettingData``
  (``…\\Processor``), ``Msvm_StorageAllocationSettingData`` per disk (``…\\Disk\\<id>``, HostResource = the
  qcow2 path, VirtualQuantity bytes), ``Msvm_SyntheticEthernetPortSettingData`` per NIC (Address = MAC,
  Connection = network);
- the singleton ``Msvm_VirtualSystemManagementService`` (``vmms``) that DefineSystem/DestroySystem run on.
"""

from __future__ import annotations

from collections.abc import Iterable

from pywbem import CIMInstance

from standby.cim import naming
from standby.cim.backend import RequestContext
from standby.cim.instances import make_instance
from standby.cim.providers._base import FunctionProvider, Produce
from standby.cim.providers.registry import ProviderRegistry
from standby.cim.runtime import CimRuntime
from standby.domain.entities import VirtualMachine
from standby.domain.enums import EnabledState, VirtualSystemType

VSMS = "Msvm_VirtualSystemManagementService"
VSMS_NAME = "vmms"
MEMORY = "Msvm_MemorySettingData"
PROCESSOR = "Msvm_ProcessorSettingData"
STORAGE = "Msvm_StorageAllocationSettingData"
NIC = "Msvm_SyntheticEthernetPortSettingData"
#: CIM_ResourceAllocationSettingData.ResourceType values standby uses.
RT_PROCESSOR, RT_MEMORY, RT_ETHERNET, RT_DISK_DRIVE, RT_LOGICAL_DISK, RT_ETHERNET_CONNECTION = (
    3,
    4,
    10,
    17,
    31,
    33,
)
MIB_UNITS = "byte*2^20"


def vssd_instance_id(vm_id: str) -> str:
    """InstanceID of a VM's live settings."""
    return f"{naming.INSTANCE_PREFIX}{vm_id}"


def vssd_instance(runtime: CimRuntime, namespace: str, vm: VirtualMachine) -> CIMInstance:
    """A VM's live settings."""
    return make_instance(
        runtime.schema,
        namespace,
        naming.VSSD,
        {
            "InstanceID": vssd_instance_id(vm.vm_id),
            "Caption": "Virtual Machine Settings",
            "ElementName": vm.name,
            "VirtualSystemIdentifier": vm.vm_id,
            "VirtualSystemType": VirtualSystemType.REALIZED.value,
            "CreationTime": vm.created_at,
            "KernelPath": vm.kernel,
            "InitrdPath": vm.initrd,
            "KernelCommandLine": vm.append,
        },
    )


def resource_instances(runtime: CimRuntime, namespace: str, vm: VirtualMachine) -> list[CIMInstance]:
    """Memory, processors, disks and NICs of a VM."""
    base = vssd_instance_id(vm.vm_id)

    def rasd(classname: str, suffix: str, values: dict[str, object]) -> CIMInstance:
        return make_instance(
            runtime.schema, namespace, classname, {"InstanceID": f"{base}\\{suffix}", **values}
        )

    found = [
        rasd(
            MEMORY,
            "Memory",
            {
                "ElementName": "Memory",
                "ResourceType": RT_MEMORY,
                "AllocationUnits": MIB_UNITS,
                "VirtualQuantity": vm.memory_mib,
                "DynamicMemoryEnabled": False,
            },
        ),
        rasd(
            PROCESSOR,
            "Processor",
            {
                "ElementName": "Processor",
                "ResourceType": RT_PROCESSOR,
                "AllocationUnits": "count",
                "VirtualQuantity": vm.cpus,
            },
        ),
    ]
    for slot, disk in enumerate(vm.disks):
        found.append(
            rasd(
                STORAGE,
                f"Disk\\{disk.disk_id}",
                {
                    "ElementName": f"Hard Disk Image {disk.disk_id}",
                    "ResourceType": RT_LOGICAL_DISK,
                    "HostResource": [disk.path],
                    "AllocationUnits": "byte",
                    "VirtualQuantity": disk.size_bytes,
                    "AddressOnParent": str(slot),
                },
            )
        )
    for nic in vm.nics:
        found.append(
            rasd(
                NIC,
                f"Nic\\{nic.nic_id}",
                {
                    "ElementName": f"Network Adapter {nic.nic_id}",
                    "ResourceType": RT_ETHERNET,
                    "Address": nic.mac.replace(":", "").upper(),
                    "StaticMacAddress": True,
                    "Connection": [nic.network],
                },
            )
        )
    return found


def service_instance(runtime: CimRuntime, namespace: str) -> CIMInstance:
    """The VM management service of this host."""
    return make_instance(
        runtime.schema,
        namespace,
        VSMS,
        {
            **naming.service_keys(runtime.host, VSMS, VSMS_NAME),
            "Caption": "Virtual Machine Management Service",
            "ElementName": "Virtual Machine Management Service",
            "EnabledState": EnabledState.ENABLED,
            "HealthState": 5,
            "OperationalStatus": [2],
            "Started": True,
        },
    )


def _vms(runtime: CimRuntime) -> list[VirtualMachine]:
    return runtime.engine.inventory.vms()


def _vssds(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    return [vssd_instance(runtime, namespace, vm) for vm in _vms(runtime)]


def _resources(runtime: CimRuntime, namespace: str, classname: str) -> Iterable[CIMInstance]:
    for vm in _vms(runtime):
        yield from (i for i in resource_instances(runtime, namespace, vm) if i.classname == classname)


def install(registry: ProviderRegistry, runtime: CimRuntime) -> None:
    """Register VSSDs, resource settings and the management service."""
    ns = naming.VIRTUALIZATION_ONLY
    registry.add_provider(FunctionProvider(naming.VSSD, ns, lambda n, ctx: _vssds(runtime, n, ctx)))
    registry.add_provider(FunctionProvider(VSMS, ns, lambda n, ctx: [service_instance(runtime, n)]))
    for classname in (MEMORY, PROCESSOR, STORAGE, NIC):
        registry.add_provider(FunctionProvider(classname, ns, _resource_producer(runtime, classname)))


def _resource_producer(runtime: CimRuntime, classname: str) -> Produce:
    def produce(namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
        return _resources(runtime, namespace, classname)

    return produce
