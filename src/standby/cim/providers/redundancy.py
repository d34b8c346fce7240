"""Msvm_RedundancySet (root/HyperVCluster/v2, spec §8.8): stored redundancy sets and their Failover method.

``Failover`` belongs to the group/redundancy issue; until then it checks its references (the dispatcher
does: 4 Parameter Error for a dangling or wrong-class REF) and answers 1 Not Supported.
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
from standby.domain.enums import FailoverCode

REDUNDANCY_SET = "Msvm_RedundancySet"


def set_instance(runtime: CimRuntime, namespace: str, rs: RedundancySet) -> CIMInstance:
    """A redundancy set as an Msvm_RedundancySet."""
    return make_instance(runtime.schema, namespace, REDUNDANCY_SET, {
        "InstanceID": f"Microsoft:{rs.set_id}",
        "ElementName": rs.name,
        "Caption": "Redundancy Set",
        "RedundancyStatus": rs.status,
        "TypeOfSet": [rs.type_of_set],
        "MinNumberNeeded": 1,
        "MaxNumberSupported": 0,
        "VendorIdentifyingInfo": "standby",
        "LoadBalanceAlgorithm": 2,
    })


def _instances(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    for rs in runtime.db.redundancy_sets.list():
        yield set_instance(runtime, namespace, rs)


def failover(call: MethodCall) -> MethodResult:
    """Failover(FailoverFrom, FailoverTo): not implemented yet (1 Not Supported)."""
    return MethodResult(int(FailoverCode.NOT_SUPPORTED))


def install(registry: ProviderRegistry, runtime: CimRuntime) -> None:
    """Register Msvm_RedundancySet and Failover."""
    registry.add_provider(FunctionProvider(
        REDUNDANCY_SET, naming.CLUSTER_ONLY, lambda ns, ctx: _instances(runtime, ns, ctx)))
    registry.add_method(REDUNDANCY_SET, "Failover", failover)
