"""``CimObjectManager``: the ``cim.backend.ObjectManager`` the CIM-XML server talks to.

Reads come from the providers of the registry (instances of a class = its own providers plus those of every
subclass); associations are traversed generically over the association classes' instances; methods go
through the ``Dispatcher``. Errors follow DSP0200: CIM_ERR_INVALID_NAMESPACE for an unknown namespace,
CIM_ERR_INVALID_CLASS for an unknown class in instance operations, CIM_ERR_NOT_FOUND for an unknown class in
GetClass and for instance paths that match nothing, CIM_ERR_INVALID_PARAMETER for bad filter class names.
Each is a ``CimFault`` (English text plus a catalog id), which the CIM-XML edge renders in the reader's
language.

Build one with ``build_object_manager(runtime)``; it installs every provider module (see
``cim/providers/registry.py`` for how other modules add providers and method handlers).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Unpack

import pywbem
from pywbem import CIMClass, CIMClassName, CIMInstance, CIMInstanceName

from standby.cim.backend import AssociatorQuery, ClassQuery, InstanceQuery, ReferenceQuery, RequestContext
from standby.cim.dispatch import Dispatcher
from standby.cim.errors import CimFault
from standby.cim.instances import filtered, keys_match, paths_equal
from standby.cim.providers.registry import ProviderRegistry, build_registry
from standby.cim.runtime import CimRuntime
from standby.cim.schema import Schema
from standby.domain.errors import StandbyError

log = logging.getLogger(__name__)


class CimObjectManager:
    """The object model of standby over pywbem objects."""

    def __init__(self, runtime: CimRuntime, registry: ProviderRegistry | None = None) -> None:
        self._runtime = runtime
        self.runtime = runtime
        self._schema: Schema = runtime.schema
        self._registry = registry if registry is not None else build_registry(runtime)
        self._dispatcher = Dispatcher(self._schema, self._registry, runtime, self.find_instance)

    @property
    def registry(self) -> ProviderRegistry:
        """The provider registry in use."""
        return self._registry

    # -- namespaces and classes ---------------------------------------------------------------------------

    def namespaces(self) -> Sequence[str]:
        """Every namespace served, the Interop one included."""
        return self._schema.namespaces

    def _namespace(self, namespace: str | None) -> str:
        canonical = self._schema.canonical_namespace(namespace or "")
        if canonical is None:
            raise CimFault(pywbem.CIM_ERR_INVALID_NAMESPACE, f"Namespace {namespace!r} does not exist",
                           message_id="CimNamespaceNotFound", namespace=namespace)
        return canonical

    def get_class(self, namespace: str, classname: str, **query: Unpack[ClassQuery]) -> CIMClass:
        """The class definition shaped by the DSP0200 flags; CIM_ERR_NOT_FOUND if unknown."""
        ns = self._namespace(namespace)
        cls = self._schema.find_class(ns, classname)
        if cls is None:
            raise _no_class(pywbem.CIM_ERR_NOT_FOUND, classname, ns)
        return _shaped(cls, query.get("local_only", True), query.get("include_qualifiers", True),
                       query.get("include_class_origin", False), query.get("property_list"))

    def enumerate_classes(
        self, namespace: str, classname: str | None = None, *, deep_inheritance: bool = False
    ) -> list[CIMClass]:
        """Subclasses of ``classname`` (or the top classes when None); CIM_ERR_INVALID_CLASS if unknown."""
        ns = self._namespace(namespace)
        if classname is not None:
            self._class_of(ns, classname)
        classes = self._schema.subclasses(ns, classname, deep=deep_inheritance)
        return [copy.deepcopy(cls) for cls in classes]

    # -- instances ------------------------------------------------------------------------------------------

    def _class_of(self, namespace: str, classname: str) -> CIMClass:
        cls = self._schema.find_class(namespace, classname)
        if cls is None:
            raise _no_class(pywbem.CIM_ERR_INVALID_CLASS, classname, namespace)
        return cls

    def _instances(self, namespace: str, classname: str, ctx: RequestContext) -> Iterator[CIMInstance]:
        """Instances of the class and every subclass, straight from the providers."""
        names = [classname] + [c.classname for c in self._schema.subclasses(namespace, classname, deep=True)]
        for name in names:
            for provider in self._registry.providers(namespace, name):
                try:
                    yield from provider.instances(namespace, ctx)
                except StandbyError as exc:
                    raise CimFault(pywbem.CIM_ERR_FAILED, f"{name}: {exc.message}",
                                   message_id="CimProviderFailed", classname=name, reason=exc) from exc

    def enumerate_instances(self, namespace: str, classname: str, ctx: RequestContext,
                            **query: Unpack[InstanceQuery]) -> list[CIMInstance]:
        """Instances of the class and its subclasses; without deep inheritance only the class's properties."""
        ns = self._namespace(namespace)
        cls = self._class_of(ns, classname)
        deep, wanted = query.get("deep_inheritance", True), _names(query.get("property_list"))
        result = []
        for instance in self._instances(ns, cls.classname, ctx):
            shaped = instance if deep else filtered(instance, list(cls.properties))
            result.append(filtered(shaped, wanted))
        return result

    def find_instance(self, path: CIMInstanceName, ctx: RequestContext | None = None) -> CIMInstance | None:
        """The instance a path names (its class may be an ancestor of the instance's), or None."""
        ns = self._namespace(path.namespace)
        if self._schema.find_class(ns, path.classname) is None:
            return None
        for instance in self._instances(ns, path.classname, ctx or RequestContext()):
            if keys_match(path, instance.path):
                return instance
        return None

    def get_instance(
        self, path: CIMInstanceName, ctx: RequestContext, *, property_list: Sequence[str] | None = None
    ) -> CIMInstance:
        """One instance; CIM_ERR_NOT_FOUND if the keys match none."""
        ns = self._namespace(path.namespace)
        self._class_of(ns, path.classname)
        located = _located(path, ns)
        instance = self.find_instance(located, ctx)
        if instance is None:
            raise _no_instance(path)
        return filtered(instance, _names(property_list))

    # -- methods --------------------------------------------------------------------------------------------

    def invoke_method(self, target: CIMInstanceName | CIMClassName, method: str, params: Mapping[str, Any],
                      ctx: RequestContext) -> tuple[Any, dict[str, Any]]:
        """Run a method on an instance or (static style) on a class: (ReturnValue, out-parameters)."""
        ns = self._namespace(target.namespace)
        if self._schema.find_class(ns, target.classname) is None:
            raise _no_class(pywbem.CIM_ERR_NOT_FOUND, target.classname, ns)
        instance = None
        if isinstance(target, CIMInstanceName):
            instance = self.find_instance(_located(target, ns), ctx)
            if instance is None:
                raise _no_instance(target)
        return self._dispatcher.invoke(ns, target, instance, method, params, ctx)

    # -- associations ---------------------------------------------------------------------------------------

    def _association_classes(self, ns: str, assoc_class: str | None) -> list[str]:
        if assoc_class is not None:
            if self._schema.find_class(ns, assoc_class) is None:
                raise CimFault(pywbem.CIM_ERR_INVALID_PARAMETER, f"Unknown association class {assoc_class!r}",
                               message_id="CimUnknownAssociationClass", classname=assoc_class)
            candidates = [assoc_class] + [c.classname for c in self._schema.subclasses(ns, assoc_class)]
        else:
            candidates = [c.classname for c in self._schema.classes(ns)]
        return [name for name in candidates
                if self._schema.is_association(ns, name) and self._registry.providers(ns, name)]

    def _links(
        self, path: CIMInstanceName, ctx: RequestContext, assoc_class: str | None, role: str | None
    ) -> Iterator[tuple[CIMInstance, str]]:
        """(association instance, name of the REF property pointing at ``path``) pairs."""
        ns = self._namespace(path.namespace)
        subject = self.find_instance(_located(path, ns), ctx)
        if subject is None:
            raise _no_instance(path)
        for name in self._association_classes(ns, assoc_class):
            for provider in self._registry.providers(ns, name):
                for link in provider.instances(ns, ctx):
                    for prop in link.properties.values():
                        if prop.type != "reference" or prop.value is None:
                            continue
                        if role is not None and prop.name.lower() != role.lower():
                            continue
                        if paths_equal(prop.value, subject.path):
                            yield link, prop.name

    def _check_result_class(self, ns: str, result_class: str | None) -> None:
        if result_class is not None and self._schema.find_class(ns, result_class) is None:
            raise CimFault(pywbem.CIM_ERR_INVALID_PARAMETER, f"Unknown result class {result_class!r}",
                           message_id="CimUnknownResultClass", classname=result_class)

    def associators(self, path: CIMInstanceName, ctx: RequestContext,
                    **query: Unpack[AssociatorQuery]) -> list[CIMInstance]:
        """Instances associated with ``path``, filtered as DSP0200 says."""
        result_class, result_role = query.get("result_class"), query.get("result_role")
        ns = self._namespace(path.namespace)
        self._check_result_class(ns, result_class)
        found: list[CIMInstance] = []
        for link, own_role in self._links(path, ctx, query.get("assoc_class"), query.get("role")):
            for prop in link.properties.values():
                if prop.type != "reference" or prop.value is None or prop.name == own_role:
                    continue
                if result_role is not None and prop.name.lower() != result_role.lower():
                    continue
                other = self.find_instance(_located(prop.value, ns), ctx)
                if other is None or any(paths_equal(other.path, seen.path) for seen in found):
                    continue
                if result_class is None or self._schema.is_subclass(ns, other.classname, result_class):
                    found.append(other)
        return found

    def references(self, path: CIMInstanceName, ctx: RequestContext,
                   **query: Unpack[ReferenceQuery]) -> list[CIMInstance]:
        """Association instances that refer to ``path``."""
        result_class = query.get("result_class")
        ns = self._namespace(path.namespace)
        self._check_result_class(ns, result_class)
        return [link for link, _ in self._links(path, ctx, result_class, query.get("role"))]


def _no_class(status: int, classname: str, namespace: str) -> CimFault:
    return CimFault(status, f"Class {classname!r} does not exist in {namespace}",
                    message_id="CimClassNotFound", classname=classname, namespace=namespace)


def _no_instance(path: CIMInstanceName) -> CimFault:
    return CimFault(pywbem.CIM_ERR_NOT_FOUND, f"No instance {path}", message_id="CimInstanceNotFound",
                    path=str(path))


def _located(path: CIMInstanceName, namespace: str) -> CIMInstanceName:
    located = path.copy()
    located.namespace = namespace
    located.host = None
    return located


def _names(property_list: Sequence[str] | None) -> list[str] | None:
    return None if property_list is None else list(property_list)


def _shaped(
    cls: CIMClass,
    local_only: bool,
    include_qualifiers: bool,
    include_class_origin: bool,
    property_list: Sequence[str] | None,
) -> CIMClass:
    result = copy.deepcopy(cls)  # the schema's classes are shared; never change them in place
    wanted = None if property_list is None else {name.lower() for name in property_list}
    for members in (result.properties, result.methods):
        for name in list(members):
            member = members[name]
            if (local_only and member.propagated) or (
                wanted is not None and members is result.properties and name.lower() not in wanted
            ):
                del members[name]
                continue
            if not include_class_origin:
                member.class_origin = None
                member.propagated = None
            if not include_qualifiers:
                member.qualifiers = {}
                if members is result.methods:
                    for param in member.parameters.values():
                        param.qualifiers = {}
    if not include_qualifiers:
        result.qualifiers = {}
    return result


def build_object_manager(runtime: CimRuntime) -> CimObjectManager:
    """An object manager with every provider module installed."""
    return CimObjectManager(runtime)
