"""The intrinsic operations (DSP0200 §5.3) on top of ``cim.backend.ObjectManager``.

Each handler takes the operation context, the served namespace and the checked parameters, and returns the
children of ``IRETURNVALUE`` (or None for an empty response). Errors are ``pywbem.CIMError``.
Implemented: GetClass, EnumerateClasses, EnumerateClassNames, GetInstance, EnumerateInstances,
EnumerateInstanceNames, GetProperty, Associators, AssociatorNames, References, ReferenceNames,
ExecQuery (WQL).
Everything else (writes, qualifiers, pull operations) answers CIM_ERR_NOT_SUPPORTED so clients fall back.
Errors raised here are ``CimFault``s: the server renders their descriptions in the request's language.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pywbem import (
    CIM_ERR_INVALID_CLASS,
    CIM_ERR_INVALID_QUERY,
    CIM_ERR_NO_SUCH_PROPERTY,
    CIM_ERR_NOT_FOUND,
    CIM_ERR_NOT_SUPPORTED,
    CIM_ERR_QUERY_LANGUAGE_NOT_SUPPORTED,
    CIMClass,
    CIMError,
    CIMInstance,
    CIMInstanceName,
)

from standby.cim.errors import CimFault
from standby.cimxml import wire, wql
from standby.cimxml.context import Operation
from standby.cimxml.params import SIGNATURES, Params

Handler = Callable[[Operation, str, Params], Any]


def run(op: Operation, method: str, namespace: str, raw_params: dict[str, Any]) -> Any:
    """Run one intrinsic operation; returns the IRETURNVALUE content (element, list, or None)."""
    canonical = _canonical_name(method)
    if canonical is None:
        raise CimFault(CIM_ERR_NOT_SUPPORTED, f"Operation {method} is not supported by this server",
                       message_id="CimOperationNotSupported", operation=method)
    served = op.namespace(namespace)
    return _HANDLERS[canonical](op, served, Params(canonical, raw_params))


def _canonical_name(method: str) -> str | None:
    for name in SIGNATURES:
        if name.lower() == method.lower():
            return name
    return None


# ------------------------------------------------------------------------------------------------ classes


def _get_class(op: Operation, ns: str, p: Params) -> Any:
    cls = op.om.get_class(
        ns,
        p.class_name("ClassName", required=True) or "",
        local_only=p.flag("LocalOnly", True),
        include_qualifiers=p.flag("IncludeQualifiers", True),
        include_class_origin=p.flag("IncludeClassOrigin", False),
        property_list=p.property_list(),
    )
    return wire.class_element(cls)


def _classes(op: Operation, ns: str, p: Params) -> list[CIMClass]:
    classname = p.class_name("ClassName", required=False)
    if classname is not None:
        try:
            op.om.get_class(ns, classname)
        except CIMError as exc:
            # GetClass says NOT_FOUND; for the enumerations DSP0200 wants INVALID_CLASS.
            if exc.status_code == CIM_ERR_NOT_FOUND:
                raise CimFault(CIM_ERR_INVALID_CLASS, f"Class {classname!r} does not exist in {ns}",
                               message_id="CimClassNotFound", classname=classname, namespace=ns) from None
            raise
    return op.om.enumerate_classes(ns, classname, deep_inheritance=p.flag("DeepInheritance", False))


def _enumerate_classes(op: Operation, ns: str, p: Params) -> Any:
    shaped = [
        _shape_class(
            cls,
            p.flag("LocalOnly", True),
            p.flag("IncludeQualifiers", True),
            p.flag("IncludeClassOrigin", False),
        )
        for cls in _classes(op, ns, p)
    ]
    return [wire.class_element(cls) for cls in shaped]


def _enumerate_class_names(op: Operation, ns: str, p: Params) -> Any:
    return [wire.class_name_element(cls.classname) for cls in _classes(op, ns, p)]


def _shape_class(cls: CIMClass, local_only: bool, qualifiers: bool, class_origin: bool) -> CIMClass:
    """Apply LocalOnly / IncludeQualifiers / IncludeClassOrigin to a class the object manager returned."""
    shaped = cls.copy()
    members = [shaped.properties, shaped.methods]
    for table in members:
        for name in list(table):
            member = table[name]
            if local_only and member.class_origin and member.class_origin.lower() != cls.classname.lower():
                del table[name]
                continue
            if not class_origin:
                member.class_origin = None
            if not qualifiers:
                member.qualifiers = {}
                for param in getattr(member, "parameters", {}).values():
                    param.qualifiers = {}
    if not qualifiers:
        shaped.qualifiers = {}
    return shaped


# ---------------------------------------------------------------------------------------------- instances


def _get_instance(op: Operation, ns: str, p: Params) -> Any:
    path = op.local_path(p.instance_name("InstanceName"), ns)
    inst = op.om.get_instance(path, op.ctx, property_list=p.property_list())
    return wire.instance_element(inst)


def _enumerate(op: Operation, ns: str, p: Params, *, property_list: list[str] | None) -> list[CIMInstance]:
    classname = p.class_name("ClassName", required=True) or ""
    return op.om.enumerate_instances(
        ns, classname, op.ctx, deep_inheritance=p.flag("DeepInheritance", True), property_list=property_list
    )


def _enumerate_instances(op: Operation, ns: str, p: Params) -> Any:
    return [wire.named_instance_element(i) for i in _enumerate(op, ns, p, property_list=p.property_list())]


def _enumerate_instance_names(op: Operation, ns: str, p: Params) -> Any:
    return [wire.instance_name_element(i.path) for i in _enumerate(op, ns, p, property_list=None)]


def _get_property(op: Operation, ns: str, p: Params) -> Any:
    name = p.string("PropertyName", required=True) or ""
    inst = op.om.get_instance(op.local_path(p.instance_name("InstanceName"), ns), op.ctx)
    if name not in inst.properties:
        raise CimFault(CIM_ERR_NO_SUCH_PROPERTY, f"{inst.classname} has no property {name!r}",
                       message_id="CimNoSuchProperty", classname=inst.classname, property=name)
    return wire.value_element(inst.properties[name].value)


# ------------------------------------------------------------------------------------------- associations


def _object_name(op: Operation, ns: str, p: Params) -> CIMInstanceName:
    target = p.object_name()
    if not isinstance(target, CIMInstanceName):
        raise CimFault(
            CIM_ERR_NOT_SUPPORTED, "Association queries on classes are not supported; name an instance",
            message_id="CimAssociationOfClass",
        )
    return op.local_path(target, ns)


def _associated(op: Operation, ns: str, p: Params) -> list[CIMInstance]:
    return op.om.associators(
        _object_name(op, ns, p),
        op.ctx,
        assoc_class=p.class_name("AssocClass", required=False),
        result_class=p.class_name("ResultClass", required=False),
        role=p.string("Role"),
        result_role=p.string("ResultRole"),
    )


def _referencing(op: Operation, ns: str, p: Params) -> list[CIMInstance]:
    return op.om.references(
        _object_name(op, ns, p),
        op.ctx,
        result_class=p.class_name("ResultClass", required=False),
        role=p.string("Role"),
    )


def _with_paths(op: Operation, ns: str, insts: list[CIMInstance], p: Params | None) -> list[CIMInstance]:
    property_list = p.property_list() if p is not None else None
    result = []
    for inst in insts:
        shaped = wql.project(inst, tuple(property_list) if property_list is not None else None)
        shaped.path = op.full_path(inst.path, ns)
        result.append(shaped)
    return result


def _associators(op: Operation, ns: str, p: Params) -> Any:
    return [wire.object_with_path_element(i) for i in _with_paths(op, ns, _associated(op, ns, p), p)]


def _associator_names(op: Operation, ns: str, p: Params) -> Any:
    return [wire.object_path_element(op.full_path(i.path, ns)) for i in _associated(op, ns, p)]


def _references(op: Operation, ns: str, p: Params) -> Any:
    return [wire.object_with_path_element(i) for i in _with_paths(op, ns, _referencing(op, ns, p), p)]


def _reference_names(op: Operation, ns: str, p: Params) -> Any:
    return [wire.object_path_element(op.full_path(i.path, ns)) for i in _referencing(op, ns, p)]


# ------------------------------------------------------------------------------------------------- query


def _exec_query(op: Operation, ns: str, p: Params) -> Any:
    language = p.string("QueryLanguage", required=True) or ""
    if language.strip().upper() != "WQL":
        raise CimFault(
            CIM_ERR_QUERY_LANGUAGE_NOT_SUPPORTED, f"Query language {language!r} is not supported; use WQL",
            message_id="CimQueryLanguageNotSupported", query_language=language,
        )
    try:
        query = wql.parse(p.string("Query", required=True) or "")
    except wql.WqlError as exc:
        raise _invalid_query(exc) from None
    try:
        cls = op.om.get_class(ns, query.classname, local_only=False, include_qualifiers=False)
    except CIMError as exc:
        if exc.status_code in (CIM_ERR_INVALID_CLASS, CIM_ERR_NOT_FOUND):
            raise CimFault(CIM_ERR_INVALID_QUERY, f"Invalid WQL: no class {query.classname!r}",
                           message_id="CimQueryClassNotFound", classname=query.classname) from None
        raise
    try:
        wql.check_properties(query, cls.properties)
    except wql.WqlError as exc:
        raise _invalid_query(exc) from None
    found = op.om.enumerate_instances(ns, cls.classname, op.ctx, deep_inheritance=True)
    selected = []
    for inst in found:
        if wql.matches(query.where, inst):
            shaped = wql.project(inst, query.properties)
            shaped.path = op.full_path(inst.path, ns)
            selected.append(wire.object_with_path_element(shaped))
    return selected


def _invalid_query(exc: wql.WqlError) -> CimFault:
    # The parser's reason quotes the query, so it stays as written in either language.
    return CimFault(CIM_ERR_INVALID_QUERY, f"Invalid WQL: {exc}", message_id="CimInvalidQuery",
                    reason=str(exc))


_HANDLERS: dict[str, Handler] = {
    "GetClass": _get_class,
    "EnumerateClasses": _enumerate_classes,
    "EnumerateClassNames": _enumerate_class_names,
    "GetInstance": _get_instance,
    "EnumerateInstances": _enumerate_instances,
    "EnumerateInstanceNames": _enumerate_instance_names,
    "GetProperty": _get_property,
    "Associators": _associators,
    "AssociatorNames": _associator_names,
    "References": _references,
    "ReferenceNames": _reference_names,
    "ExecQuery": _exec_query,
}
