"""Reading the named parameters of an intrinsic operation (``IPARAMVALUE``) with DSP0200's types and defaults.

Each operation declares the parameters it accepts; anything else, or a value of the wrong kind, is
CIM_ERR_INVALID_PARAMETER with a sentence naming the parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pywbem import CIM_ERR_INVALID_PARAMETER, CIMClassName, CIMInstanceName

from standby.cim.errors import CimFault

#: Accepted parameters of each operation, spelled as DSP0200 does.
SIGNATURES: dict[str, tuple[str, ...]] = {
    "GetClass": ("ClassName", "LocalOnly", "IncludeQualifiers", "IncludeClassOrigin", "PropertyList"),
    "EnumerateClasses": (
        "ClassName",
        "DeepInheritance",
        "LocalOnly",
        "IncludeQualifiers",
        "IncludeClassOrigin",
    ),
    "EnumerateClassNames": ("ClassName", "DeepInheritance"),
    "GetInstance": ("InstanceName", "LocalOnly", "IncludeQualifiers", "IncludeClassOrigin", "PropertyList"),
    "EnumerateInstances": (
        "ClassName",
        "LocalOnly",
        "DeepInheritance",
        "IncludeQualifiers",
        "IncludeClassOrigin",
        "PropertyList",
    ),
    "EnumerateInstanceNames": ("ClassName",),
    "Associators": (
        "ObjectName",
        "AssocClass",
        "ResultClass",
        "Role",
        "ResultRole",
        "IncludeQualifiers",
        "IncludeClassOrigin",
        "PropertyList",
    ),
    "AssociatorNames": ("ObjectName", "AssocClass", "ResultClass", "Role", "ResultRole"),
    "References": (
        "ObjectName",
        "ResultClass",
        "Role",
        "IncludeQualifiers",
        "IncludeClassOrigin",
        "PropertyList",
    ),
    "ReferenceNames": ("ObjectName", "ResultClass", "Role"),
    "ExecQuery": ("QueryLanguage", "Query"),
    "GetProperty": ("InstanceName", "PropertyName"),
}


def _invalid(message: str, message_id: str, **args: object) -> CimFault:
    return CimFault(CIM_ERR_INVALID_PARAMETER, message, message_id=message_id, **args)


class Params:
    """The parameters of one call, checked against the operation's signature (names case-insensitive)."""

    def __init__(self, operation: str, raw: Mapping[str, Any]) -> None:
        allowed = {name.lower(): name for name in SIGNATURES[operation]}
        self.operation = operation
        self.values: dict[str, Any] = {}
        for name, value in raw.items():
            canonical = allowed.get(name.lower())
            if canonical is None:
                raise _invalid(f"{operation} has no parameter {name!r}", "CimUnknownParameter",
                               operation=operation, parameter=name)
            self.values[canonical] = value

    def flag(self, name: str, default: bool) -> bool:
        """A boolean parameter (already decoded by the parser for the standard flags)."""
        value = self.values.get(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise _invalid(f"{name} must be TRUE or FALSE, not {value!r}", "CimParameterNotBoolean",
                       parameter=name, value=repr(value))

    def class_name(self, name: str, *, required: bool) -> str | None:
        """A class name parameter (``CLASSNAME``)."""
        value = self.values.get(name)
        if value is None:
            if required:
                raise self._missing(name)
            return None
        if isinstance(value, CIMClassName):
            return str(value.classname)
        if isinstance(value, str) and value.strip():
            # Role/AssocClass-style names sometimes arrive as VALUE; a class name is a plain CIM name.
            return value.strip()
        raise _invalid(f"{name} must be a class name", "CimParameterNotClassName", parameter=name)

    def instance_name(self, name: str) -> CIMInstanceName:
        """A required instance path (``INSTANCENAME``)."""
        value = self.values.get(name)
        if isinstance(value, CIMInstanceName):
            return value
        if value is None:
            raise self._missing(name)
        raise _invalid(f"{name} must be an instance name", "CimParameterNotInstanceName", parameter=name)

    def object_name(self) -> CIMInstanceName | CIMClassName:
        """``ObjectName`` of the association operations: an instance path or a class name."""
        value = self.values.get("ObjectName")
        if isinstance(value, (CIMInstanceName, CIMClassName)):
            return value
        if value is None:
            raise self._missing("ObjectName")
        raise _invalid("ObjectName must be an instance name or a class name", "CimParameterNotObjectName",
                       parameter="ObjectName")

    def string(self, name: str, *, required: bool = False) -> str | None:
        """A string parameter (``VALUE``)."""
        value = self.values.get(name)
        if value is None:
            if required:
                raise self._missing(name)
            return None
        if isinstance(value, str):
            return value
        raise _invalid(f"{name} must be a string", "CimParameterNotString", parameter=name)

    def property_list(self) -> list[str] | None:
        """``PropertyList``: None means all properties, ``[]`` none."""
        value = self.values.get("PropertyList")
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [v for v in value if v]
        raise _invalid("PropertyList must be an array of property names", "CimParameterNotPropertyList",
                       parameter="PropertyList")

    def _missing(self, name: str) -> CimFault:
        return _invalid(f"{self.operation} needs the parameter {name}", "CimParameterMissing",
                        operation=self.operation, parameter=name)
