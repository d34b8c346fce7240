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
from typing import Any, Protocol, TypedDict, Unpack

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


# The operations' keyword options are TypedDicts: the protocol and ``CimObjectManager``
# take them as ``**query`` (so each option is named once) and callers still pass plain, type-checked keywords.
class ClassQuery(TypedDict, total=False):
    """GetClass's flags; an absent one has DSP0200's default: ``local_only`` and ``include_qualifiers``
    true, ``include_class_origin`` false, ``property_list`` None (every property)."""

    local_only: bool
    include_qualifiers: bool
    include_class_origin: bool
    property_list: Sequence[str] | None


class InstanceQuery(TypedDict, total=False):
    """EnumerateInstances' flags; an absent one: ``deep_inheritance`` true, ``property_list`` None (every
    property)."""

    deep_inheritance: bool
    property_list: Sequence[str] | None


class AssociatorQuery(TypedDict, total=False):
    """Associators' filters (DSP0200 AssocClass, ResultClass, Role, ResultRole); absent or None: no filter."""

    assoc_class: str | None
    result_class: str | None
    role: str | None
    result_role: str | None


class ReferenceQuery(TypedDict, total=False):
    """References' filters (DSP0200 ResultClass, Role); absent or None: no filter."""

    result_class: str | None
    role: str | None


class ObjectManager(Protocol):
    """What a CIM server needs from the object model; errors are ``pywbem.CIMError``."""

    def namespaces(self) -> Sequence[str]:
        """Every namespace served, the Interop one included."""
        ...

    def get_class(self, namespace: str, classname: str, **query: Unpack[ClassQuery]) -> CIMClass:
        """The class definition; CIM_ERR_NOT_FOUND if unknown."""
        ...

    def enumerate_classes(
        self, namespace: str, classname: str | None = None, *, deep_inheritance: bool = False
    ) -> list[CIMClass]:
        """Subclasses of ``classname`` (or the top classes when None)."""
        ...

    def enumerate_instances(self, namespace: str, classname: str, ctx: RequestContext,
                            **query: Unpack[InstanceQuery]) -> list[CIMInstance]:
        """Instances of the class and (deep) its subclasses, each with its ``path`` set."""
        ...

    def get_instance(
        self, path: CIMInstanceName, ctx: RequestContext, *, property_list: Sequence[str] | None = None
    ) -> CIMInstance:
        """One instance; CIM_ERR_NOT_FOUND if the keys match none."""
        ...

    def invoke_method(self, target: CIMInstanceName | CIMClassName, method: str, params: Mapping[str, Any],
                      ctx: RequestContext) -> tuple[Any, dict[str, Any]]:
        """Run a method: (typed ReturnValue, typed out-parameters by name)."""
        ...

    def associators(self, path: CIMInstanceName, ctx: RequestContext,
                    **query: Unpack[AssociatorQuery]) -> list[CIMInstance]:
        """Instances associated with ``path``."""
        ...

    def references(self, path: CIMInstanceName, ctx: RequestContext,
                   **query: Unpack[ReferenceQuery]) -> list[CIMInstance]:
        """Association instances that refer to ``path``."""
        ...
