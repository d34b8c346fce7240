"""The Interop namespace: ``CIM_ObjectManager`` (this CIM server) and one ``CIM_Namespace`` per namespace.

WBEM clients discover a server through these (pywbem's ``WBEMServer``, ``pywbemcli server info`` and
``namespace list``): they look for the Interop namespace (``interop``, also reached as ``root/interop``),
enumerate ``CIM_Namespace`` there for the namespace names and read the single ``CIM_ObjectManager``'s
``ElementName`` (the brand) and ``Description`` (``… version X``). ``CIM_RegisteredProfile`` exists as a
class without instances: standby registers no DMTF profiles.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from pywbem import CIMInstance

import standby
from standby.cim import naming
from standby.cim.backend import INTEROP_NAMESPACE, RequestContext
from standby.cim.instances import make_instance
from standby.cim.providers._base import FunctionProvider
from standby.cim.providers.registry import ProviderRegistry
from standby.cim.runtime import CimRuntime
from standby.domain.enums import EnabledState

OBJECT_MANAGER = "CIM_ObjectManager"
NAMESPACE = "CIM_Namespace"
#: The object manager's Name key (one per host).
OBJECT_MANAGER_NAME = "standby"
#: What clients show as the server's brand.
BRAND = "standby"


def object_manager_instance(runtime: CimRuntime, namespace: str) -> CIMInstance:
    """The CIM server of this host."""
    return make_instance(
        runtime.schema,
        namespace,
        OBJECT_MANAGER,
        {
            **naming.service_keys(runtime.host, OBJECT_MANAGER, OBJECT_MANAGER_NAME),
            "ElementName": BRAND,
            "Caption": "standby CIM server",
            "Description": f"standby CIM server version {standby.__version__}",
            "EnabledState": EnabledState.ENABLED,
            "EnabledDefault": EnabledState.ENABLED,
            "Started": True,
            "OperationalStatus": [2],
            "StatusDescriptions": ["OK"],
            "GatherStatisticalData": False,
        },
    )


def namespace_instances(runtime: CimRuntime, namespace: str) -> list[CIMInstance]:
    """One ``CIM_Namespace`` per namespace the schema serves, the Interop namespace included."""
    return [
        make_instance(
            runtime.schema,
            namespace,
            NAMESPACE,
            {
                "SystemCreationClassName": naming.COMPUTER_SYSTEM,
                "SystemName": runtime.host.name,
                "ObjectManagerCreationClassName": OBJECT_MANAGER,
                "ObjectManagerName": OBJECT_MANAGER_NAME,
                "CreationClassName": NAMESPACE,
                "Name": served,
                "ElementName": served,
            },
        )
        for served in runtime.schema.namespaces
    ]


def _object_managers(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    yield object_manager_instance(runtime, namespace)


def _namespaces(runtime: CimRuntime, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
    return namespace_instances(runtime, namespace)


def install(registry: ProviderRegistry, runtime: CimRuntime) -> None:
    """Register the Interop providers (called by ``build_registry``)."""
    interop = frozenset({INTEROP_NAMESPACE})
    registry.add_provider(FunctionProvider(OBJECT_MANAGER, interop, partial(_object_managers, runtime)))
    registry.add_provider(FunctionProvider(NAMESPACE, interop, partial(_namespaces, runtime)))
