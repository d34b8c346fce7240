"""Validation of replication and service settings and of a few method parameters (hyperv-api §5.1, §5.2,
§8.2).

Every failure raises ``InvalidParameter`` (32773) with message id ``InvalidSettingValue`` and the args
``property`` (the entity field), ``label`` (English words), ``value`` and ``allowed``, so each surface can
name the property its own way. Hyper-V's ranges are accepted everywhere; standby's extensions (intervals of
1-29 s, recovery history up to 720 hours) are accepted unless ``hyperv_only`` is set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, time, timedelta
from typing import TypeGuard

from standby.domain.entities import AuthorizationEntry, ReplicationSettings, ServiceSettings
from standby.domain.enums import (
    HYPERV_MAX_COLLECTION_RECOVERY_HISTORY,
    HYPERV_MAX_RECOVERY_HISTORY,
    HYPERV_REPLICATION_INTERVALS,
    STANDBY_MAX_RECOVERY_HISTORY,
    AllowedAuthenticationType,
    AuthenticationType,
    InitialReplicationType,
)
from standby.domain.errors import InvalidParameter

#: Our extension below Hyper-V's 30 s: 1..29 s (not 31..299 or 301..899).
EXTENSION_INTERVALS = range(1, 30)
#: Extended replication allows only these intervals, and never faster than the primary relationship.
EXTENDED_INTERVALS = (300, 900)
MAX_APP_CONSISTENT_INTERVAL_HOURS = 12
#: MonitoringInterval limits of Msvm_ReplicationServiceSettingData (1 hour .. 7 days).
MIN_MONITORING_INTERVAL = 3600
MAX_MONITORING_INTERVAL = 604800
#: StartReplication / Resynchronize may be scheduled at most this far ahead (PS).
MAX_START_DELAY = timedelta(days=7)
MAX_NAME_LENGTH = 256
_THUMBPRINT = re.compile(r"(?:[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})")

MESSAGE_IDS: tuple[str, ...] = ("InvalidSettingValue",)


def _fail(prop: str, label: str, value: object, allowed: str) -> InvalidParameter:
    return InvalidParameter(
        f"Invalid {label} ({prop}) {value!r}: {allowed}.",
        message_id="InvalidSettingValue",
        property=prop,
        label=label,
        value=value,
        allowed=allowed,
    )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _require_range(prop: str, label: str, value: object, low: int, high: int, *, unit: str = "") -> None:
    if not _is_int(value) or not low <= value <= high:
        raise _fail(prop, label, value, f"allowed is {low}-{high}{unit}")


def is_valid_interval(seconds: int, *, hyperv_only: bool = False) -> bool:
    """Whether ``seconds`` is a ReplicationInterval standby accepts (30/300/900, or 1-29 as extension)."""
    if not _is_int(seconds):
        return False
    return seconds in HYPERV_REPLICATION_INTERVALS or (not hyperv_only and seconds in EXTENSION_INTERVALS)


def validate_replication_settings(
    settings: ReplicationSettings, *, collection: bool = False, hyperv_only: bool = False
) -> None:
    """Check every property of a (collection) replication setting; raise on the first bad one."""
    _validate_interval(settings.interval_seconds, hyperv_only)
    _validate_history(settings, collection, hyperv_only)
    _require_range("recovery_port", "recovery server port", settings.recovery_port, 1, 65535)
    if not _is_int(settings.authentication_type) or settings.authentication_type not in set(
        AuthenticationType
    ):
        raise _fail(
            "authentication_type", "authentication type", settings.authentication_type, "allowed is 1 or 2"
        )
    _validate_thumbprint("certificate_thumbprint", settings.certificate_thumbprint)
    _validate_host("recovery_connection_point", "recovery server", settings.recovery_connection_point, True)
    _validate_host("primary_connection_point", "primary server", settings.primary_connection_point, False)
    _validate_disks(settings.included_disks)
    _validate_auto_resync(settings)
    _validate_bandwidth(settings.bandwidth_schedule)


def _validate_interval(seconds: int, hyperv_only: bool) -> None:
    if is_valid_interval(seconds, hyperv_only=hyperv_only):
        return
    allowed = "allowed are 30, 300 or 900 seconds"
    if not hyperv_only:
        allowed += " (Hyper-V), or 1-29 seconds (standby extension)"
    raise _fail("interval_seconds", "replication interval", seconds, allowed)


def _validate_history(settings: ReplicationSettings, collection: bool, hyperv_only: bool) -> None:
    hyperv_max = HYPERV_MAX_COLLECTION_RECOVERY_HISTORY if collection else HYPERV_MAX_RECOVERY_HISTORY
    history = settings.recovery_history
    ceiling = hyperv_max if hyperv_only else STANDBY_MAX_RECOVERY_HISTORY
    if not _is_int(history) or not 0 <= history <= ceiling:
        allowed = f"allowed is 0-{hyperv_max} hours"
        if not hyperv_only:
            allowed += f" (Hyper-V), or up to {STANDBY_MAX_RECOVERY_HISTORY} (standby extension)"
        raise _fail("recovery_history", "recovery history", history, allowed)
    app = settings.app_consistent_interval_hours
    _require_range(
        "app_consistent_interval_hours",
        "application-consistent snapshot interval",
        app,
        0,
        MAX_APP_CONSISTENT_INTERVAL_HOURS,
        unit=" hours",
    )
    if app > history:
        raise _fail(
            "app_consistent_interval_hours",
            "application-consistent snapshot interval",
            app,
            f"it must not exceed the recovery history ({history} hours); 0 turns it off",
        )


def _validate_thumbprint(prop: str, value: str) -> None:
    # Windows shows thumbprints with spaces; both spellings are accepted.
    if value and not _THUMBPRINT.fullmatch(value.replace(" ", "")):
        raise _fail(prop, "certificate thumbprint", value, "expected 40 (SHA-1) or 64 (SHA-256) hex digits")


def _validate_host(prop: str, label: str, value: str, required: bool) -> None:
    if not value:
        if required:
            raise _fail(prop, label, value, "a host or broker name is required")
        return
    if len(value) > MAX_NAME_LENGTH or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise _fail(prop, label, value, f"a host name of at most {MAX_NAME_LENGTH} characters without spaces")


def _validate_disks(disks: tuple[str, ...]) -> None:
    if any(not disk for disk in disks):
        raise _fail("included_disks", "included disks", disks, "disk ids must not be empty")
    if len(set(disks)) != len(disks):
        raise _fail("included_disks", "included disks", disks, "each disk may be listed once")


def _is_local_time(value: object) -> bool:
    return isinstance(value, time) and value.tzinfo is None


def _validate_auto_resync(settings: ReplicationSettings) -> None:
    for prop, value in (
        ("auto_resynchronize_start", settings.auto_resynchronize_start),
        ("auto_resynchronize_end", settings.auto_resynchronize_end),
    ):
        if not _is_local_time(value):
            raise _fail(prop, "automatic resynchronization window", value, "a local time of day without zone")
    if (
        settings.auto_resynchronize_enabled
        and settings.auto_resynchronize_start == settings.auto_resynchronize_end
    ):
        raise _fail(
            "auto_resynchronize_end",
            "automatic resynchronization window",
            settings.auto_resynchronize_end,
            "start and end must differ (00:00-23:59 means any time)",
        )


def _validate_bandwidth(schedule: tuple[tuple[time, time, int], ...]) -> None:
    for start, end, rate in schedule:
        if not (_is_local_time(start) and _is_local_time(end)) or start == end:
            raise _fail("bandwidth_schedule", "bandwidth window", (start, end), "two different local times")
        if not _is_int(rate) or rate < 1:
            raise _fail("bandwidth_schedule", "bandwidth limit", rate, "at least 1 byte per second")


def validate_extended_settings(
    settings: ReplicationSettings,
    *,
    primary_interval_seconds: int,
    current_included_disks: tuple[str, ...] | None = None,
) -> None:
    """Extended replication's extra limits (hyperv-api §9.8) on top of ``validate_replication_settings``.

    Interval 300 or 900 and not faster than the primary relationship's; no application-consistent points;
    on modification (``current_included_disks`` given) the included disks cannot change.
    """
    validate_replication_settings(settings)
    interval = settings.interval_seconds
    if interval not in EXTENDED_INTERVALS or interval < primary_interval_seconds:
        raise _fail(
            "interval_seconds",
            "extended replication interval",
            interval,
            f"allowed are 300 or 900 seconds, at least the primary's {primary_interval_seconds} seconds",
        )
    if settings.app_consistent_interval_hours != 0:
        raise _fail(
            "app_consistent_interval_hours",
            "application-consistent snapshot interval",
            settings.app_consistent_interval_hours,
            "extended replication takes no application-consistent points; use 0",
        )
    if current_included_disks is not None and set(settings.included_disks) != set(current_included_disks):
        raise _fail(
            "included_disks",
            "included disks",
            settings.included_disks,
            "the disks of an extended relationship cannot change",
        )


def validate_service_settings(settings: ServiceSettings) -> None:
    """Check the replication service (recovery server) settings (hyperv-api §5.2)."""
    _require_range("http_port", "HTTP port", settings.http_port, 1, 65535)
    _require_range("https_port", "HTTPS port", settings.https_port, 1, 65535)
    allowed_type = settings.allowed_authentication_type
    if not _is_int(allowed_type) or allowed_type not in set(AllowedAuthenticationType):
        raise _fail(
            "allowed_authentication_type", "allowed authentication type", allowed_type, "allowed is 0-3"
        )
    if settings.recovery_server_enabled and allowed_type == AllowedAuthenticationType.NOT_DEFINED:
        raise _fail(
            "allowed_authentication_type",
            "allowed authentication type",
            allowed_type,
            "a recovery server needs 1 (Kerberos), 2 (certificate) or 3 (both)",
        )
    both = allowed_type == AllowedAuthenticationType.CERTIFICATE_AND_KERBEROS
    if both and settings.http_port == settings.https_port:
        raise _fail("https_port", "HTTPS port", settings.https_port, "it must differ from the HTTP port")
    _validate_thumbprint("certificate_thumbprint", settings.certificate_thumbprint)
    _require_range(
        "monitoring_interval_seconds",
        "monitoring interval",
        settings.monitoring_interval_seconds,
        MIN_MONITORING_INTERVAL,
        MAX_MONITORING_INTERVAL,
        unit=" seconds (1 hour to 7 days)",
    )
    start = settings.monitoring_start_time
    if not isinstance(start, time) or start.tzinfo not in (None, UTC):
        raise _fail("monitoring_start_time", "monitoring start time", start, "a UTC time of day")


def validate_start_time(start: datetime | None, now: datetime, *, prop: str = "start_time") -> None:
    """A scheduled StartReplication / Resynchronize time: None (now), a past time (now) or ≤ 7 days ahead."""
    if start is None:
        return
    if start.tzinfo is None:
        raise _fail(prop, "start time", start, "a time with a zone (CIM datetimes carry a UTC offset)")
    if start - now > MAX_START_DELAY:
        raise _fail(prop, "start time", start.isoformat(), "at most 7 days ahead")


def validate_initial_replication(kind: int, export_location: str | None) -> InitialReplicationType:
    """StartReplication's type (1 network, 2 export, 3 seeded) and export folder; returns the type.

    An export needs a folder; the other types take none. The start time of an export is ignored, as the
    WMI method documents.
    """
    if not _is_int(kind) or kind not in set(InitialReplicationType):
        raise _fail("initial_replication_type", "initial replication type", kind, "allowed is 1, 2 or 3")
    chosen = InitialReplicationType(kind)
    if chosen == InitialReplicationType.EXPORT and not export_location:
        raise _fail(
            "export_location", "export location", export_location, "an export needs a folder to write to"
        )
    if chosen != InitialReplicationType.EXPORT and export_location:
        raise _fail(
            "export_location",
            "export location",
            export_location,
            "only an export (type 2) takes a folder",
        )
    return chosen


def validate_import_location(path: str | None) -> str:
    """ImportInitialReplica's folder: must be given (hyperv-api §10: path non-null)."""
    if not path or not path.strip():
        raise _fail("import_location", "import location", path, "the folder of the exported copy is required")
    return path


# -- partial changes (Set-VMReplicationServer, Set-VMReplicationAuthorizationEntry) -------------------------


@dataclass(frozen=True, slots=True)
class ServiceSettingsChange:
    """The settings ``Set-VMReplicationServer`` was given; None keeps the current value."""

    recovery_server_enabled: bool | None = None
    allowed_authentication_type: AllowedAuthenticationType | None = None
    http_port: int | None = None
    https_port: int | None = None
    certificate_thumbprint: str | None = None
    monitoring_interval_seconds: int | None = None
    monitoring_start_time: time | None = None

    def applied_to(self, current: ServiceSettings) -> ServiceSettings:
        """``current`` with the given settings changed (validated by ``validate_service_settings``)."""
        given = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        return replace(current, **given)


@dataclass(frozen=True, slots=True)
class AuthorizationEntryChange:
    """What ``Set-VMReplicationAuthorizationEntry`` changes of one entry; None keeps the current value."""

    storage_location: str | None = None
    trust_group: str | None = None

    def applied_to(self, current: AuthorizationEntry) -> AuthorizationEntry:
        """``current`` with the given fields changed."""
        return replace(current,
                       storage_location=current.storage_location if self.storage_location is None
                       else self.storage_location,
                       trust_group=current.trust_group if self.trust_group is None else self.trust_group)
