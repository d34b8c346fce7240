"""``/api/v1/replica-server``: this host as a replica server — Get/Set-VMReplicationServer and the
authorization entries (Get/New/Set/Remove-VMReplicationAuthorizationEntry), the same engine entries as the
CIM methods ModifyServiceSettings and Add/Modify/RemoveAuthorizationEntry (docs/hyperv-api.md §5.2, §5.3).

Authentication is named (``kerberos``, ``certificate``, ``both``); the number Hyper-V uses is in
``authentication_type``. An entry given no ``trust_group`` shares it with no other host (docs/security.md).
"""

from __future__ import annotations

from datetime import time
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import Response

from standby.api.deps import ServicesDep
from standby.domain.entities import AuthorizationEntry, ServiceSettings
from standby.domain.enums import AllowedAuthenticationType
from standby.domain.settings import AuthorizationEntryChange, ServiceSettingsChange

PREFIX = "/api/v1/replica-server"
router = APIRouter(prefix=PREFIX, tags=["replica server"])

Authentication = Literal["kerberos", "certificate", "both"]
_AUTHENTICATION: dict[str, AllowedAuthenticationType] = {
    "kerberos": AllowedAuthenticationType.KERBEROS,
    "certificate": AllowedAuthenticationType.CERTIFICATE,
    "both": AllowedAuthenticationType.CERTIFICATE_AND_KERBEROS,
}
_NAMES = {value: name for name, value in _AUTHENTICATION.items()}


class ServerBody(BaseModel):
    """``PUT /api/v1/replica-server``: what to change; what is left out stays."""

    enabled: bool | None = Field(default=None,
                                 description="RecoveryServerEnabled: accept inbound replication")
    authentication: Authentication | None = Field(default=None, description="AllowedAuthenticationType")
    http_port: int | None = Field(default=None, description="HttpPort (Kerberos)")
    https_port: int | None = Field(default=None, description="HttpsPort (certificate)")
    certificate_thumbprint: str | None = Field(default=None, max_length=64)
    monitoring_interval_seconds: int | None = None
    monitoring_start_time: time | None = Field(default=None, description="UTC time of day")


class EntryBody(BaseModel):
    """``POST /api/v1/replica-server/authorization``."""

    host: str = Field(min_length=1, max_length=255, description="AllowedPrimaryHostSystem (may use *)")
    storage: str = Field(min_length=1, max_length=4096, description="ReplicaStorageLocation")
    trust_group: str = Field(default="", max_length=255, description="TrustGroup; empty: shared with none")


class EntryChangeBody(BaseModel):
    """``PUT /api/v1/replica-server/authorization/{host}``: what to change; what is left out stays."""

    storage: str | None = Field(default=None, min_length=1, max_length=4096)
    trust_group: str | None = Field(default=None, max_length=255)


def _server(settings: ServiceSettings, entries: list[AuthorizationEntry]) -> dict[str, Any]:
    kind = settings.allowed_authentication_type
    return {
        "enabled": settings.recovery_server_enabled,
        "authentication": _NAMES.get(kind, "none"),
        "authentication_type": int(kind),
        "http_port": settings.http_port,
        "https_port": settings.https_port,
        "certificate_thumbprint": settings.certificate_thumbprint,
        "monitoring_interval_seconds": settings.monitoring_interval_seconds,
        "monitoring_start_time": settings.monitoring_start_time.isoformat(),
        "authorization": [_entry(entry) for entry in entries],
    }


def _entry(entry: AuthorizationEntry) -> dict[str, str]:
    return {"host": entry.allowed_primary_host, "storage": entry.storage_location,
            "trust_group": entry.trust_group}


@router.get("", summary="Get-VMReplicationServer")
def show(services: ServicesDep) -> dict[str, Any]:
    """The replica-server settings and the authorization entries."""
    replication = services.engine.replication
    return _server(replication.service_settings(), replication.authorization_entries())


@router.put("", summary="Set-VMReplicationServer (ModifyServiceSettings)")
def change(body: ServerBody, services: ServicesDep) -> dict[str, Any]:
    """Change the settings given; the answer is the whole replica server afterwards."""
    replication = services.engine.replication
    kind = None if body.authentication is None else _AUTHENTICATION[body.authentication]
    replication.change_service_settings(ServiceSettingsChange(
        recovery_server_enabled=body.enabled, allowed_authentication_type=kind, http_port=body.http_port,
        https_port=body.https_port, certificate_thumbprint=body.certificate_thumbprint,
        monitoring_interval_seconds=body.monitoring_interval_seconds,
        monitoring_start_time=body.monitoring_start_time))
    return _server(replication.service_settings(), replication.authorization_entries())


@router.get("/authorization", summary="Get-VMReplicationAuthorizationEntry")
def entries(services: ServicesDep) -> list[dict[str, str]]:
    """Every authorization entry."""
    return [_entry(entry) for entry in services.engine.replication.authorization_entries()]


@router.post("/authorization", status_code=201,
             summary="New-VMReplicationAuthorizationEntry (AddAuthorizationEntry)")
def add(body: EntryBody, services: ServicesDep) -> dict[str, str]:
    """Admit a primary host (pattern) into a storage location; 400 (32773) when an entry for it exists."""
    entry = AuthorizationEntry(body.host, body.trust_group, body.storage)
    return _entry(services.engine.replication.add_authorization_entry(entry))


@router.put("/authorization/{host}", summary="Set-VMReplicationAuthorizationEntry (ModifyAuthorizationEntry)")
def change_entry(host: str, body: EntryChangeBody, services: ServicesDep) -> dict[str, str]:
    """Change an entry's storage location or trust group; 404 when there is no entry for ``host``."""
    change = AuthorizationEntryChange(storage_location=body.storage, trust_group=body.trust_group)
    return _entry(services.engine.replication.change_authorization_entry(host, change))


@router.delete("/authorization/{host}", status_code=204,
               summary="Remove-VMReplicationAuthorizationEntry (RemoveAuthorizationEntry)")
def remove(host: str, services: ServicesDep) -> Response:
    """Remove the entry of ``host``; 404 when there is none."""
    services.engine.replication.remove_authorization_entry(host)
    return Response(status_code=204)
