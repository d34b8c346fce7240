"""InvokeMethod (extrinsic calls): parameters in, return value and out-parameters back.

In: every REF form a client sends (LOCALINSTANCEPATH, INSTANCEPATH with HOST, INSTANCENAME, VALUE.REFERENCE
with or without PARAMTYPE) becomes a ``CIMInstanceName`` without host in the served namespace; a value with a
PARAMTYPE is typed when it parses (else passed as sent, so the object manager answers 32773); untyped values
stay ``str`` / ``list[str]`` — the object manager types them from the method's declaration.
Out: ``RETURNVALUE PARAMTYPE=…`` and one ``PARAMVALUE`` per non-NULL out-parameter, with its declared
type; string out-parameters declared ``EmbeddedInstance`` (and ``CIMInstance`` values) carry
``EmbeddedObject="instance"``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pywbem
from pywbem import CIMClassName, CIMError, CIMInstance, CIMInstanceName, CIMMethod, NocaseDict

from standby.cimxml import wire
from standby.cimxml.context import Operation
from standby.cimxml.messages import ExtrinsicCall, ParamValue

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Declared:
    cim_type: str | None
    embedded: bool


def run(op: Operation, call: ExtrinsicCall) -> Any:
    """Invoke the method; returns the ``METHODRESPONSE`` element."""
    namespace = op.namespace(call.namespace)
    target: CIMInstanceName | CIMClassName
    if isinstance(call.target, CIMInstanceName):
        target = op.local_path(call.target, namespace)
    else:
        target = op.local_class_path(call.target, namespace)
    params = NocaseDict()
    for param in call.params:
        params[param.name] = _in_value(op, param, namespace)
    return_value, out_params = op.om.invoke_method(target, call.method, params, op.ctx)
    method = _method_declaration(op, namespace, target.classname, call.method)
    return wire.method_response(
        call.method,
        wire.return_value_element(return_value, _return_type(return_value, method)),
        # A NULL out-parameter is left out (as WMI does): pywbemcli cannot print a NULL reference.
        [
            _out_param(op, namespace, name, value, method)
            for name, value in out_params.items()
            if value is not None
        ],
    )


# ------------------------------------------------------------------------------------------------- input


def _in_value(op: Operation, param: ParamValue, namespace: str) -> Any:
    value = param.value
    if isinstance(value, CIMInstanceName):
        return op.local_path(value, namespace)
    if isinstance(value, CIMClassName):
        return op.local_class_path(value, namespace)
    if isinstance(value, CIMInstance):
        # DSP0201 2.4 lets a client send the INSTANCE element itself; the object manager takes the text form.
        return value.tocimxmlstr()
    if isinstance(value, list):
        return [_in_item(op, v, param.param_type, namespace) for v in value]
    if isinstance(value, str):
        return _typed(value, param.param_type)
    return value


def _in_item(op: Operation, value: Any, param_type: str | None, namespace: str) -> Any:
    if isinstance(value, CIMInstanceName):
        return op.local_path(value, namespace)
    if isinstance(value, str):
        return _typed(value, param_type)
    return value


def _typed(value: str, param_type: str | None) -> Any:
    if param_type is None or param_type in ("string", "reference"):
        return value
    try:
        return pywbem.cimvalue(value.strip(), param_type)
    except (ValueError, TypeError):
        return value


# ------------------------------------------------------------------------------------------------ output


def _method_declaration(op: Operation, namespace: str, classname: str, method: str) -> CIMMethod | None:
    """The method as the class declares it, for the out-parameters' types; None when it cannot be read.

    Classes do not change while the server runs, and GetClass copies the whole class, so declarations
    are remembered per server (``op.declarations``).
    """
    key = (namespace.lower(), classname.lower(), method.lower())
    if key in op.declarations:
        return op.declarations[key]
    try:
        cls = op.om.get_class(namespace, classname, local_only=False, include_qualifiers=True)
    except CIMError:
        return None
    found: CIMMethod | None = cls.methods.get(method)
    op.declarations[key] = found
    return found


def _declared(method: CIMMethod | None, name: str) -> _Declared:
    if method is None or name not in method.parameters:
        return _Declared(None, False)
    param = method.parameters[name]
    embedded = any(q in param.qualifiers for q in ("EmbeddedInstance", "EmbeddedObject"))
    return _Declared(param.type, embedded)


def _return_type(value: Any, method: CIMMethod | None) -> str | None:
    if method is not None and method.return_type:
        return str(method.return_type)
    return _infer_type(value)


def _out_param(op: Operation, namespace: str, name: str, value: Any, method: CIMMethod | None) -> Any:
    declared = _declared(method, name)
    if isinstance(value, CIMInstanceName):
        value = op.full_path(value, namespace)
    elif isinstance(value, list):
        value = [op.full_path(v, namespace) if isinstance(v, CIMInstanceName) else v for v in value]
    cim_type = declared.cim_type or _infer_type(value)
    embedded = declared.embedded and cim_type == "string"
    return wire.param_value_element(name, value, cim_type, embedded=embedded)


def _infer_type(value: Any) -> str | None:
    if value is None or (isinstance(value, list) and not value):
        return None
    if isinstance(value, CIMInstance) or (isinstance(value, list) and isinstance(value[0], CIMInstance)):
        return "string"
    try:
        return str(pywbem.cimtype(value[0] if isinstance(value, list) else value))
    except (TypeError, ValueError):
        log.warning("cannot tell the CIM type of an out-parameter value %r", value)
        return None
