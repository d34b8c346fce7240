"""Repositories for authorization entries, the service settings singleton and the event log."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from standby.domain.entities import AuthorizationEntry, ServiceSettings
from standby.domain.enums import AllowedAuthenticationType
from standby.store import codec
from standby.store.sqlite.connection import Connection
from standby.store.sqlite.repository import Repository, Row


class AuthEntryRepository(Repository[AuthorizationEntry]):
    """``db.auth_entries``: keyed by ``allowed_primary_host`` (RemoveAuthorizationEntry names it)."""

    kind = "AuthorizationEntry"
    table = "auth_entries"
    key_columns = ("allowed_primary_host",)
    order_by = "allowed_primary_host"

    def _key(self, entity: AuthorizationEntry) -> tuple[object, ...]:
        return (entity.allowed_primary_host,)

    def _to_row(self, entity: AuthorizationEntry) -> dict[str, object]:
        return {
            "allowed_primary_host": entity.allowed_primary_host,
            "trust_group": entity.trust_group,
            "storage_location": entity.storage_location,
        }

    def _from_row(self, row: Row) -> AuthorizationEntry:
        return AuthorizationEntry(
            allowed_primary_host=row["allowed_primary_host"],
            trust_group=row["trust_group"],
            storage_location=row["storage_location"],
        )


class ServiceSettingsRepository:
    """``db.service_settings``: the one ``Msvm_ReplicationServiceSettingData`` of this host."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(self) -> ServiceSettings:
        """The stored settings, or the defaults when none were ever written."""
        rows = self._conn.query("SELECT * FROM service_settings WHERE id = 1")
        if not rows:
            return ServiceSettings()
        row = rows[0]
        return ServiceSettings(
            recovery_server_enabled=bool(row["recovery_server_enabled"]),
            allowed_authentication_type=AllowedAuthenticationType(row["allowed_authentication_type"]),
            certificate_thumbprint=row["certificate_thumbprint"],
            http_port=row["http_port"],
            https_port=row["https_port"],
            monitoring_start_time=codec.time_in(row["monitoring_start_time"]),
            monitoring_interval_seconds=row["monitoring_interval_seconds"],
        )

    def put(self, settings: ServiceSettings) -> ServiceSettings:
        """Replace the settings (insert or overwrite the single row)."""
        self._conn.execute(
            "INSERT OR REPLACE INTO service_settings (id, recovery_server_enabled,"
            " allowed_authentication_type, certificate_thumbprint, http_port, https_port,"
            " monitoring_start_time, monitoring_interval_seconds)"
            " VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
            (
                int(settings.recovery_server_enabled),
                int(settings.allowed_authentication_type),
                settings.certificate_thumbprint,
                settings.http_port,
                settings.https_port,
                codec.time_out(settings.monitoring_start_time),
                settings.monitoring_interval_seconds,
            ),
        )
        return settings


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the event log; ``message_id`` + ``args`` render it through ``standby.i18n``."""

    event_id: int
    time: datetime
    kind: str
    message_id: str
    element_id: str | None = None
    args: Mapping[str, object] = field(default_factory=dict)


class EventRepository:
    """``db.events``: an append-only log of things that happened (e.g. "VM process died")."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def record(
        self,
        time: datetime,
        kind: str,
        message_id: str,
        *,
        element_id: str | None = None,
        args: Mapping[str, object] | None = None,
    ) -> Event:
        """Append one event and return it with its id."""
        stored_args = dict(args or {})
        cursor = self._conn.execute(
            "INSERT INTO events (time, element_id, kind, message_id, args) VALUES (?, ?, ?, ?, ?)",
            (codec.dt_out(time), element_id, kind, message_id, codec.args_out(stored_args)),
        )
        event_id = int(cursor.lastrowid or 0)
        return Event(event_id, time, kind, message_id, element_id, codec.args_in(codec.args_out(stored_args)))

    def list(
        self,
        *,
        element_id: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> builtins.list[Event]:
        """The newest ``limit`` matching events, oldest first."""
        clauses, params = ["1"], builtins.list[object]()
        for column, value in (("element_id", element_id), ("kind", kind)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            clauses.append("time >= ?")
            params.append(codec.dt_out(since))
        rows = self._conn.query(
            f"SELECT * FROM events WHERE {' AND '.join(clauses)} ORDER BY event_id DESC LIMIT ?",
            (*params, max(0, int(limit))),
        )
        return [self._from_row(row) for row in reversed(rows)]

    def purge(self, before: datetime) -> int:
        """Drop events older than ``before``; return how many."""
        cursor = self._conn.execute("DELETE FROM events WHERE time < ?", (codec.dt_out(before),))
        return int(cursor.rowcount)

    @staticmethod
    def _from_row(row: Row) -> Event:
        return Event(
            event_id=row["event_id"],
            time=codec.dt_in_required(row["time"]),
            kind=row["kind"],
            message_id=row["message_id"],
            element_id=row["element_id"],
            args=codec.args_in(row["args"]),
        )
