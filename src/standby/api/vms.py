"""``/api/v1/vms``: define, import, list, show, delete VMs and change their power state.

State changes (start, stop, shutdown, kill, pause, resume, reset) run as jobs like the CIM
``RequestStateChange``: 202 with the job and its URL. Definitions and deletions are immediate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from standby.api.deps import LanguageDep, ServicesDep
from standby.api.jobs import respond
from standby.domain.entities import VirtualMachine
from standby.domain.enums import RequestedVmState
from standby.domain.errors import NotSupported
from standby.engine.systems import VirtualSystems
from standby.engine.vms import DiskRequest, VmRequest, parse_memory_mib, parse_size

if TYPE_CHECKING:
    from standby.api.deps import Services

router = APIRouter(prefix="/api/v1/vms", tags=["vms"])

#: Actions and the RequestStateChange value each one is.
ACTIONS: dict[str, int] = {
    "start": int(RequestedVmState.ENABLED),
    "resume": int(RequestedVmState.ENABLED),
    "stop": int(RequestedVmState.DISABLED),
    "kill": int(RequestedVmState.DISABLED),
    "shutdown": int(RequestedVmState.SHUT_DOWN),
    "pause": int(RequestedVmState.QUIESCE),
    "reset": int(RequestedVmState.RESET),
}


class DiskBody(BaseModel):
    """A new disk (``size``, e.g. ``4G``) or an existing qcow2 image (``path``)."""

    size: str | None = Field(default=None, max_length=32, examples=["4G"])
    path: str | None = Field(default=None, max_length=4096)


class VmBody(BaseModel):
    """A VM definition."""

    # Bounded here only against huge bodies: the name rule (domain.vm_names) is the engine's, so that CIM
    # and REST refuse the same names with the same answer.
    name: str = Field(max_length=1024)
    memory: str = Field(default="256M", max_length=32, description="e.g. 256M, 1G (a bare number is MiB)")
    cpus: int = Field(default=1, ge=1, le=64)
    disks: list[DiskBody] = Field(default_factory=list, max_length=16)
    networks: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="user, none, bridge:<name> or isolated:<name>, one per NIC",
    )
    kernel: str | None = Field(default=None, max_length=4096)
    initrd: str | None = Field(default=None, max_length=4096)
    append: str | None = Field(default=None, max_length=4096)


def vm_json(vm: VirtualMachine) -> dict[str, Any]:
    """A VM as JSON."""
    return {
        "id": vm.vm_id,
        "name": vm.name,
        "memory_mib": vm.memory_mib,
        "cpus": vm.cpus,
        "enabled_state": int(vm.enabled_state),
        "state_name": vm.enabled_state.name.title().replace("_", ""),
        "replication_mode": int(vm.replication_mode),
        "disks": [{"id": d.disk_id, "path": d.path, "size_bytes": d.size_bytes} for d in vm.disks],
        "nics": [{"id": n.nic_id, "mac": n.mac, "network": n.network} for n in vm.nics],
        "kernel": vm.kernel,
        "initrd": vm.initrd,
        "append": vm.append,
        "created_at": vm.created_at.isoformat() if vm.created_at else None,
    }


def _vms(services: Services) -> VirtualSystems:
    return services.engine.systems


@router.get("", summary="List VMs")
def list_vms(services: ServicesDep) -> list[dict[str, Any]]:
    """Every VM, by name."""
    return [vm_json(vm) for vm in _vms(services).list()]


@router.post("", status_code=201, summary="Define a VM (DefineSystem)")
def define_vm(body: VmBody, services: ServicesDep) -> JSONResponse:
    """Create the VM's new disks and store it; 201 with the VM."""
    disks = tuple(
        DiskRequest(path=d.path)
        if d.path
        else DiskRequest(size_bytes=parse_size(d.size or "", what="disk size"))
        for d in body.disks
    )
    request = VmRequest(
        name=body.name,
        memory_mib=parse_memory_mib(body.memory),
        cpus=body.cpus,
        disks=disks,
        networks=tuple(body.networks),
        kernel=body.kernel,
        initrd=body.initrd,
        append=body.append,
    )
    vm = _vms(services).define(request)
    return JSONResponse(vm_json(vm), status_code=201, headers={"location": f"/api/v1/vms/{vm.vm_id}"})


@router.get("/{ref}", summary="Show a VM")
def show_vm(ref: str, services: ServicesDep) -> dict[str, Any]:
    """One VM by GUID or name."""
    return vm_json(_vms(services).get(ref))


@router.get("/{ref}/events", summary="The VM's event log")
def vm_events(
    ref: str, services: ServicesDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[Any]:
    """Starts, stops, crashes … of the VM, oldest first (``message_id`` + ``args`` for the catalog)."""
    return [
        {"time": e.time.isoformat(), "kind": e.kind, "message_id": e.message_id, "args": dict(e.args)}
        for e in _vms(services).events(ref, limit=limit)
    ]


@router.delete("/{ref}", summary="Delete a stopped VM (DestroySystem)")
def delete_vm(ref: str, services: ServicesDep, language: LanguageDep) -> JSONResponse:
    """Remove the VM and the disks standby created for it (200 with the VM). A test VM ends its test
    failover as DestroySystem does: powered off, overlays deleted, the hold released (202 with job 103)."""
    vm = _vms(services).get(ref)
    outcome = _vms(services).destroy(vm.vm_id)
    if outcome.job is None:
        return respond(services, outcome, language, vm_json(vm))
    return respond(services, outcome, language, vm=vm_json(vm))


@router.post("/{ref}/{action}", status_code=202, summary="Change the power state (RequestStateChange)")
def change_state(
    ref: str,
    action: str,
    services: ServicesDep,
    language: LanguageDep,
    timeout: Annotated[float, Query(ge=1, le=3600, description="shutdown: seconds before a hard stop")] = 60,
) -> JSONResponse:
    """start, stop (hard), kill, shutdown (graceful), pause, resume, reset: 202 with the job."""
    if action not in ACTIONS:
        raise NotSupported(
            f"unknown action {action!r}: one of {', '.join(ACTIONS)}", message_id="BadVmAction"
        )
    systems = _vms(services)
    if action == "kill":
        return respond(services, systems.kill(ref), language)
    return respond(services, systems.request_state_change(ref, ACTIONS[action], timeout=timeout), language)
