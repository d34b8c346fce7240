"""Setting data between CIM instances and the entities of ``domain/entities.py``.

Embedded instances a client passes arrive typed (see ``cim/embedded.py``); these functions read their
properties into entities, keeping defaults for NULL ones, and raise ``InvalidParameter`` (32773) for values
the entity cannot hold. The other direction builds the instances methods return as embedded strings.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import time
from enum import IntEnum
from typing import Any, TypeVar

from pywbem import CIMInstance

from standby.cim.embedded import property_value
from standby.cim.instances import make_instance
from standby.cim.schema import Schema
from standby.cim.values import time_of_day
from standby.domain.entities import AuthorizationEntry, ReplicationSettings, ServiceSettings
from standby.domain.enums import AllowedAuthenticationType, AuthenticationType
from standby.domain.errors import InvalidParameter
from standby.engine.replication import HealthIssue, StatisticsReport

E = TypeVar("E", bound=IntEnum)


def _enum(enum: type[E], instance: CIMInstance, name: str, default: E) -> E:
    value = property_value(instance, name)
    if value is None:
        return default
    try:
        return enum(int(value))
    except ValueError:
        allowed = ", ".join(str(int(member)) for member in enum)
        raise InvalidParameter(f"{instance.classname}.{name} must be one of {allowed}; got {value}",
                               message_id="InvalidPropertyValue", property=name, value=value,
                               allowed=allowed) from None


def _int(instance: CIMInstance, name: str, default: int) -> int:
    value = property_value(instance, name)
    return default if value is None else int(value)


def _str(instance: CIMInstance, name: str, default: str) -> str:
    value = property_value(instance, name)
    return default if value is None else str(value)


def _bool(instance: CIMInstance, name: str, default: bool) -> bool:
    value = property_value(instance, name)
    return default if value is None else bool(value)


def replication_settings(
    instance: CIMInstance, base: ReplicationSettings | None = None
) -> ReplicationSettings:
    """A ``Msvm_ReplicationSettingData`` (or collection variant) as ``ReplicationSettings``."""
    current = base or ReplicationSettings()
    return replace(
        current,
        recovery_connection_point=_str(instance, "RecoveryConnectionPoint",
                                       current.recovery_connection_point),
        recovery_port=_int(instance, "RecoveryServerPortNumber", current.recovery_port),
        primary_connection_point=_str(instance, "PrimaryConnectionPoint", current.primary_connection_point),
        authentication_type=_enum(AuthenticationType, instance, "AuthenticationType",
                                  current.authentication_type),
        certificate_thumbprint=_str(instance, "CertificateThumbPrint", current.certificate_thumbprint),
        compression_enabled=_bool(instance, "CompressionEnabled", current.compression_enabled),
        bypass_proxy_server=_bool(instance, "BypassProxyServer", current.bypass_proxy_server),
        replicate_host_kvp_items=_bool(instance, "ReplicateHostKvpItems", current.replicate_host_kvp_items),
        interval_seconds=_int(instance, "ReplicationInterval", current.interval_seconds),
        recovery_history=_int(instance, "RecoveryHistory", current.recovery_history),
        app_consistent_interval_hours=_int(instance, "ApplicationConsistentSnapshotInterval",
                                           current.app_consistent_interval_hours),
        included_disks=tuple(property_value(instance, "IncludedDisks", current.included_disks)),
        auto_resynchronize_enabled=_bool(instance, "AutoResynchronizeEnabled",
                                         current.auto_resynchronize_enabled),
        auto_resynchronize_start=time_of_day(property_value(instance, "AutoResynchronizeIntervalStart"),
                                             current.auto_resynchronize_start),
        auto_resynchronize_end=time_of_day(property_value(instance, "AutoResynchronizeIntervalEnd"),
                                           current.auto_resynchronize_end),
    )


def service_settings(instance: CIMInstance, current: ServiceSettings) -> ServiceSettings:
    """A ``Msvm_ReplicationServiceSettingData`` over the current settings (NULL keeps a value)."""
    return ServiceSettings(
        recovery_server_enabled=_bool(instance, "RecoveryServerEnabled", current.recovery_server_enabled),
        allowed_authentication_type=_enum(AllowedAuthenticationType, instance, "AllowedAuthenticationType",
                                          current.allowed_authentication_type),
        certificate_thumbprint=_str(instance, "CertificateThumbPrint", current.certificate_thumbprint),
        http_port=_int(instance, "HttpPort", current.http_port),
        https_port=_int(instance, "HttpsPort", current.https_port),
        monitoring_start_time=time_of_day(property_value(instance, "MonitoringStartTime"),
                                          current.monitoring_start_time),
        monitoring_interval_seconds=_int(instance, "MonitoringInterval", current.monitoring_interval_seconds),
    )


def authorization_entry(instance: CIMInstance) -> AuthorizationEntry:
    """A ``Msvm_ReplicationAuthorizationSettingData``; AllowedPrimaryHostSystem is required."""
    host = _str(instance, "AllowedPrimaryHostSystem", "").strip()
    if not host:
        raise InvalidParameter("AuthorizationEntry needs AllowedPrimaryHostSystem",
                               message_id="AuthorizationHostMissing")
    return AuthorizationEntry(
        allowed_primary_host=host,
        trust_group=_str(instance, "TrustGroup", ""),  # none given: a group of its own
        storage_location=_str(instance, "ReplicaStorageLocation", ""),
    )


def statistics_instance(schema: Schema, namespace: str, report: StatisticsReport) -> CIMInstance:
    """An ``Msvm_ReplicationStatistics`` (embedded, so without a path)."""
    instance = make_instance(schema, namespace, "Msvm_ReplicationStatistics", {
        "InstanceID": f"Microsoft:{report.vm_id}\\HVR\\{int(report.index)}\\Statistics",
        "StartStatisticTime": report.start,
        "EndStatisticTime": report.end,
        "ReplicationSuccessCount": report.success_count,
        "ReplicationSize": report.size_bytes,
        "MaxReplicationSize": report.max_size_bytes,
        "ReplicationLatency": report.latency_seconds,
        "MaxReplicationLatency": report.max_latency_seconds,
        "ReplicationMissCount": report.miss_count,
        "NetworkFailureCount": report.network_failure_count,
        "ReplicationFailureCount": report.failure_count,
        "PendingReplicationSize": report.pending_bytes,
        "ApplicationConsistentSnapshotFailureCount": report.app_consistent_failure_count,
        "ReplicationHealth": int(report.health),
        "LastTestFailoverTime": report.last_test_failover_time,
    })
    instance.path = None
    return instance


def error_instance(
    schema: Schema, namespace: str, *, message_id: str, message: str, arguments: tuple[str, ...] = (),
    severity: int = 5, source: str | None = None, cim_status: int = 1,
) -> CIMInstance:
    """An ``Msvm_Error`` (embedded) with standby as the owning entity."""
    instance = make_instance(schema, namespace, "Msvm_Error", {
        "ErrorType": 4,  # software error
        "OwningEntity": "standby",
        "MessageID": message_id,
        "Message": message,
        "MessageArguments": list(arguments),
        "PerceivedSeverity": severity,
        "ProbableCause": 0,
        "ErrorSource": source,
        "ErrorSourceFormat": 2 if source else 0,
        "CIMStatusCode": cim_status,
        "CIMStatusCodeDescription": "CIM_ERR_FAILED" if cim_status == 1 else None,
    })
    instance.path = None
    return instance


def health_issue_instances(
    schema: Schema, namespace: str, issues: tuple[HealthIssue, ...], source: str
) -> list[CIMInstance]:
    """The health issues of a statistics report as ``Msvm_Error`` instances."""
    return [error_instance(schema, namespace, message_id=issue.message_id, message=issue.message,
                           severity=issue.severity, source=source) for issue in issues]


def time_or_none(value: Any) -> time | None:
    """A time of day from a CIM datetime/interval value, None for NULL."""
    return None if value is None else time_of_day(value, time(0, 0))
