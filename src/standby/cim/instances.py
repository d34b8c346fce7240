"""Building CIM instances and paths from Python values, typed by the class declaration.

Providers hand plain Python values (ints, IntEnums, str, bool, aware ``datetime``, ``timedelta``, lists,
``CIMInstanceName``) to ``make_instance``; it looks up each property in the resolved class, converts the
value to the declared CIM type, fills every other declared property with NULL (as WMI does) and sets the
instance path from the key properties. ``paths_equal`` compares paths the way WMI does: class and key names
case-insensitively, string key values case-insensitively, host and namespace ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time, timedelta
from enum import Enum
from typing import Any

import pywbem
from pywbem import CIMClass, CIMInstance, CIMInstanceName, CIMProperty

from standby.cim.schema import Schema
from standby.cim.values import cim_datetime, cim_interval, cim_time_of_day


def cim_value(cim_type: str, value: Any) -> Any:
    """A Python value in the pywbem type for ``cim_type`` (lists element-wise); None stays None."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return [cim_value(cim_type, item) for item in value]
    if cim_type == "datetime":
        if isinstance(value, datetime):
            return cim_datetime(value)
        if isinstance(value, timedelta):
            return cim_interval(value)
        if isinstance(value, time):
            return cim_time_of_day(value)
        return pywbem.CIMDateTime(value)
    if cim_type == "boolean":
        return bool(value)
    if cim_type in ("string", "char16"):
        return value.value if isinstance(value, Enum) and isinstance(value.value, str) else str(value)
    if cim_type == "reference":
        return value
    if cim_type.startswith(("uint", "sint")):
        return pywbem.type_from_name(cim_type)(int(value))
    return pywbem.type_from_name(cim_type)(value)


def key_names(cls: CIMClass) -> list[str]:
    """Names of the key properties of a class, in declaration order."""
    return [p.name for p in cls.properties.values() if p.qualifiers.get("Key") and p.qualifiers["Key"].value]


def make_instance(schema: Schema, namespace: str, classname: str, values: Mapping[str, Any]) -> CIMInstance:
    """A full instance of ``classname`` with its path; unknown property names are a programming error."""
    specs = schema.property_specs(namespace, classname)
    given = {name.lower(): value for name, value in values.items()}
    known = {spec.name.lower() for spec in specs}
    unknown = [name for name in values if name.lower() not in known]
    if unknown:
        raise KeyError(f"{classname} has no properties {unknown}")
    real_name = schema.get_class(namespace, classname).classname
    instance = CIMInstance(real_name)
    keys: dict[str, Any] = {}
    for spec in specs:
        value = cim_value(spec.type, given.get(spec.name.lower()))
        instance.properties[spec.name] = CIMProperty(
            spec.name, value, type=spec.type, is_array=spec.is_array,
            reference_class=spec.reference_class, embedded_object=spec.embedded_object,
        )
        if spec.is_key:
            keys[spec.name] = value
    instance.path = CIMInstanceName(real_name, keybindings=keys, namespace=namespace)
    return instance


def make_path(schema: Schema, namespace: str, classname: str, keys: Mapping[str, Any]) -> CIMInstanceName:
    """The path of an instance of ``classname`` with these key values (typed by the class)."""
    cls = schema.get_class(namespace, classname)
    bindings = {}
    for name, value in keys.items():
        prop = cls.properties[name]
        bindings[prop.name] = cim_value(prop.type, value)
    return CIMInstanceName(cls.classname, keybindings=bindings, namespace=namespace)


def _key_value(value: Any) -> Any:
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, CIMInstanceName):
        return _path_key(value)
    return value


def _path_key(path: CIMInstanceName) -> tuple[str, frozenset[tuple[str, Any]]]:
    return (
        path.classname.lower(),
        frozenset((name.lower(), _key_value(value)) for name, value in path.keybindings.items()),
    )


def paths_equal(a: CIMInstanceName, b: CIMInstanceName) -> bool:
    """Same class and keys (case-insensitive names and string values; host and namespace ignored)."""
    return _path_key(a) == _path_key(b)


def keys_match(path: CIMInstanceName, instance_path: CIMInstanceName) -> bool:
    """Whether ``path``'s key values equal the instance's (the class may be an ancestor of the instance's)."""
    wanted = {name.lower(): _key_value(value) for name, value in path.keybindings.items()}
    have = {name.lower(): _key_value(value) for name, value in instance_path.keybindings.items()}
    return bool(wanted) and wanted == have


def filtered(instance: CIMInstance, property_list: list[str] | tuple[str, ...] | None) -> CIMInstance:
    """A copy holding only the listed properties (all when None)."""
    if property_list is None:
        return instance
    wanted = {name.lower() for name in property_list}
    result = instance.copy()
    for name in list(result.properties):
        if name.lower() not in wanted:
            del result.properties[name]
    return result
