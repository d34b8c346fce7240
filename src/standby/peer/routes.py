"""``/peer/v1``: the host-to-host routes of docs/replication.md, served only on the peer listener.

The caller is the identity in its client certificate (``request.state.peer_identity``, set by
``peer.app.PeerGate``); every route's use case checks it against the relationship it touches
(``engine.peer_access.PeerAccess``, the table of ``domain.peer_access``). Errors answer
``{code, name, message}`` with the statuses of docs/ARCHITECTURE.md; an out-of-sequence log answers 409 with
``head_sequence`` and ``reason`` too (so does a heartbeat whose sequence is not the head), a damaged log 422.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response

from standby import __version__
from standby.domain.entities import Host
from standby.domain.errors import InvalidParameter
from standby.domain.peer_access import CallerIdentity, PeerRoute
from standby.engine.connection import SERVICE_NAME
from standby.engine.group_planned import PlannedMove
from standby.engine.replica import ReplicaSpec, ReplicaUseCases, points_json
from standby.engine.reverse import BecomeReplica, ReverseTarget
from standby.store import codec

PREFIX = "/peer/v1"
LOG_MEDIA_TYPE = "application/x-standby-log"
router = APIRouter(prefix=PREFIX, tags=["peer"])


@dataclass(frozen=True, slots=True)
class PeerServices:
    """What the peer routes call: the replica side, the reverse-replication target, the planned moves of
    redundancy sets, and this host (its names answer ``/ping``)."""

    replica: ReplicaUseCases
    reverse_target: ReverseTarget
    planned_move: PlannedMove
    host: Host


def _peer(request: Request) -> PeerServices:
    peer: PeerServices = request.app.state.peer
    return peer


def _replica(request: Request) -> ReplicaUseCases:
    return _peer(request).replica


def _caller(request: Request) -> CallerIdentity:
    identity: CallerIdentity = request.state.peer_identity
    return identity


Replica = Annotated[ReplicaUseCases, Depends(_replica)]
Caller = Annotated[CallerIdentity, Depends(_caller)]


class DiskBody(BaseModel):
    """One disk of the primary VM."""

    disk_id: str = Field(min_length=1, max_length=128)
    size: int = Field(gt=0)


class NicBody(BaseModel):
    """One NIC of the primary VM (the replica's starts disconnected)."""

    nic_id: str = Field(min_length=1, max_length=128)
    mac: str = Field(default="", max_length=32)


class CreateReplicaBody(BaseModel):
    """``POST /replicas``."""

    vm_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=255)
    memory_mib: int = Field(gt=0)
    cpus: int = Field(gt=0)
    disks: list[DiskBody] = Field(min_length=1, max_length=64)
    nics: list[NicBody] = Field(default_factory=list, max_length=64)
    settings: dict[str, Any] = Field(default_factory=dict)
    primary_host: str = ""
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    extended: bool = False


class HashesBody(BaseModel):
    """``POST /replicas/{vm_id}/hashes``."""

    disk_id: str = Field(min_length=1, max_length=128)
    block_size: int = Field(default=64 * 1024, ge=512, le=32 * 1024 * 1024)


class StateBody(BaseModel):
    """``POST /replicas/{vm_id}/state``."""

    requested_state: int = Field(ge=0, le=65535)


@router.get("/ping", summary="Who is there (and may I replicate here)")
def ping(request: Request, replica: Replica, caller: Caller) -> dict[str, str]:
    """Name, version and certificate thumbprint of this host; 403 when the caller is not authorized."""
    replica.authorize(caller, PeerRoute.PING)
    host = _peer(request).host
    return {"service": SERVICE_NAME, "host": host.name, "fqdn": host.fqdn,
            "version": __version__, "thumbprint": request.app.state.thumbprint, "caller": caller.name}


@router.post("/replicas", summary="Create the replica VM and relationship (idempotent)")
def create_replica(body: CreateReplicaBody, replica: Replica, caller: Caller) -> dict[str, object]:
    """The replica VM with the same GUID, mode 2, state 2; its state and head."""
    try:
        settings = codec.settings_in(json.dumps(body.settings))
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidParameter(f"replication settings are malformed: {exc}",
                               message_id="InvalidReplicationSettings") from None
    spec = ReplicaSpec(
        vm_id=body.vm_id, name=body.name, memory_mib=body.memory_mib, cpus=body.cpus,
        disks=tuple((disk.disk_id, disk.size) for disk in body.disks),
        nics=tuple((nic.nic_id, nic.mac) for nic in body.nics), settings=settings,
        kernel=body.kernel, initrd=body.initrd, append=body.append, extended=body.extended,
    )
    status = replica.create_replica(caller, spec)
    return {"vm_id": status.vm_id, "state": int(status.state), "head_sequence": status.head_sequence}


@router.get("/replicas/{vm_id}", summary="Replica state, head and recovery points")
def replica_status(vm_id: str, replica: Replica, caller: Caller) -> dict[str, object]:
    """What the primary needs to resume after a restart."""
    status = replica.status(caller, vm_id)
    return {"vm_id": status.vm_id, "state": int(status.state), "head_sequence": status.head_sequence,
            "points": points_json(status.points)}


@router.put("/replicas/{vm_id}/logs/{sequence}", summary="Apply one replication log (streamed)")
async def put_log(vm_id: str, sequence: int, request: Request, replica: Replica,
                  caller: Caller) -> dict[str, object]:
    """200 with the head after the apply (or the existing head for a repeat); 409 out of sequence."""
    result = await replica.put_log(caller, vm_id, sequence, _body(request))
    return {"head_sequence": result.head_sequence, "point_id": result.point_id, "applied": result.applied,
            "kept_aside": result.kept_aside}


class HeartbeatBody(BaseModel):
    """``POST /replicas/{vm_id}/heartbeat``: the primary's last acknowledged sequence (its cut's)."""

    sequence: int = Field(ge=1)


@router.post("/replicas/{vm_id}/heartbeat", summary="An idle cycle: nothing changed since the head")
async def heartbeat(vm_id: str, body: HeartbeatBody, replica: Replica, caller: Caller) -> dict[str, object]:
    """200 ``{head_sequence}``: the head is current as of now (no new point); 409 with ``head_sequence``
    when ``sequence`` is not the head, as for an out-of-sequence log; 503 when suspended here."""
    head = await replica.heartbeat(caller, vm_id, body.sequence)
    return {"head_sequence": head}


@router.post("/replicas/{vm_id}/hashes", summary="Block hashes of the head")
async def hashes(vm_id: str, body: HashesBody, replica: Replica, caller: Caller) -> Response:
    """One 16-byte xxh3-128 per block (all-zero blocks as 16 zero bytes), as application/octet-stream."""
    data = await replica.hashes(caller, vm_id, body.disk_id, body.block_size)
    return Response(data, media_type="application/octet-stream")


@router.post("/replicas/{vm_id}/state", summary="Mirror a state change")
def set_state(vm_id: str, body: StateBody, replica: Replica, caller: Caller) -> dict[str, int]:
    """Suspend (7), resume (3), cancel IR (1) or resync (9), resynchronizing (10)."""
    return {"state": int(replica.set_state(caller, vm_id, body.requested_state))}


@router.delete("/replicas/{vm_id}", status_code=204, summary="Remove the replica-side relationship")
async def remove_replica(vm_id: str, replica: Replica, caller: Caller) -> Response:
    """The VM stays; 204."""
    await replica.remove(caller, vm_id)
    return Response(status_code=204)


@router.get("/vms/{vm_id}/running", summary="Does this VM run here (split-brain guard)")
def vm_running(vm_id: str, replica: Replica, caller: Caller) -> dict[str, object]:
    """``{running, enabled_state}``."""
    running, state = replica.vm_running(caller, vm_id)
    return {"running": running, "enabled_state": int(state)}


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


def out_of_sequence_response(head_sequence: int, reason: str, body: dict[str, object]) -> JSONResponse:
    """409 with the head and the reason next to the usual error fields."""
    return JSONResponse({**body, "head_sequence": head_sequence, "reason": reason}, status_code=409)


# -- reverse replication ----------------------------------------------------------------------------------


@router.post("/vms/{vm_id}/become-replica", summary="Become the caller's replica (reverse replication)")
async def become_replica(vm_id: str, request: Request, caller: Caller) -> dict[str, object]:
    """The old primary's VM becomes the replica of the failed-over host (``engine.reverse.ReverseTarget``);
    ``{vm_id, state, head_sequence}`` where the head is the new chain's base point."""
    body = await request.json()
    if not isinstance(body, dict):
        raise InvalidParameter("the reverse request must be a JSON object",
                               message_id="InvalidReplicationSettings")
    target = _peer(request).reverse_target
    state, head = await target.become_replica(caller, vm_id, BecomeReplica.from_json(body))
    return {"vm_id": vm_id.strip().upper(), "state": state, "head_sequence": head}


@router.post("/replicas/{vm_id}/settings", summary="Take the primary's new replication settings")
async def replica_settings(vm_id: str, request: Request, caller: Caller) -> dict[str, object]:
    """ModifyReplicationSettings on the primary, mirrored here; the stored settings."""
    body = await request.json()
    try:
        settings = codec.settings_in(json.dumps(body.get("settings") if isinstance(body, dict) else None))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidParameter(f"replication settings are malformed: {exc}",
                               message_id="InvalidReplicationSettings") from None
    vm, stored = _peer(request).reverse_target.update_settings(caller, vm_id, settings)
    return {"vm_id": vm, "settings": json.loads(codec.settings_out(stored))}


# -- redundancy-set planned moves -------------------------------------------------------------------------


def _planned_move(request: Request) -> PlannedMove:
    return _peer(request).planned_move


@router.post("/vms/{vm_id}/planned-failover/prepare", summary="Prepare a planned failover (redundancy set)")
async def planned_prepare(vm_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    """The replica host moves the VM: this primary prepares (job 96, waited for); the job's result."""
    result: dict[str, Any] = await _planned_move(request).prepare_for_peer(caller, vm_id.strip().upper())
    return result


@router.post("/vms/{vm_id}/planned-failover/cancel", summary="Cancel a planned-failover prepare")
async def planned_cancel(vm_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    """Undo the prepare above (unlock, Replicating again); a no-op when nothing is prepared."""
    result: dict[str, Any] = await _planned_move(request).cancel_for_peer(caller, vm_id.strip().upper())
    return result


@router.post("/vms/{vm_id}/planned-failover/take-over", summary="Fail over and reverse (redundancy set)")
async def planned_take_over(vm_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    """The prepared primary moves the VM here: InitiateFailover to the planned point, then reverse replication
    back to the caller (body ``{port}``: the caller's peer port)."""
    body = await request.json()
    port = body.get("port") if isinstance(body, dict) else None
    if port is not None and (not isinstance(port, int) or not 0 <= port <= 65535):
        raise InvalidParameter("port must be a TCP port number", message_id="InvalidReplicationSettings")
    result: dict[str, Any] = await _planned_move(request).take_over_for_peer(caller, vm_id, port=port or None)
    return result
