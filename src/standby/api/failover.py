"""``/api/v1/vms/{ref}/failover…`` and ``/api/v1/vms/{ref}/points``: failover of replica VMs in REST form.

- ``POST /api/v1/vms/{ref}/failover`` ``{point, test, force}``: InitiateFailover (``test``: TestReplicaSystem;
  ``force``: skip asking the primary host whether the VM still runs) → 202 with the job;
- ``POST …/failover/complete``: CommitFailover → 202;
- ``POST …/failover/stop``: Stop-VMFailover: a test VM (named, or the replica's when it is not failed over)
  is removed, else the failover is reverted → 202; ``POST …/failover/revert``: RevertFailover → 202;
- ``GET/PUT …/failover/network``: the failover IP settings of the VM's NICs;
- ``GET /api/v1/vms/{ref}/points``: the recovery points, oldest first.
``ref`` is a VM GUID or its unique name. Registered before ``standby.api.vms`` in ``api/app.py`` so its
``POST /{ref}/{action}`` does not catch ``…/failover``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from standby.api.deps import LanguageDep, ServicesDep
from standby.api.jobs import respond
from standby.domain.entities import RecoveryPoint, VirtualMachine
from standby.domain.enums import ProtocolIFType
from standby.domain.errors import InvalidParameter
from standby.domain.failover import FailoverNetworkSettings

if TYPE_CHECKING:
    from standby.api.deps import Services

router = APIRouter(prefix="/api/v1/vms", tags=["failover"])


class FailoverBody(BaseModel):
    """Start-VMFailover: a recovery point (None = the latest), ``test`` for a test VM, ``force``."""

    point: str | None = Field(default=None, max_length=200, description="recovery point id, else latest")
    test: bool = Field(default=False, description="create a test VM instead (TestReplicaSystem)")
    force: bool = Field(default=False, description="do not ask the primary host whether the VM still runs")


class NetworkBody(BaseModel):
    """Msvm_FailoverNetworkAdapterSettingData of one NIC (``nic`` omitted: the NIC at this position)."""

    nic: str | None = Field(default=None, max_length=32)
    protocol: int = Field(default=int(ProtocolIFType.IPV4_IPV6),
                          description="4096 IPv4, 4097 IPv6, 4098 both")
    dhcp: bool = False
    addresses: list[str] = Field(default_factory=list, max_length=32,
                                 description="192.0.2.10/24 or 2001:db8::10/64")
    gateways: list[str] = Field(default_factory=list, max_length=5)
    dns: list[str] = Field(default_factory=list, max_length=16)


def _vm(services: Services, ref: str) -> VirtualMachine:
    return services.engine.systems.get(ref)


def point_json(point: RecoveryPoint, held: bool) -> dict[str, Any]:
    """A recovery point as JSON."""
    return {
        "id": point.point_id,
        "sequence": point.sequence,
        "created_at": point.created_at.isoformat(),
        "type": point.kind.value,
        "kind": point.kind.value.rsplit(":", 1)[-1],
        "images": [{"disk": disk, "path": path} for disk, path in point.images],
        "held": held,
    }


@router.post("/{ref}/failover", status_code=202, summary="InitiateFailover / TestReplicaSystem (async)")
def start_failover(
    ref: str, body: FailoverBody, services: ServicesDep, language: LanguageDep
) -> JSONResponse:
    """Fail the replica VM over to a recovery point, or make a test VM of it; 202 with the job."""
    vm, replication = _vm(services, ref), services.engine.replication
    if body.test:
        if body.force:
            raise InvalidParameter("force applies to a failover, not to a test VM",
                                   message_id="BadFailoverFlags")
        outcome = replication.test_replica_system(vm.vm_id, body.point)
        return respond(services, outcome, language, test_vm_id=outcome.resulting_system)
    return respond(services, replication.initiate_failover(vm.vm_id, body.point, force=body.force), language)


@router.post("/{ref}/failover/complete", status_code=202, summary="CommitFailover (async)")
def complete_failover(ref: str, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Make the failover permanent; 202 with the job."""
    vm = _vm(services, ref)
    return respond(services, services.engine.replication.commit_failover(vm.vm_id), language)


@router.post("/{ref}/failover/stop", status_code=202, summary="Stop-VMFailover: remove a test VM or revert")
def stop_failover(ref: str, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """A test VM (or the replica's, when the replica is not failed over) is removed; else revert."""
    vm = _vm(services, ref)
    return respond(services, services.engine.replication.stop_failover(vm.vm_id), language)


@router.post("/{ref}/failover/revert", status_code=202, summary="RevertFailover (async)")
def revert_failover(ref: str, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Undo the failover (or a prepared planned failover on a primary); 202 with the job."""
    vm = _vm(services, ref)
    return respond(services, services.engine.replication.revert_failover(vm.vm_id), language)


@router.get("/{ref}/points", summary="Recovery points of a replica VM")
def list_points(ref: str, services: ServicesDep) -> list[dict[str, Any]]:
    """The VM's recovery points, oldest first (``held``: a failover or test disk stands on it)."""
    vm = _vm(services, ref)
    return [point_json(p, held) for p, held in services.engine.replication.points(vm.vm_id)]


def network_json(item: FailoverNetworkSettings) -> dict[str, Any]:
    """One NIC's failover IP settings as JSON."""
    return {"nic": item.nic_id, "protocol": int(item.protocol), "dhcp": item.dhcp_enabled,
            "addresses": list(item.addresses_with_prefix()), "gateways": list(item.default_gateways),
            "dns": list(item.dns_servers)}


@router.get("/{ref}/failover/network", summary="Failover IP settings of the VM's NICs")
def get_network(ref: str, services: ServicesDep) -> list[dict[str, Any]]:
    """What each NIC gets after a failover (NICs without settings are left out)."""
    vm = _vm(services, ref)
    return [network_json(item) for item in services.engine.replication.failover_network_settings(vm.vm_id)]


@router.put("/{ref}/failover/network", summary="SetFailoverNetworkAdapterSettings")
def put_network(ref: str, body: list[NetworkBody], services: ServicesDep) -> list[dict[str, Any]]:
    """Store failover IP settings for the NICs named (or by position); others keep theirs."""
    vm = _vm(services, ref)
    items = [_settings(vm, entry) for entry in body]
    stored = services.engine.replication.set_failover_network_settings(vm.vm_id, items)
    return [network_json(item) for item in stored]


def _settings(vm: VirtualMachine, entry: NetworkBody) -> FailoverNetworkSettings:
    try:
        protocol = ProtocolIFType(entry.protocol)
    except ValueError:
        raise InvalidParameter(f"protocol {entry.protocol} is not 0, 1, 4096, 4097 or 4098",
                               message_id="FailoverNetworkInvalid", nic=entry.nic or "?",
                               detail="unknown protocol") from None
    addresses, subnets = [], []
    for text in entry.addresses:
        address, _, prefix = text.partition("/")
        if not prefix:
            raise InvalidParameter(f"address {text!r} needs a prefix length, e.g. 192.0.2.10/24",
                                   message_id="FailoverNetworkInvalid", nic=entry.nic or "?",
                                   detail=f"{text} has no prefix length")
        addresses.append(address)
        subnets.append(prefix)
    return FailoverNetworkSettings(vm.vm_id, entry.nic or "", protocol, entry.dhcp, tuple(addresses),
                                   tuple(subnets), tuple(entry.gateways), tuple(entry.dns))
