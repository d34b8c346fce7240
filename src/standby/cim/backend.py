"""The contract between the CIM object model (``standby.cim``) and the CIM-XML wire (``standby.cimxml``).

``cimxml`` parses a request into pywbem objects and calls one of these methods; ``cim`` answers with pywbem
objects or raises ``pywbem.CIMError``. CIM names are verbatim on both sides of this boundary.

Values in ``invoke_method`` params may arrive untyped (SBLIM wbemcli sends no PARAMTYPE): plain ``str`` for
scalars, ``list[str]`` for arrays, ``CIMInstanceName`` for references. The object manager types them from the
method's definition in the class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pywbem import CIMClass, CIMClassName, CIMInstance, CIMInstanceName

#: The namespaces standby serves.
VIRTUALIZATION_NAMESPACE = "root/virtualization/v2"
CLUSTER_NAMESPACE = "root/HyperVCluster/v2"
INTEROP_NAMESPACE = "interop"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who asks and in which language (``en`` or ``de``), taken from the HTTP request."""

    user: str = "local"
    language: str = "en"


class ObjectManager(Protocol):
    """What a CIM server needs from the object model; errors are ``pywbem.CIMError``."""

    def namespaces(self) -> Sequence[str]:
        """Every namespace served, the Interop one included."""
        ...

    def get_class(
        self,
        namespace: str,
        classname: str,
        *,
        local_only: bool = True,
        include_qualifiers: bool = True,
        include_class_origin: bool = False,
        property_list: Sequence[str] | None = None,
    ) -> CIMClass:
        """The class definition; CIM_ERR_NOT_FOUND if unknown."""
        ...

    def enumerate_classes(
        self, namespace: str, classname: str | None = None, *, deep_inheritance: bool = False
    ) -> list[CIMClass]:
        """Subclasses of ``classname`` (or the top classes when None)."""
        ...

    def enumerate_instances(
        self,
        namespace: str,
        classname: str,
        ctx: RequestContext,
        *,
        deep_inheritance: bool = True,
        property_list: Sequence[str] | None = None,
    ) -> list[CIMInstance]:
        """Instances of the class and (deep) its subclasses, each with its ``path`` set."""
        ...

    def get_instance(
        self, path: CIMInstanceName, ctx: RequestContext, *, property_list: Sequence[str] | None = None
    ) -> CIMInstance:
        """One instance; CIM_ERR_NOT_FOUND if the keys match none."""
        ...

    def invoke_method(
        self,
        target: CIMInstanceName | CIMClassName,
        method: str,
        params: Mapping[str, Any],
        ctx: RequestContext,
    ) -> tuple[Any, dict[str, Any]]:
        """Run a method: (typed ReturnValue, typed out-parameters by name)."""
        ...

    def associators(
        self,
        path: CIMInstanceName,
        ctx: RequestContext,
        *,
        assoc_class: str | None = None,
        result_class: str | None = None,
        role: str | None = None,
        result_role: str | None = None,
    ) -> list[CIMInstance]:
        """Instances associated with ``path``."""
        ...

    def references(
        self,
        path: CIMInstanceName,
        ctx: RequestContext,
        *,
        result_class: str | None = None,
        role: str | None = None,
    ) -> list[CIMInstance]:
        """Association instances that refer to ``path``."""
        ...
