"""Embedded-instance string parameters: CIM-XML (DTD 2.0) ``INSTANCE`` text in and out, through pywbem.

Hyper-V passes setting data (``ReplicationSettingData``, ``SettingData``, ``AuthorizationEntry``,
``ReplicationRelationship``, ``NetworkSettings[]``, …) as strings holding one serialized instance, the way
``GetText(WmiDtd20)`` writes it. Input is parsed with pywbem's tuple parser (a private module of pywbem,
used only here); output uses ``CIMInstance.tocimxmlstr()``.

Errors: text that is not one well-formed INSTANCE → ``InvalidParameter`` (32773); an instance of a class
that is not the declared one (or a subclass) → ``IncorrectDataType`` (32776).
"""

from __future__ import annotations

from typing import Any

import pywbem
from pywbem import CIMInstance
from pywbem._tupleparse import TupleParser

from standby.cim.schema import Schema
from standby.cim.values import typed_value
from standby.domain.errors import IncorrectDataType, InvalidParameter


def parse_instance(text: Any, *, parameter: str) -> CIMInstance:
    """One CIMInstance from CIM-XML INSTANCE text (or an instance a pywbem client passed as an object)."""
    if isinstance(text, CIMInstance):
        return text.copy()
    if not isinstance(text, str):
        raise InvalidParameter(
            f"Parameter {parameter} must be an embedded instance (CIM-XML INSTANCE text)",
            message_id="EmbeddedInstanceMalformed",
            parameter=parameter,
            reason="not a string",
        )
    try:
        parsed = TupleParser().parse_embeddedObject(text.strip())
    except (pywbem.ParseError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidParameter(
            f"Parameter {parameter} is not a well-formed embedded instance: {reason}",
            message_id="EmbeddedInstanceMalformed",
            parameter=parameter,
            reason=reason,
        ) from None
    if not isinstance(parsed, CIMInstance):
        raise InvalidParameter(
            f"Parameter {parameter} must hold an INSTANCE element, not a class",
            message_id="EmbeddedInstanceMalformed",
            parameter=parameter,
            reason="a CLASS element",
        )
    return parsed


def embedded_instance(
    text: Any, *, parameter: str, expected_class: str, namespace: str, schema: Schema
) -> CIMInstance:
    """Parse, check the class against the declaration, and type the properties from the class."""
    instance = parse_instance(text, parameter=parameter)
    if schema.find_class(namespace, instance.classname) is None or not schema.is_subclass(
        namespace, instance.classname, expected_class
    ):
        raise IncorrectDataType(
            f"Parameter {parameter} must hold an instance of {expected_class}, not {instance.classname}",
            message_id="EmbeddedInstanceWrongClass",
            parameter=parameter,
            expected=expected_class,
            actual=instance.classname,
        )
    return _typed(instance, parameter, namespace, schema)


def _typed(instance: CIMInstance, parameter: str, namespace: str, schema: Schema) -> CIMInstance:
    cls = schema.get_class(namespace, instance.classname)
    result = CIMInstance(cls.classname)
    for name, prop in instance.properties.items():
        declared = cls.properties.get(name)
        if declared is None:
            raise InvalidParameter(
                f"Parameter {parameter}: class {cls.classname} has no property {name}",
                message_id="EmbeddedInstanceUnknownProperty",
                parameter=parameter,
                property=name,
                classname=cls.classname,
            )
        if declared.type == "reference":
            result[declared.name] = prop.value
            continue
        value = typed_value(f"{parameter}.{declared.name}", declared.type, declared.is_array, prop.value)
        result[declared.name] = pywbem.CIMProperty(
            declared.name, value, type=declared.type, is_array=declared.is_array
        )
    return result


def serialize(instance: CIMInstance) -> str:
    """The instance as CIM-XML INSTANCE text (what embedded-instance out-parameters carry)."""
    bare = instance.copy()
    bare.path = None
    return str(bare.tocimxmlstr())


def property_value(instance: CIMInstance, name: str, default: Any = None) -> Any:
    """A property's value, ``default`` when absent or NULL (names are case-insensitive)."""
    prop = instance.properties.get(name)
    return default if prop is None or prop.value is None else prop.value
