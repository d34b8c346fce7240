"""Replication data instances: service settings, authorization entries, relationships and their settings,
and the built-in replication provider (hyperv-api §5.1–§5.6).

Relationship instances (``Msvm_ReplicationRelationship`` and ``Msvm_ReplicationSettingData``) are served in
both namespaces; service-level data only in ``root/virtualization/v2``. Authorization entries are keyed by
an InstanceID standby derives from AllowedPrimaryHostSystem (Hyper-V documents it as NULL; a path needs one).
"""

from __future__ import annotations

from collections.abc import Iterable

from pywbem import CIMInstance

from standby.cim import naming
from standby.cim.backend import RequestContext
from standby.cim.instances import make_instance
from standby.cim.providers._base import FunctionProvider, Producer, bind
from standby.cim.providers.registry import ProviderRegistry
from standby.cim.runtime import CimRuntime
from standby.cim.values import cim_time_of_day
from standby.domain.entities import AuthorizationEntry, Relationship
from standby.domain.enums import BUILTIN_REPLICATION_PROVIDER_ID

SERVICE_SETTINGS = "Msvm_ReplicationServiceSettingData"
AUTHORIZATION = "Msvm_ReplicationAuthorizationSettingData"
RELATIONSHIP = "Msvm_ReplicationRelationship"
SETTINGS = "Msvm_ReplicationSettingData"
PROVIDER = "Msvm_ReplicationProvider"


def service_settings_id(runtime: CimRuntime) -> str:
    """InstanceID of the host's replication service settings."""
    return f"Microsoft:{runtime.host.name}\\ReplicationServiceSettingData"


def authorization_id(entry: AuthorizationEntry) -> str:
    """InstanceID standby gives an authorization entry."""
    return f"Microsoft:AuthorizationEntry\\{entry.allowed_primary_host}"


def provider_id(runtime: CimRuntime) -> str:
    """InstanceID of the built-in replication provider."""
    return f"Microsoft:{runtime.host.name}\\ReplicationProvider\\HostToHost"


def _service_settings(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    settings = runtime.engine.inventory.service_settings()
    yield make_instance(runtime.schema, namespace, SERVICE_SETTINGS, {
        "InstanceID": service_settings_id(runtime),
        "Caption": "Replication Service Settings",
        "ElementName": "Replication Service Settings",
        "RecoveryServerEnabled": settings.recovery_server_enabled,
        "AllowedAuthenticationType": settings.allowed_authentication_type,
        "CertificateThumbPrint": settings.certificate_thumbprint,
        "HttpPort": settings.http_port,
        "HttpsPort": settings.https_port,
        "MonitoringStartTime": cim_time_of_day(settings.monitoring_start_time),
        "MonitoringInterval": settings.monitoring_interval_seconds,
    })


def _authorization(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    for entry in runtime.engine.inventory.authorization_entries():
        yield make_instance(runtime.schema, namespace, AUTHORIZATION, {
            "InstanceID": authorization_id(entry),
            "Caption": "Replication Authorization Entry",
            "ElementName": entry.allowed_primary_host,
            "AllowedPrimaryHostSystem": entry.allowed_primary_host,
            "TrustGroup": entry.trust_group,
            "ReplicaStorageLocation": entry.storage_location,
        })


def relationship_instance(runtime: CimRuntime, namespace: str, rel: Relationship) -> CIMInstance:
    """A relationship as an Msvm_ReplicationRelationship."""
    return make_instance(runtime.schema, namespace, RELATIONSHIP, {
        "InstanceID": rel.instance_id,
        "Caption": "Replication Relationship",
        "ElementName": rel.vm_id,
        "ReplicationState": rel.state,
        "ReplicationHealth": rel.health,
        "FailedOverReplicationType": rel.failed_over_type,
        "LastReplicationType": rel.last_replication_type,
        "LastReplicationTime": rel.last_replication_time,
        "LastApplyTime": rel.last_apply_time,
        "LastApplicationConsistentReplicationTime": rel.last_app_consistent_time,
    })


def settings_instance(runtime: CimRuntime, namespace: str, rel: Relationship, vm_name: str) -> CIMInstance:
    """The settings of a relationship as an Msvm_ReplicationSettingData."""
    s = rel.settings
    return make_instance(runtime.schema, namespace, SETTINGS, {
        "InstanceID": rel.instance_id,
        "Caption": "Replication Settings",
        "Description": "Virtual Machine Replication Settings Data",
        "ElementName": vm_name,
        "VirtualSystemIdentifier": rel.vm_id,
        "VirtualSystemType": "Microsoft:Hyper-V:Replica",
        "ReplicationProvider": str(naming.instance_id_path(namespace, PROVIDER, provider_id(runtime))),
        "AuthenticationType": s.authentication_type,
        "CertificateThumbPrint": s.certificate_thumbprint,
        "CompressionEnabled": s.compression_enabled,
        "BypassProxyServer": s.bypass_proxy_server,
        "RecoveryConnectionPoint": s.recovery_connection_point,
        "PrimaryConnectionPoint": s.primary_connection_point,
        "RecoveryServerPortNumber": s.recovery_port,
        "ReplicateHostKvpItems": s.replicate_host_kvp_items,
        "ApplicationConsistentSnapshotInterval": s.app_consistent_interval_hours,
        "RecoveryHistory": s.recovery_history,
        "IncludedDisks": list(s.included_disks),
        "AutoResynchronizeEnabled": s.auto_resynchronize_enabled,
        "AutoResynchronizeIntervalStart": cim_time_of_day(s.auto_resynchronize_start),
        "AutoResynchronizeIntervalEnd": cim_time_of_day(s.auto_resynchronize_end),
        "EnableWriteOrderPreservationAcrossDisks": True,
        "ReplicationInterval": s.interval_seconds,
    })


def _relationships(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    for rel in runtime.engine.inventory.relationships():
        yield relationship_instance(runtime, namespace, rel)


def _settings(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    names = {vm.vm_id: vm.name for vm in runtime.engine.inventory.vms()}
    for rel in runtime.engine.inventory.relationships():
        yield settings_instance(runtime, namespace, rel, names.get(rel.vm_id, rel.vm_id))


def _provider(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    yield make_instance(runtime.schema, namespace, PROVIDER, {
        "InstanceID": provider_id(runtime),
        "Name": BUILTIN_REPLICATION_PROVIDER_ID,
        "Caption": "Replication Provider",
        "ElementName": "Virtual machine replication provider to Hyper-V host",
        "Description": "Virtual machine replication provider to Hyper-V host",
        "OperationalStatus": [2],
    })


def install(registry: ProviderRegistry, runtime: CimRuntime) -> None:
    """Register the replication data providers."""
    table: list[tuple[str, frozenset[str], Producer]] = [
        (SERVICE_SETTINGS, naming.VIRTUALIZATION_ONLY, _service_settings),
        (AUTHORIZATION, naming.VIRTUALIZATION_ONLY, _authorization),
        (PROVIDER, naming.VIRTUALIZATION_ONLY, _provider),
        (RELATIONSHIP, naming.BOTH, _relationships),
        (SETTINGS, naming.BOTH, _settings),
    ]
    for classname, namespaces, produce in table:
        registry.add_provider(FunctionProvider(classname, namespaces, bind(produce, runtime)))
