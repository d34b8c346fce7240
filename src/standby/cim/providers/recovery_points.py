"""Recovery points as Msvm_VirtualSystemSettingData snapshots (hyperv-api §5.9), in root/virtualization/v2.

Each stored recovery point is one VSSD whose VirtualSystemType is its kind (``…Snapshot:Replica:*``) and
whose InstanceID is ``Microsoft:<point id>``; ``Parent`` names the VM it belongs to. The live settings of
each VM (``…System:Realized``) are yielded by the VM providers (``vm_*.py``) for the same class.
"""

from __future__ import annotations

from collections.abc import Iterable

from pywbem import CIMInstance

from standby.cim import naming
from standby.cim.backend import RequestContext
from standby.cim.instances import make_instance
from standby.cim.providers._base import FunctionProvider
from standby.cim.providers.registry import ProviderRegistry
from standby.cim.runtime import CimRuntime
from standby.domain.entities import RecoveryPoint


def point_instance(runtime: CimRuntime, namespace: str, point: RecoveryPoint, vm_name: str) -> CIMInstance:
    """A recovery point as a snapshot VSSD."""
    return make_instance(runtime.schema, namespace, naming.VSSD, {
        "InstanceID": point.instance_id,
        "Caption": "Recovery Point",
        "ElementName": f"{vm_name} - {point.created_at:%Y-%m-%d %H:%M:%S}",
        "VirtualSystemIdentifier": point.vm_id,
        "VirtualSystemType": point.kind.value,
        "CreationTime": point.created_at,
        "Parent": point.vm_id,
        "Notes": [f"sequence {point.sequence}"],
    })


def _instances(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    names = {vm.vm_id: vm.name for vm in runtime.engine.inventory.vms()}
    for point in runtime.engine.inventory.recovery_points():
        yield point_instance(runtime, namespace, point, names.get(point.vm_id, point.vm_id))


def install(registry: ProviderRegistry, runtime: CimRuntime) -> None:
    """Register the recovery-point snapshots."""
    registry.add_provider(FunctionProvider(
        naming.VSSD, naming.VIRTUALIZATION_ONLY, lambda ns, ctx: _instances(runtime, ns, ctx)))
