"""Settings validation: tables of valid and invalid values for every property."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

import pytest

from standby.domain.entities import ReplicationSettings, ServiceSettings
from standby.domain.enums import AllowedAuthenticationType, InitialReplicationType, ReturnCode
from standby.domain.errors import InvalidParameter
from standby.domain.settings import (
    is_valid_interval,
    validate_extended_settings,
    validate_import_location,
    validate_initial_replication,
    validate_replication_settings,
    validate_service_settings,
    validate_start_time,
)

GOOD = ReplicationSettings(recovery_connection_point="replica.example.net", recovery_port=443)
THUMB = "A9" * 20


def test_defaults_with_a_recovery_server_are_valid() -> None:
    validate_replication_settings(GOOD)
    validate_replication_settings(GOOD, collection=True)
    validate_replication_settings(GOOD, hyperv_only=True)


VALID_REPLICATION = [
    {"interval_seconds": 30},
    {"interval_seconds": 300},
    {"interval_seconds": 900},
    {"interval_seconds": 1},
    {"interval_seconds": 29},
    {"recovery_history": 0},
    {"recovery_history": 24},
    {"recovery_history": 25},
    {"recovery_history": 720},
    {"recovery_history": 24, "app_consistent_interval_hours": 12},
    {"recovery_history": 4, "app_consistent_interval_hours": 4},
    {"recovery_history": 4, "app_consistent_interval_hours": 0},
    {"recovery_port": 1},
    {"recovery_port": 80},
    {"recovery_port": 65535},
    {"authentication_type": 1},
    {"authentication_type": 2},
    {"certificate_thumbprint": THUMB},
    {"certificate_thumbprint": "a9 " * 20},
    {"certificate_thumbprint": "0f" * 32},
    {"recovery_connection_point": "broker-cap"},
    {"recovery_connection_point": "h" * 256},
    {"primary_connection_point": "primary.example.net"},
    {"included_disks": ("disk0", "disk1")},
    {"auto_resynchronize_enabled": True},
    {
        "auto_resynchronize_enabled": True,
        "auto_resynchronize_start": time(0, 0),
        "auto_resynchronize_end": time(23, 59),
    },
    {"auto_resynchronize_start": time(6), "auto_resynchronize_end": time(6)},  # disabled: window unused
    {"bandwidth_schedule": ((time(8), time(18), 10_000_000),)},
    {"bandwidth_schedule": ((time(22), time(6), 1),)},
]


@pytest.mark.parametrize("changes", VALID_REPLICATION, ids=[str(c) for c in VALID_REPLICATION])
def test_valid_replication_settings(changes: dict[str, Any]) -> None:
    validate_replication_settings(replace(GOOD, **changes))


INVALID_REPLICATION = [
    # (changes, property named in the error)
    ({"interval_seconds": 0}, "interval_seconds"),
    ({"interval_seconds": -30}, "interval_seconds"),
    ({"interval_seconds": 31}, "interval_seconds"),
    ({"interval_seconds": 60}, "interval_seconds"),
    ({"interval_seconds": 299}, "interval_seconds"),
    ({"interval_seconds": 301}, "interval_seconds"),
    ({"interval_seconds": 899}, "interval_seconds"),
    ({"interval_seconds": 901}, "interval_seconds"),
    ({"interval_seconds": 3600}, "interval_seconds"),
    ({"interval_seconds": True}, "interval_seconds"),
    ({"interval_seconds": "300"}, "interval_seconds"),
    ({"recovery_history": -1}, "recovery_history"),
    ({"recovery_history": 721}, "recovery_history"),
    ({"recovery_history": 2.5}, "recovery_history"),
    ({"recovery_history": 4, "app_consistent_interval_hours": 5}, "app_consistent_interval_hours"),
    ({"recovery_history": 0, "app_consistent_interval_hours": 1}, "app_consistent_interval_hours"),
    ({"recovery_history": 24, "app_consistent_interval_hours": 13}, "app_consistent_interval_hours"),
    ({"recovery_history": 24, "app_consistent_interval_hours": -1}, "app_consistent_interval_hours"),
    ({"recovery_port": 0}, "recovery_port"),
    ({"recovery_port": 65536}, "recovery_port"),
    ({"recovery_port": -1}, "recovery_port"),
    ({"authentication_type": 0}, "authentication_type"),
    ({"authentication_type": 3}, "authentication_type"),
    ({"certificate_thumbprint": "xyz"}, "certificate_thumbprint"),
    ({"certificate_thumbprint": "A9" * 19}, "certificate_thumbprint"),
    ({"certificate_thumbprint": "G9" * 20}, "certificate_thumbprint"),
    ({"recovery_connection_point": ""}, "recovery_connection_point"),
    ({"recovery_connection_point": "two words"}, "recovery_connection_point"),
    ({"recovery_connection_point": "h" * 257}, "recovery_connection_point"),
    ({"recovery_connection_point": "host\x00"}, "recovery_connection_point"),
    ({"primary_connection_point": "bad host"}, "primary_connection_point"),
    ({"included_disks": ("disk0", "disk0")}, "included_disks"),
    ({"included_disks": ("",)}, "included_disks"),
    (
        {
            "auto_resynchronize_enabled": True,
            "auto_resynchronize_start": time(6),
            "auto_resynchronize_end": time(6),
        },
        "auto_resynchronize_end",
    ),
    ({"auto_resynchronize_start": time(18, 30, tzinfo=UTC)}, "auto_resynchronize_start"),
    ({"auto_resynchronize_end": "06:00"}, "auto_resynchronize_end"),
    ({"bandwidth_schedule": ((time(8), time(8), 100),)}, "bandwidth_schedule"),
    ({"bandwidth_schedule": ((time(8), time(18), 0),)}, "bandwidth_schedule"),
]


@pytest.mark.parametrize(
    ("changes", "prop"), INVALID_REPLICATION, ids=[str(c[0]) for c in INVALID_REPLICATION]
)
def test_invalid_replication_settings(changes: dict[str, Any], prop: str) -> None:
    with pytest.raises(InvalidParameter) as raised:
        validate_replication_settings(replace(GOOD, **changes))
    error = raised.value
    assert error.code == ReturnCode.INVALID_PARAMETER
    assert error.message_id == "InvalidSettingValue"
    assert error.args_map["property"] == prop
    assert prop in error.message
    assert error.message.startswith(f"Invalid {error.args_map['label']} ({prop})")
    assert str(error.args_map["allowed"]) in error.message


@pytest.mark.parametrize(
    ("changes", "collection", "ok"),
    [
        ({"interval_seconds": 29}, False, False),
        ({"interval_seconds": 30}, False, True),
        ({"recovery_history": 24}, False, True),
        ({"recovery_history": 25}, False, False),
        ({"recovery_history": 16}, True, True),
        ({"recovery_history": 17}, True, False),
        ({"recovery_history": 17}, False, True),
    ],
)
def test_hyperv_only_ranges(changes: dict[str, Any], collection: bool, ok: bool) -> None:
    settings = replace(GOOD, **changes)
    if ok:
        validate_replication_settings(settings, collection=collection, hyperv_only=True)
    else:
        with pytest.raises(InvalidParameter):
            validate_replication_settings(settings, collection=collection, hyperv_only=True)
    validate_replication_settings(settings, collection=collection)  # the extension accepts all of these


def test_interval_message_lists_allowed_values() -> None:
    with pytest.raises(InvalidParameter) as raised:
        validate_replication_settings(replace(GOOD, interval_seconds=60))
    assert "30, 300 or 900" in raised.value.message
    assert "1-29" in raised.value.message


@pytest.mark.parametrize(
    ("seconds", "hyperv_only", "expected"),
    [
        (1, False, True),
        (29, False, True),
        (30, True, True),
        (29, True, False),
        (100, False, False),
        (False, False, False),
    ],
)
def test_is_valid_interval(seconds: int, hyperv_only: bool, expected: bool) -> None:
    assert is_valid_interval(seconds, hyperv_only=hyperv_only) is expected


# ------------------------------------------------------------------------------------------------------
# Extended replication
# ------------------------------------------------------------------------------------------------------

EXTENDED_CASES = [
    # (changes, primary interval, current disks, ok)
    ({"interval_seconds": 300}, 300, None, True),
    ({"interval_seconds": 900}, 300, None, True),
    ({"interval_seconds": 300}, 30, None, True),
    ({"interval_seconds": 300}, 900, None, False),
    ({"interval_seconds": 30}, 30, None, False),
    ({"interval_seconds": 5}, 5, None, False),
    ({"app_consistent_interval_hours": 1, "recovery_history": 4}, 300, None, False),
    ({"included_disks": ("d0",)}, 300, ("d0",), True),
    ({"included_disks": ("d0", "d1")}, 300, ("d0",), False),
    ({"recovery_port": 0}, 300, None, False),
]


@pytest.mark.parametrize(("changes", "primary", "disks", "ok"), EXTENDED_CASES)
def test_extended_settings(
    changes: dict[str, Any], primary: int, disks: tuple[str, ...] | None, ok: bool
) -> None:
    settings = replace(GOOD, **changes)
    if ok:
        validate_extended_settings(settings, primary_interval_seconds=primary, current_included_disks=disks)
    else:
        with pytest.raises(InvalidParameter):
            validate_extended_settings(
                settings, primary_interval_seconds=primary, current_included_disks=disks
            )


# ------------------------------------------------------------------------------------------------------
# Service settings
# ------------------------------------------------------------------------------------------------------

A = AllowedAuthenticationType
SERVICE = ServiceSettings(recovery_server_enabled=True, allowed_authentication_type=A.CERTIFICATE)

VALID_SERVICE = [
    {},
    {"recovery_server_enabled": False, "allowed_authentication_type": A.NOT_DEFINED},
    {"allowed_authentication_type": A.KERBEROS},
    {"allowed_authentication_type": A.CERTIFICATE_AND_KERBEROS},
    {"http_port": 8080, "https_port": 8443},
    {"http_port": 443, "https_port": 443},  # one listener only: the same number is fine
    {"certificate_thumbprint": THUMB},
    {"monitoring_interval_seconds": 3600},
    {"monitoring_interval_seconds": 604800},
    {"monitoring_start_time": time(0)},
    {"monitoring_start_time": time(23, 59, tzinfo=UTC)},
]


@pytest.mark.parametrize("changes", VALID_SERVICE, ids=[str(c) for c in VALID_SERVICE])
def test_valid_service_settings(changes: dict[str, Any]) -> None:
    validate_service_settings(replace(SERVICE, **changes))


INVALID_SERVICE = [
    ({"http_port": 0}, "http_port"),
    ({"https_port": 0}, "https_port"),
    ({"https_port": 70000}, "https_port"),
    ({"allowed_authentication_type": 4}, "allowed_authentication_type"),
    ({"allowed_authentication_type": A.NOT_DEFINED}, "allowed_authentication_type"),
    (
        {"allowed_authentication_type": A.CERTIFICATE_AND_KERBEROS, "http_port": 443, "https_port": 443},
        "https_port",
    ),
    ({"certificate_thumbprint": "nope"}, "certificate_thumbprint"),
    ({"monitoring_interval_seconds": 3599}, "monitoring_interval_seconds"),
    ({"monitoring_interval_seconds": 604801}, "monitoring_interval_seconds"),
    ({"monitoring_interval_seconds": 0}, "monitoring_interval_seconds"),
    ({"monitoring_start_time": time(9, tzinfo=timezone(timedelta(hours=2)))}, "monitoring_start_time"),
    ({"monitoring_start_time": "09:00"}, "monitoring_start_time"),
]


@pytest.mark.parametrize(("changes", "prop"), INVALID_SERVICE, ids=[str(c[0]) for c in INVALID_SERVICE])
def test_invalid_service_settings(changes: dict[str, Any], prop: str) -> None:
    with pytest.raises(InvalidParameter) as raised:
        validate_service_settings(replace(SERVICE, **changes))
    assert raised.value.args_map["property"] == prop
    assert prop in raised.value.message


# ------------------------------------------------------------------------------------------------------
# Method parameters
# ------------------------------------------------------------------------------------------------------

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "ok"),
    [
        (None, True),
        (NOW, True),
        (NOW - timedelta(hours=1), True),
        (NOW + timedelta(days=7), True),
        (NOW + timedelta(days=7, seconds=1), False),
        (NOW + timedelta(days=30), False),
        (datetime(2024, 5, 2, 12, 0), False),  # no zone
        (datetime(2024, 5, 8, 13, 0, tzinfo=timezone(timedelta(hours=2))), True),  # 11:00 UTC, within 7 days
    ],
)
def test_start_time(start: datetime | None, ok: bool) -> None:
    if ok:
        validate_start_time(start, NOW)
    else:
        with pytest.raises(InvalidParameter):
            validate_start_time(start, NOW)


@pytest.mark.parametrize(
    ("kind", "location", "result"),
    [
        (1, None, InitialReplicationType.NETWORK),
        (1, "", InitialReplicationType.NETWORK),
        (2, "/srv/export", InitialReplicationType.EXPORT),
        (3, None, InitialReplicationType.SEEDED_NETWORK),
        (0, None, "initial_replication_type"),
        (4, None, "initial_replication_type"),
        (2, None, "export_location"),
        (2, "", "export_location"),
        (1, "/srv/export", "export_location"),
        (3, "/srv/export", "export_location"),
    ],
)
def test_initial_replication(kind: int, location: str | None, result: object) -> None:
    if isinstance(result, InitialReplicationType):
        assert validate_initial_replication(kind, location) is result
    else:
        with pytest.raises(InvalidParameter) as raised:
            validate_initial_replication(kind, location)
        assert raised.value.args_map["property"] == result


@pytest.mark.parametrize(
    ("path", "ok"), [("/srv/in/VM_GUID", True), ("", False), ("   ", False), (None, False)]
)
def test_import_location(path: str | None, ok: bool) -> None:
    if ok:
        assert validate_import_location(path) == path
    else:
        with pytest.raises(InvalidParameter):
            validate_import_location(path)
