"""Failover IP settings (hyperv-api §5.7): ``Msvm_FailoverNetworkAdapterSettingData`` per NIC, linked to the
NIC's ``Msvm_SyntheticEthernetPortSettingData`` by ``Msvm_EthernetPortFailoverSettingDataComponent``, and the
parsing of ``SetFailoverNetworkAdapterSettings``' embedded instances.

Every NIC of every VM has one instance, so clients can read, change and pass it back: the stored settings,
or the default (DHCP, no addresses) for a NIC that has none. An embedded instance names its NIC by
InstanceID (``Microsoft:<VM GUID>\\Nic\\<nic>[\\Failover]``, as served here or as the NIC's own); one
without an InstanceID applies to the NIC at its position in the array.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pywbem import CIMInstance

from standby.cim import naming
from standby.cim.backend import RequestContext
from standby.cim.embedded import property_value
from standby.cim.instances import make_instance
from standby.cim.providers._base import FunctionProvider, Producer, bind
from standby.cim.providers.registry import ProviderRegistry
from standby.cim.providers.vm_settings import NIC, vssd_instance_id
from standby.cim.runtime import CimRuntime
from standby.domain.entities import VirtualMachine
from standby.domain.enums import ProtocolIFType
from standby.domain.errors import InvalidParameter
from standby.domain.failover import FailoverNetworkSettings

SETTING = "Msvm_FailoverNetworkAdapterSettingData"
COMPONENT = "Msvm_EthernetPortFailoverSettingDataComponent"
_NIC_ID = re.compile(r"^Microsoft:(?P<vm>[^\\]+)\\Nic\\(?P<nic>[^\\]+)(?:\\Failover)?$", re.IGNORECASE)


def _default(vm: VirtualMachine, nic_id: str) -> FailoverNetworkSettings:
    return FailoverNetworkSettings(vm.vm_id, nic_id, ProtocolIFType.IPV4, dhcp_enabled=True)


def settings_instance(runtime: CimRuntime, namespace: str, item: FailoverNetworkSettings) -> CIMInstance:
    """One NIC's failover settings as a CIM instance."""
    return make_instance(runtime.schema, namespace, SETTING, {
        "InstanceID": item.instance_id,
        "Caption": "Failover Network Adapter Settings",
        "ElementName": f"Failover settings of network adapter {item.nic_id}",
        "ProtocolIFType": int(item.protocol),
        "DHCPEnabled": item.dhcp_enabled,
        "IPAddresses": list(item.ip_addresses),
        "Subnets": list(item.subnets),
        "DefaultGateways": list(item.default_gateways),
        "DNSServers": list(item.dns_servers),
    })


def _all(runtime: CimRuntime) -> Iterable[tuple[VirtualMachine, FailoverNetworkSettings]]:
    stored = {(s.vm_id, s.nic_id): s for s in runtime.engine.inventory.failover_network()}
    for vm in runtime.engine.inventory.vms():
        for nic in vm.nics:
            yield vm, stored.get((vm.vm_id, nic.nic_id)) or _default(vm, nic.nic_id)


def _settings(runtime: CimRuntime, ns: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    for _, item in _all(runtime):
        yield settings_instance(runtime, ns, item)


def _components(runtime: CimRuntime, ns: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    for vm, item in _all(runtime):
        nic = naming.instance_id_path(ns, NIC, f"{vssd_instance_id(vm.vm_id)}\\Nic\\{item.nic_id}")
        yield make_instance(runtime.schema, ns, COMPONENT, {
            "GroupComponent": nic,
            "PartComponent": naming.instance_id_path(ns, SETTING, item.instance_id),
        })


# -- SetFailoverNetworkAdapterSettings ---------------------------------------------------------------------


def parse_settings(vm: VirtualMachine, instances: list[Any]) -> list[FailoverNetworkSettings]:
    """The embedded instances of SetFailoverNetworkAdapterSettings in Python words."""
    return [from_instance(vm, instance) for instance in instances]


def from_instance(vm: VirtualMachine, instance: Any) -> FailoverNetworkSettings:
    """One embedded ``Msvm_FailoverNetworkAdapterSettingData`` in Python words (NIC "" = by position)."""
    if not isinstance(instance, CIMInstance):
        raise InvalidParameter("NetworkSettings must hold Msvm_FailoverNetworkAdapterSettingData instances",
                               message_id="FailoverNetworkInvalid", nic="?", detail="not an instance")
    nic_id = _nic_of(vm, property_value(instance, "InstanceID"))
    dhcp = property_value(instance, "DHCPEnabled")
    if dhcp is None:
        raise _missing(nic_id, "DHCPEnabled")
    addresses = property_value(instance, "IPAddresses")
    if addresses is None and not dhcp:
        raise _missing(nic_id, "IPAddresses")
    return FailoverNetworkSettings(
        vm_id=vm.vm_id, nic_id=nic_id, protocol=_protocol(nic_id, property_value(instance, "ProtocolIFType")),
        dhcp_enabled=bool(dhcp), ip_addresses=_strings(addresses), subnets=_strings(
            property_value(instance, "Subnets")),
        default_gateways=_strings(property_value(instance, "DefaultGateways")),
        dns_servers=_strings(property_value(instance, "DNSServers")),
    )


def _nic_of(vm: VirtualMachine, instance_id: Any) -> str:
    match = _NIC_ID.match(str(instance_id or "").strip())
    if match is None:
        return ""
    if match["vm"].upper() != vm.vm_id.upper():
        raise InvalidParameter(f"InstanceID {instance_id} names a network adapter of another VM",
                               message_id="FailoverNetworkInvalid", nic=match["nic"],
                               detail="the adapter belongs to another virtual machine")
    return str(match["nic"])


def _protocol(nic_id: str, value: Any) -> ProtocolIFType:
    if value is None:
        return ProtocolIFType.IPV4_IPV6
    try:
        return ProtocolIFType(int(value))
    except ValueError:
        raise InvalidParameter(f"ProtocolIFType {value} is not 0, 1, 4096, 4097 or 4098",
                               message_id="FailoverNetworkInvalid", nic=nic_id or "?",
                               detail=f"ProtocolIFType {value} is not supported") from None


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value or () if v is not None)


def _missing(nic_id: str, name: str) -> InvalidParameter:
    return InvalidParameter(f"{name} is required in Msvm_FailoverNetworkAdapterSettingData",
                            message_id="FailoverNetworkInvalid", nic=nic_id or "?",
                            detail=f"{name} is required")


def install(registry: ProviderRegistry, runtime: CimRuntime) -> None:
    """Register the failover settings and their association to the NICs."""
    table: list[tuple[str, Producer]] = [(SETTING, _settings), (COMPONENT, _components)]
    for classname, produce in table:
        registry.add_provider(FunctionProvider(classname, naming.VIRTUALIZATION_ONLY, bind(produce, runtime)))
