"""VM life-cycle methods: ``Msvm_ComputerSystem.RequestStateChange`` and
``Msvm_VirtualSystemManagementService.DefineSystem`` / ``DestroySystem``, over ``engine.vms.VmUseCases``.

RequestStateChange answers with the CIM RequestStateChange codes: 4096 and a job for 2 start, 3 power off,
4 shut down, 9 pause, 11 reset; 4097 when the VM's state does not allow it; 1 for 6 (save). DefineSystem reads
the embedded VSSD (ElementName; KernelPath/InitrdPath/KernelCommandLine) and resource settings by
ResourceType: 4 memory (VirtualQuantity in AllocationUnits, MiB by default), 3 processors, 17/31 disks (a
HostResource path imports an existing qcow2, else VirtualQuantity bytes makes a new one), 10/33 NICs
(Connection[0] is the network). It completes synchronously with ResultingSystem.
"""

from __future__ import annotations

from typing import Any

from pywbem import CIMInstance

from standby.cim import naming
from standby.cim.embedded import property_value
from standby.cim.providers._base import done, referenced_vm, target_vm
from standby.cim.providers.registry import MethodCall, MethodResult, ProviderRegistry
from standby.cim.providers.replication_service import answer
from standby.cim.providers.vm_settings import (
    RT_DISK_DRIVE,
    RT_ETHERNET,
    RT_ETHERNET_CONNECTION,
    RT_LOGICAL_DISK,
    RT_MEMORY,
    RT_PROCESSOR,
    VSMS,
)
from standby.cim.runtime import CimRuntime
from standby.domain.errors import InvalidParameter, NotSupported
from standby.engine.systems import VirtualSystems
from standby.engine.vms import DiskRequest, VmRequest

#: AllocationUnits strings (DSP1041 programmatic units) and their size in bytes.
_UNITS = {"byte": 1, "byte*2^10": 1 << 10, "byte*2^20": 1 << 20, "byte*2^30": 1 << 30, "byte*2^40": 1 << 40}


def _systems(call: MethodCall) -> VirtualSystems:
    return call.runtime.engine.systems


def request_state_change(call: MethodCall) -> MethodResult:
    """``Msvm_ComputerSystem.RequestStateChange``: a job that starts, stops, pauses or resets the VM."""
    vm = target_vm(call)
    requested = call.param("RequestedState")
    if requested is None:
        raise InvalidParameter("RequestedState is required", message_id="BadRequestedState")
    return answer(call, _systems(call).request_state_change(vm.vm_id, int(requested)))


def define_system(call: MethodCall) -> MethodResult:
    """``DefineSystem``: a new VM from the embedded settings."""
    settings = call.param("SystemSettings")
    if settings is None:
        raise InvalidParameter("SystemSettings is required", message_id="VsSettingsRequired")
    if call.param("ReferenceConfiguration") is not None:
        raise NotSupported("ReferenceConfiguration is not supported", message_id="ReferenceConfigUnsupported")
    request = vm_request(settings, list(call.param("ResourceSettings") or []))
    vm = _systems(call).define(request)
    return done({"ResultingSystem": naming.system_path(call.namespace, vm.vm_id)})


def destroy_system(call: MethodCall) -> MethodResult:
    """``DestroySystem``: remove a stopped VM and the disks standby created for it."""
    vm = referenced_vm(call, "AffectedSystem")
    return answer(call, _systems(call).destroy(vm.vm_id))


def vm_request(settings: CIMInstance, resources: list[CIMInstance]) -> VmRequest:
    """The engine's request from an embedded VSSD and its resource settings."""
    name = property_value(settings, "ElementName")
    if not name:
        raise InvalidParameter("SystemSettings.ElementName (the VM name) is required", message_id="BadVmName")
    memory, cpus = 256, 1
    disks: list[DiskRequest] = []
    networks: list[str] = []
    for rasd in resources:
        kind = int(property_value(rasd, "ResourceType", 0))
        if kind == RT_MEMORY:
            memory = _quantity(rasd, default_units="byte*2^20") >> 20
        elif kind == RT_PROCESSOR:
            cpus = int(property_value(rasd, "VirtualQuantity", 1))
        elif kind in (RT_DISK_DRIVE, RT_LOGICAL_DISK):
            disks.append(_disk(rasd))
        elif kind in (RT_ETHERNET, RT_ETHERNET_CONNECTION):
            connection = property_value(rasd, "Connection") or ["user"]
            networks.append(str(connection[0]))
        else:
            raise InvalidParameter(
                f"ResourceType {kind} ({rasd.classname}) is not supported",
                message_id="ResourceTypeUnsupported",
                type=kind,
            )
    return VmRequest(
        name=str(name),
        memory_mib=memory,
        cpus=cpus,
        disks=tuple(disks),
        networks=tuple(networks),
        kernel=_opt_str(settings, "KernelPath"),
        initrd=_opt_str(settings, "InitrdPath"),
        append=_opt_str(settings, "KernelCommandLine"),
    )


def _disk(rasd: CIMInstance) -> DiskRequest:
    host_resource = property_value(rasd, "HostResource") or []
    if host_resource:
        return DiskRequest(path=str(host_resource[0]))
    return DiskRequest(size_bytes=_quantity(rasd, default_units="byte"))


def _quantity(rasd: CIMInstance, *, default_units: str) -> int:
    units = str(property_value(rasd, "AllocationUnits") or default_units).replace(" ", "").lower()
    if units not in _UNITS:
        raise InvalidParameter(
            f"AllocationUnits {units!r} is not supported (byte, byte*2^20, …)", message_id="BadSize"
        )
    quantity: Any = property_value(rasd, "VirtualQuantity")
    if quantity is None or int(quantity) <= 0:
        raise InvalidParameter(
            f"{rasd.classname}.VirtualQuantity must be a positive number", message_id="BadSize"
        )
    return int(quantity) * _UNITS[units]


def _opt_str(instance: CIMInstance, name: str) -> str | None:
    value = property_value(instance, name)
    return str(value) if value else None


def install(registry: ProviderRegistry, runtime: CimRuntime) -> None:
    """Register the life-cycle methods."""
    registry.add_method(naming.COMPUTER_SYSTEM, "RequestStateChange", request_state_change)
    registry.add_method(VSMS, "DefineSystem", define_system)
    registry.add_method(VSMS, "DestroySystem", destroy_system)
