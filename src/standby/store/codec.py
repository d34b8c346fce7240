"""Conversions between domain values and SQLite columns, used at this edge only.

Times are stored as fixed-width ISO-8601 UTC text (so text order is time order), times of day as
``HH:MM:SS``, durations as seconds, enums as their integer values and small tuples as JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any

from standby.domain.entities import ReplicationSettings
from standby.domain.enums import AuthenticationType
from standby.domain.errors import InvalidParameter


def dt_out(value: datetime | None) -> str | None:
    """An aware datetime as ISO UTC text with microseconds; naive values are a programming error."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidParameter(f"naive datetime {value!r} cannot be stored", message_id="NaiveDatetime")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def dt_in(text: str | None) -> datetime | None:
    """The aware UTC datetime stored by :func:`dt_out`."""
    if text is None:
        return None
    return datetime.fromisoformat(text).astimezone(UTC)


def dt_in_required(text: str) -> datetime:
    """Like :func:`dt_in` for NOT NULL columns."""
    return datetime.fromisoformat(text).astimezone(UTC)


def time_out(value: time) -> str:
    """A time of day as ``HH:MM:SS``."""
    return value.isoformat(timespec="seconds")


def time_in(text: str) -> time:
    """The time of day stored by :func:`time_out`."""
    return time.fromisoformat(text)


def td_out(value: timedelta) -> float:
    """A duration as seconds."""
    return value.total_seconds()


def td_in(seconds: float) -> timedelta:
    """The duration stored by :func:`td_out`."""
    return timedelta(seconds=seconds)


def pairs_out(pairs: Iterable[tuple[str, str]]) -> str:
    """A tuple of string pairs (images, members, job results) as a JSON list of lists."""
    return json.dumps([[a, b] for a, b in pairs])


def pairs_in(text: str) -> tuple[tuple[str, str], ...]:
    """The pairs stored by :func:`pairs_out`."""
    return tuple((str(a), str(b)) for a, b in json.loads(text))


def strings_out(values: Iterable[str]) -> str:
    """A tuple of strings as a JSON list."""
    return json.dumps(list(values))


def strings_in(text: str) -> tuple[str, ...]:
    """The strings stored by :func:`strings_out`."""
    return tuple(str(v) for v in json.loads(text))


def args_out(args: Mapping[str, object]) -> str:
    """Message arguments as a JSON object; values that JSON cannot hold are stored as their text."""
    return json.dumps({str(k): _json_scalar(v) for k, v in args.items()}, sort_keys=True)


def args_in(text: str) -> dict[str, object]:
    """The arguments stored by :func:`args_out`."""
    loaded = json.loads(text)
    return dict(loaded) if isinstance(loaded, dict) else {}


def _json_scalar(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def settings_out(settings: ReplicationSettings) -> str:
    """``ReplicationSettings`` as a JSON object with one key per field."""
    doc: dict[str, Any] = {
        "recovery_connection_point": settings.recovery_connection_point,
        "recovery_port": settings.recovery_port,
        "primary_connection_point": settings.primary_connection_point,
        "authentication_type": int(settings.authentication_type),
        "certificate_thumbprint": settings.certificate_thumbprint,
        "compression_enabled": settings.compression_enabled,
        "bypass_proxy_server": settings.bypass_proxy_server,
        "replicate_host_kvp_items": settings.replicate_host_kvp_items,
        "interval_seconds": settings.interval_seconds,
        "recovery_history": settings.recovery_history,
        "app_consistent_interval_hours": settings.app_consistent_interval_hours,
        "included_disks": list(settings.included_disks),
        "auto_resynchronize_enabled": settings.auto_resynchronize_enabled,
        "auto_resynchronize_start": time_out(settings.auto_resynchronize_start),
        "auto_resynchronize_end": time_out(settings.auto_resynchronize_end),
        "bandwidth_schedule": [[time_out(s), time_out(e), bps] for s, e, bps in settings.bandwidth_schedule],
    }
    return json.dumps(doc, sort_keys=True)


def settings_in(text: str) -> ReplicationSettings:
    """The settings stored by :func:`settings_out`; keys missing from older rows keep their defaults."""
    doc: dict[str, Any] = json.loads(text)
    plain = (
        "recovery_connection_point",
        "recovery_port",
        "primary_connection_point",
        "certificate_thumbprint",
        "compression_enabled",
        "bypass_proxy_server",
        "replicate_host_kvp_items",
        "interval_seconds",
        "recovery_history",
        "app_consistent_interval_hours",
        "auto_resynchronize_enabled",
    )
    values: dict[str, Any] = {key: doc[key] for key in plain if key in doc}
    if "authentication_type" in doc:
        values["authentication_type"] = AuthenticationType(doc["authentication_type"])
    if "included_disks" in doc:
        values["included_disks"] = tuple(doc["included_disks"])
    for key in ("auto_resynchronize_start", "auto_resynchronize_end"):
        if key in doc:
            values[key] = time_in(doc[key])
    if "bandwidth_schedule" in doc:
        values["bandwidth_schedule"] = tuple(
            (time_in(s), time_in(e), int(bps)) for s, e, bps in doc["bandwidth_schedule"]
        )
    return ReplicationSettings(**values)
