"""``PeerClient``: the primary's (and failover's) calls to another host's ``/peer/v1``, one method per route.

Mutual TLS with this host's certificate; the server is verified against the site CA and by name. httpx
failures are translated here, once: connection and TLS failures → ``Unavailable``; 403 → ``AccessDenied``;
404 → ``NotFound`` (a bare 404 — a route the peer lacks, an older standby — → ``NotSupported``); 409 →
``OutOfSequence`` (with ``head_sequence``) for logs and heartbeats, else ``InvalidState``; 422 →
``LogCorrupt``; 400 → ``InvalidParameter``; 501 → ``NotSupported``; 503 → ``Unavailable``.

    async with PeerClient("https://hv2.lab:8443", PeerTls(ca, cert, key)) as peer:
        await peer.create_replica(vm, settings, primary_host="hv1.lab")
        ack = await peer.put_log(vm.vm_id, 7, chunks)
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx

from standby.domain.entities import ReplicationSettings, VirtualMachine
from standby.domain.enums import EnabledState, ReplicationState, VirtualSystemType
from standby.domain.errors import (
    AccessDenied,
    InvalidParameter,
    InvalidState,
    NotFound,
    NotSupported,
    StandbyError,
    Unavailable,
)
from standby.domain.replica import OutOfSequence
from standby.peer.tls import PeerTls
from standby.storage.logformat import LogCorrupt
from standby.store import codec

PREFIX = "/peer/v1"
LOG_MEDIA_TYPE = "application/x-standby-log"
DEFAULT_TIMEOUT = 30.0
#: How long the replica may take to answer after the last byte of a log (verify, fsync, merges).
DEFAULT_APPLY_TIMEOUT = 3600.0


@dataclass(frozen=True, slots=True)
class PeerPoint:
    """A recovery point as the replica reports it."""

    point_id: str
    sequence: int
    created_at: datetime
    kind: VirtualSystemType


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """``GET /replicas/{vm_id}`` (``points`` empty in the answer of ``create_replica``)."""

    vm_id: str
    state: ReplicationState
    head_sequence: int
    points: tuple[PeerPoint, ...] = ()


@dataclass(frozen=True, slots=True)
class LogAck:
    """The replica's answer to a log: its head afterwards."""

    head_sequence: int
    point_id: str | None
    applied: bool = True
    kept_aside: bool = False


def replica_request(
    vm: VirtualMachine, settings: ReplicationSettings, *, primary_host: str,
    disks: Sequence[tuple[str, int]] | None = None, extended: bool = False,
) -> dict[str, object]:
    """The body of ``POST /replicas`` for ``vm`` (its disks unless ``disks`` names the included ones)."""
    chosen = disks if disks is not None else [(d.disk_id, d.size_bytes) for d in vm.disks]
    return {
        "vm_id": vm.vm_id, "name": vm.name, "memory_mib": vm.memory_mib, "cpus": vm.cpus,
        "disks": [{"disk_id": disk_id, "size": size} for disk_id, size in chosen],
        "nics": [{"nic_id": nic.nic_id, "mac": nic.mac} for nic in vm.nics],
        "settings": json.loads(codec.settings_out(settings)), "primary_host": primary_host,
        "kernel": vm.kernel, "initrd": vm.initrd, "append": vm.append, "extended": extended,
    }


class PeerClient:
    """One peer (``base_url`` such as ``https://hv2.lab:8443``); reuse it for many calls, ``aclose`` it."""

    def __init__(self, base_url: str, tls: PeerTls | ssl.SSLContext, *, timeout: float = DEFAULT_TIMEOUT,
                 apply_timeout: float = DEFAULT_APPLY_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        context = tls if isinstance(tls, ssl.SSLContext) else tls.client_context()
        self._apply_timeout = apply_timeout
        self._http = httpx.AsyncClient(base_url=self.base_url, verify=context, timeout=timeout,
                                       trust_env=False, headers={"accept": "application/json"},
                                       transport=transport, limits=_LIMITS)

    async def __aenter__(self) -> PeerClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # -- routes -------------------------------------------------------------------------------------------

    async def ping(self) -> dict[str, str]:
        """``GET /ping``: ``{service, host, fqdn, version, thumbprint, caller}``."""
        data = await self._json("GET", "/ping")
        return {str(key): str(value) for key, value in data.items()}

    async def create_replica(
        self, vm: VirtualMachine | Mapping[str, object], settings: ReplicationSettings | None = None, *,
        primary_host: str = "", disks: Sequence[tuple[str, int]] | None = None, extended: bool = False,
    ) -> ReplicaState:
        """``POST /replicas``: the replica VM (same GUID) and its relationship; idempotent.

        Pass the VM, its settings, this host's name and the included disks (default: all), or a ready
        body (``replica_request``).
        """
        request = dict(vm) if isinstance(vm, Mapping) else replica_request(
            vm, settings or ReplicationSettings(), primary_host=primary_host, disks=disks, extended=extended)
        data = await self._json("POST", "/replicas", json=request)
        return _state(data, ())

    async def replica_status(self, vm_id: str) -> ReplicaState:
        """``GET /replicas/{vm_id}``."""
        data = await self._json("GET", f"/replicas/{vm_id}")
        points = tuple(PeerPoint(str(p["point_id"]), int(p["sequence"]),
                                 datetime.fromisoformat(p["created_at"]), VirtualSystemType(p["kind"]))
                       for p in data.get("points", []))
        return _state(data, points)

    async def put_log(self, vm_id: str, sequence: int, chunks: AsyncIterator[bytes]) -> LogAck:
        """``PUT /replicas/{vm_id}/logs/{sequence}`` with the log streamed as the request body."""
        timeout = httpx.Timeout(self._http.timeout.connect, read=self._apply_timeout,
                                write=self._http.timeout.write, pool=self._http.timeout.pool)
        data = await self._json("PUT", f"/replicas/{vm_id}/logs/{sequence}", content=chunks, timeout=timeout,
                                headers={"content-type": LOG_MEDIA_TYPE})
        point = data.get("point_id")
        return LogAck(int(data["head_sequence"]), None if point is None else str(point),
                      bool(data.get("applied", True)), bool(data.get("kept_aside", False)))

    async def heartbeat(self, vm_id: str, sequence: int) -> int:
        """``POST /replicas/{vm_id}/heartbeat``: nothing changed since cut ``sequence`` (the replica's head);
        the head sequence. 409 → ``OutOfSequence`` as for a log."""
        data = await self._json("POST", f"/replicas/{vm_id}/heartbeat", json={"sequence": sequence})
        return int(data["head_sequence"])

    async def hashes(self, vm_id: str, disk_id: str, block_size: int) -> bytes:
        """``POST /replicas/{vm_id}/hashes``: 16 bytes per block of the replica's head."""
        response = await self._send("POST", f"/replicas/{vm_id}/hashes",
                                    json={"disk_id": disk_id, "block_size": block_size})
        if len(response.content) % 16:
            raise Unavailable("the replica's block hashes are truncated", message_id="PeerAnswerMalformed",
                              target=self.base_url)
        return response.content

    async def set_state(self, vm_id: str, requested_state: int) -> ReplicationState:
        """``POST /replicas/{vm_id}/state``: the replica relationship's state afterwards."""
        data = await self._json("POST", f"/replicas/{vm_id}/state", json={"requested_state": requested_state})
        return ReplicationState(int(data["state"]))

    async def remove_replica(self, vm_id: str) -> None:
        """``DELETE /replicas/{vm_id}``: the replica-side relationship goes, the VM stays."""
        await self._send("DELETE", f"/replicas/{vm_id}")

    async def become_replica(self, vm_id: str, body: dict[str, object]) -> dict[str, Any]:
        """``POST /vms/{vm_id}/become-replica``: reverse replication asks the old primary to become this
        host's replica (body: ``engine.reverse.BecomeReplica.to_json``); ``{vm_id, state, head_sequence}``."""
        timeout = httpx.Timeout(self._http.timeout.connect, read=self._apply_timeout,
                                write=self._http.timeout.write, pool=self._http.timeout.pool)
        return await self._json("POST", f"/vms/{vm_id}/become-replica", json=body, timeout=timeout)

    async def set_settings(self, vm_id: str, settings: ReplicationSettings) -> None:
        """``POST /replicas/{vm_id}/settings``: ModifyReplicationSettings mirrored to the replica."""
        await self._json("POST", f"/replicas/{vm_id}/settings",
                         json={"settings": json.loads(codec.settings_out(settings))})

    async def prepare_planned(self, vm_id: str) -> dict[str, Any]:
        """``POST /vms/{vm_id}/planned-failover/prepare``: the primary prepares a planned failover (a
        redundancy-set move driven by the replica host); the prepare job's result."""
        return await self._json("POST", f"/vms/{vm_id}/planned-failover/prepare", json={},
                                timeout=self._long_timeout())

    async def cancel_planned(self, vm_id: str) -> dict[str, Any]:
        """``POST /vms/{vm_id}/planned-failover/cancel``: undo that prepare (RevertFailover on the
        primary)."""
        return await self._json("POST", f"/vms/{vm_id}/planned-failover/cancel", json={})

    async def take_over(self, vm_id: str, body: dict[str, object]) -> dict[str, Any]:
        """``POST /vms/{vm_id}/planned-failover/take-over``: the replica host fails the prepared VM over and
        reverses the relationship (body ``{port}``: the caller's peer port); the combined result."""
        return await self._json("POST", f"/vms/{vm_id}/planned-failover/take-over", json=body,
                                timeout=self._long_timeout())

    def _long_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self._http.timeout.connect, read=self._apply_timeout,
                             write=self._http.timeout.write, pool=self._http.timeout.pool)

    async def vm_running(self, vm_id: str) -> tuple[bool, EnabledState]:
        """``GET /vms/{vm_id}/running`` on the VM's (primary) host."""
        data = await self._json("GET", f"/vms/{vm_id}/running")
        return bool(data["running"]), EnabledState(int(data["enabled_state"]))

    # -- transport ----------------------------------------------------------------------------------------

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._send(method, path, **kwargs)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise Unavailable(f"{self.base_url} answered {method} {path} with no JSON object",
                              message_id="PeerAnswerMalformed", target=self.base_url)
        return data

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, PREFIX + path, **kwargs)
        except httpx.TimeoutException as exc:
            raise Unavailable(f"{self.base_url} did not answer {method} {path} in time "
                              f"({type(exc).__name__})", message_id="PeerTimeout",
                              target=self.base_url) from None
        except (httpx.TransportError, ssl.SSLError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise Unavailable(f"cannot reach {self.base_url}: {reason}", message_id="PeerUnreachable",
                              target=self.base_url, reason=reason) from None
        if response.status_code >= 400:
            raise _error(response, self.base_url)
        return response


#: Idle connections are kept a minute (httpx: 5 s), so a VM cycling every 30 s reuses its mutual-TLS
#: connection instead of a handshake per cycle (~5 ms of CPU on each side); the peer listener keeps them
#: longer (``peer.app.KEEP_ALIVE``), so it is always the client that closes an idle one.
KEEP_ALIVE = 60.0
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEP_ALIVE)

#: Starlette's answer for a path no route matches (our error handler passes it on as the message).
_NO_ROUTE = "Not Found"


def _error(response: httpx.Response, where: str) -> StandbyError:
    try:
        body = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    message = str(body.get("message") or f"{where} answered HTTP {response.status_code}")
    status = response.status_code
    if status == 404 and body.get("message", _NO_ROUTE) == _NO_ROUTE:
        # A missing object is answered with its own message; Starlette's bare "Not Found" (or no JSON at
        # all) is a route this peer lacks.
        route = f"{response.request.method} {response.request.url.path}"
        return NotSupported(f"{where} does not know {route}; it may run an older standby",
                            message_id="PeerRouteMissing", target=where, route=route)
    if status == 409 and "head_sequence" in body:
        return OutOfSequence(int(body["head_sequence"]), str(body.get("reason", message)))
    classes: dict[int, type[StandbyError]] = {
        400: InvalidParameter, 401: AccessDenied, 403: AccessDenied, 404: NotFound, 409: InvalidState,
        422: LogCorrupt, 501: NotSupported, 503: Unavailable,
    }
    # "PeerError" is no catalog id on purpose: the peer's own (already rendered) message is shown.
    cls = classes.get(status, StandbyError)
    return cls(message, message_id="PeerError", target=where, status=str(status))


def _state(data: dict[str, Any], points: tuple[PeerPoint, ...]) -> ReplicaState:
    try:
        return ReplicaState(str(data["vm_id"]), ReplicationState(int(data["state"])),
                            int(data["head_sequence"]), points)
    except (KeyError, ValueError, TypeError) as exc:
        raise Unavailable(f"the replica's answer is malformed: {exc}",
                          message_id="PeerAnswerMalformed") from None
