"""Msvm_RedundancySet (root/HyperVCluster/v2, hyperv-api §8.8) and its Failover method;
Msvm_FailoverIndication.

The sets come from ``engine.redundancy.RedundancyUseCases`` (one per replicated VM, one per pair of hosts
that replicate to each other, plus any stored ones). Members on another host are served in this namespace as
Msvm_ComputerSystem instances too — the peer host by its name, a VM's copy there as ``<GUID>@<host>`` — so
that ``Msvm_MemberOfRedundancySet`` and Failover's REFs name something that exists. ``Failover`` answers the
seed-000 codes (0 done, 1 not supported, 2 other error, 3 busy, 4 parameter error); it is synchronous. Every
VM a Failover moved leaves an Msvm_FailoverIndication instance (readable with EnumerateInstances).
"""

from __future__ import annotations

from collections.abc import Iterable

from pywbem import CIMInstance

from standby.cim import naming
from standby.cim.backend import RequestContext
from standby.cim.instances import make_instance
from standby.cim.providers._base import FunctionProvider
from standby.cim.providers.registry import MethodCall, MethodResult, ProviderRegistry
from standby.cim.runtime import CimRuntime
from standby.domain.entities import RedundancySet
from standby.domain.enums import EnabledState, TypeOfSet
from standby.domain.groups import FailoverIndication
from standby.engine.redundancy import HOST_SET, VM_SET, PeerSystem, RedundancyUseCases

REDUNDANCY_SET = "Msvm_RedundancySet"
INDICATION = "Msvm_FailoverIndication"
_INSTANCE_PREFIX = "Microsoft:"


def set_instance(runtime: CimRuntime, namespace: str, rs: RedundancySet) -> CIMInstance:
    """A redundancy set as an Msvm_RedundancySet."""
    kind = "virtual machine and its replica" if rs.set_id.startswith(VM_SET) else \
        "hosts that replicate to each other" if rs.set_id.startswith(HOST_SET) else "redundancy set"
    return make_instance(runtime.schema, namespace, REDUNDANCY_SET, {
        "InstanceID": f"{_INSTANCE_PREFIX}{rs.set_id}",
        "ElementName": rs.name,
        "Caption": "Redundancy Set",
        "Description": f"Redundancy set: {kind}",
        "RedundancyStatus": rs.status,
        "TypeOfSet": [rs.type_of_set],
        "MinNumberNeeded": 1,
        "MaxNumberSupported": len(rs.member_ids) if rs.type_of_set is TypeOfSet.SPARING else 0,
        "VendorIdentifyingInfo": "standby",
        "LoadBalanceAlgorithm": 2,
    })


def _engine(runtime: CimRuntime) -> RedundancyUseCases:
    return runtime.engine.redundancy


def _sets(runtime: CimRuntime) -> list[RedundancySet]:
    return _engine(runtime).sets()


def _instances(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    for rs in _sets(runtime):
        yield set_instance(runtime, namespace, rs)


def _peer_instance(runtime: CimRuntime, namespace: str, peer: PeerSystem) -> CIMInstance:
    vm = peer.vm_id is not None
    return make_instance(runtime.schema, namespace, naming.COMPUTER_SYSTEM, {
        "CreationClassName": naming.COMPUTER_SYSTEM,
        "Name": peer.name,
        "ElementName": peer.element_name,
        "Caption": "Virtual Machine" if vm else "Hosting Computer System",
        "Description": f"Virtual machine on {peer.host}" if vm else "Host that replicates with this host",
        "EnabledState": EnabledState.UNKNOWN,  # not known here: it runs on another host
        "HealthState": 0,
    })


def _peers(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    engine = _engine(runtime)
    local = {runtime.host.name.upper(), *(vm.vm_id.upper() for vm in runtime.engine.inventory.vms())}
    for peer in engine.peer_systems():
        if peer.name.upper() not in local:
            yield _peer_instance(runtime, namespace, peer)


def indication_instance(runtime: CimRuntime, namespace: str, item: FailoverIndication) -> CIMInstance:
    """A kept failover as an Msvm_FailoverIndication (element paths as CIM object paths, format 2)."""
    def path(name: str) -> str:
        return str(naming.system_path(namespace, name))

    return make_instance(runtime.schema, namespace, INDICATION, {
        "IndicationIdentifier": f"{_INSTANCE_PREFIX}{item.indication_id}",
        "IndicationTime": item.created_at,
        "HostedElement": path(item.hosted_element),
        "HostedElementFormat": 2,
        "HostingSystem": path(item.hosting_system),
        "HostingSystemFormat": 2,
        "PreviousHostingSystem": path(item.previous_hosting_system),
        "PreviousHostingSystemFormat": 2,
        "FailoverType": item.failover_type,
        "OtherFailoverType": item.other_type or None,
        "PerceivedSeverity": item.severity,
    })


def _indications(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    for item in runtime.engine.inventory.failover_indications():
        yield indication_instance(runtime, namespace, item)


def failover(call: MethodCall) -> MethodResult:
    """Failover(FailoverFrom, FailoverTo): seed 000's codes."""
    set_id = str(naming.key(call.target_instance, "InstanceID") or "").removeprefix(_INSTANCE_PREFIX)
    source = naming.key(call.referenced("FailoverFrom"), "Name")
    target = naming.key(call.referenced("FailoverTo"), "Name")
    code = _engine(call.runtime).failover_now(set_id, None if source is None else str(source),
                               None if target is None else str(target))
    return MethodResult(int(code))


def install(registry: ProviderRegistry, runtime: CimRuntime) -> None:
    """Register Msvm_RedundancySet with Failover, the peer members and Msvm_FailoverIndication."""
    registry.add_provider(FunctionProvider(
        REDUNDANCY_SET, naming.CLUSTER_ONLY, lambda ns, ctx: _instances(runtime, ns, ctx)))
    registry.add_provider(FunctionProvider(
        naming.COMPUTER_SYSTEM, naming.CLUSTER_ONLY, lambda ns, ctx: _peers(runtime, ns, ctx)))
    registry.add_provider(FunctionProvider(
        INDICATION, naming.CLUSTER_ONLY, lambda ns, ctx: _indications(runtime, ns, ctx)))
    registry.add_method(REDUNDANCY_SET, "Failover", failover)
