"""Method dispatch: find the method, type and check every in-parameter, run the handler, map the outcome.

Parameter checks, in order, with the return code a failure gives (in the method's own code table):
- a name the method does not declare → CIMError CIM_ERR_INVALID_PARAMETER (DSP0200);
- a value that does not parse as the declared type (``"abc"`` for a uint16, 70000 for a uint16, a bad
  datetime, an array for a scalar) or is outside the parameter's ValueMap → 32773;
- a REF that names no instance (unknown class, no such keys) → 32773;
- a REF naming an instance of a class that is not the declared one or a subclass → 32776;
- an embedded instance that is not well-formed CIM-XML → 32773; of the wrong class → 32776.
Then the handler runs; a ``StandbyError`` becomes its ``code``, an unexpected exception 32768 (logged with
its traceback, never sent to the client). Methods that use the CIM RequestStateChange table (jobs, VMs), the
0/1 table (Msvm_ReplicationService state methods) or the Failover table translate the code accordingly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

import pywbem
from pywbem import CIMClassName, CIMError, CIMInstance, CIMInstanceName, CIMMethod, CIMParameter

from standby.cim import embedded
from standby.cim.backend import RequestContext
from standby.cim.errors import CimFault
from standby.cim.instances import cim_value
from standby.cim.providers.registry import MethodCall, MethodResult, ProviderRegistry
from standby.cim.runtime import CimRuntime
from standby.cim.schema import Schema
from standby.cim.values import typed_value, value_in_value_map
from standby.domain.enums import ReturnCode, StateChangeCode
from standby.domain.errors import IncorrectDataType, InvalidParameter, NotFound, NotSupported, StandbyError

log = logging.getLogger(__name__)

InstanceFinder = Callable[[CIMInstanceName], CIMInstance | None]


class CodeTable(Enum):
    """Which return-code table a method uses (decided from its ValueMap)."""

    STANDARD = "standard"  # hyperv-api §2.3: 0, 4096, 32768-32779
    STATE_CHANGE = "state_change"  # CIM RequestStateChange: 0-6, 4096-4099
    BINARY = "binary"  # 0 done, 1 not supported
    FAILOVER = "failover"  # 0-4 of CIM_RedundancySet.Failover


_STATE_CHANGE_CODES: Mapping[ReturnCode, int] = {
    ReturnCode.NOT_SUPPORTED: StateChangeCode.NOT_SUPPORTED,
    ReturnCode.TIMEOUT: StateChangeCode.TIMEOUT,
    ReturnCode.INVALID_PARAMETER: StateChangeCode.INVALID_PARAMETER,
    ReturnCode.INCORRECT_DATA_TYPE: StateChangeCode.INVALID_PARAMETER,
    ReturnCode.SYSTEM_IN_USE: StateChangeCode.IN_USE,
    ReturnCode.INVALID_STATE: StateChangeCode.INVALID_STATE_TRANSITION,
    ReturnCode.STATUS_UNKNOWN: StateChangeCode.UNKNOWN_ERROR,
}
_FAILOVER_CODES: Mapping[ReturnCode, int] = {
    ReturnCode.NOT_SUPPORTED: 1,
    ReturnCode.SYSTEM_IN_USE: 3,
    ReturnCode.INVALID_PARAMETER: 4,
    ReturnCode.INCORRECT_DATA_TYPE: 4,
}


def code_table(method: CIMMethod) -> CodeTable:
    """The code table a method's ValueMap announces (STANDARD when it has none)."""
    qual = method.qualifiers.get("ValueMap")
    values = set(qual.value) if qual is not None and qual.value else set()
    if "32775" in values:
        return CodeTable.STANDARD
    if "4097" in values:
        return CodeTable.STATE_CHANGE
    if values == {"0", "1"}:
        return CodeTable.BINARY
    texts = method.qualifiers.get("Values")
    if texts is not None and "Parameter Error" in (texts.value or []):
        return CodeTable.FAILOVER
    return CodeTable.STANDARD


def failure_code(table: CodeTable, code: ReturnCode) -> int:
    """A standard failure code in the method's own table."""
    if table is CodeTable.STANDARD:
        return int(code)
    if table is CodeTable.BINARY:
        return 1
    if table is CodeTable.STATE_CHANGE:
        return int(_STATE_CHANGE_CODES.get(code, StateChangeCode.FAILED))
    return _FAILOVER_CODES.get(code, 2)


class Dispatcher:
    """Types parameters from the schema and runs registered method handlers."""

    def __init__(self, schema: Schema, registry: ProviderRegistry, runtime: CimRuntime,
                 find_instance: InstanceFinder) -> None:
        self._schema = schema
        self._registry = registry
        self._runtime = runtime
        self._find = find_instance

    def invoke(  # noqa: PLR0917 - mirrors ObjectManager.invoke_method plus the resolved target
        self,
        namespace: str,
        target: CIMInstanceName | CIMClassName,
        target_instance: CIMInstance | None,
        method_name: str,
        params: Mapping[str, Any],
        ctx: RequestContext,
    ) -> tuple[Any, dict[str, Any]]:
        """Run ``method_name`` on the target (already resolved by the object manager)."""
        classname = target_instance.classname if target_instance is not None else target.classname
        cls = self._schema.get_class(namespace, classname)
        method = cls.methods.get(method_name)
        if method is None:
            raise CimFault(pywbem.CIM_ERR_METHOD_NOT_FOUND, f"{cls.classname} has no method {method_name!r}",
                           message_id="CimMethodNotFound", classname=cls.classname, method=method_name)
        table = code_table(method)
        declared = self._declared_inputs(method, params)
        try:
            typed, referenced = self._type_inputs(namespace, method, declared)
            handler = self._registry.method_handler(
                namespace, self._schema.superclasses(namespace, cls.classname), method.name)
            if handler is None:
                raise NotSupported(f"{cls.classname}.{method.name} is not implemented yet",
                                   message_id="NotImplementedYet", method=method.name)
            call = MethodCall(namespace, cls.classname, method.name, target, target_instance, typed,
                              referenced, ctx, self._runtime)
            result = handler(call)
            out = self._typed_outputs(method, result)
            return _return_value(method, result.return_value), out
        except StandbyError as exc:
            log.info("%s.%s refused with %d (%s): %s", cls.classname, method.name, int(exc.code),
                     exc.message_id, exc.message)
            return _return_value(method, failure_code(table, exc.code)), self._empty_outputs(method)
        except CIMError:
            raise
        except Exception:
            log.exception("%s.%s failed unexpectedly", cls.classname, method.name)
            return _return_value(method, failure_code(table, ReturnCode.FAILED)), self._empty_outputs(method)

    # -- in-parameters ------------------------------------------------------------------------------------

    @staticmethod
    def _declared_inputs(method: CIMMethod, params: Mapping[str, Any]) -> dict[str, tuple[CIMParameter, Any]]:
        """Given values keyed by declared parameter; unknown names are a CIM_ERR_INVALID_PARAMETER."""
        result: dict[str, tuple[CIMParameter, Any]] = {}
        for name, value in params.items():
            param = method.parameters.get(name)
            if param is None:
                raise CimFault(pywbem.CIM_ERR_INVALID_PARAMETER, f"{method.name} has no parameter {name!r}",
                               message_id="CimUnknownParameter", operation=method.name, parameter=name)
            if _is_input(param):
                result[param.name] = (param, value)
        return result

    def _type_inputs(
        self, namespace: str, method: CIMMethod, declared: dict[str, tuple[CIMParameter, Any]]
    ) -> tuple[dict[str, Any], dict[str, CIMInstance]]:
        typed: dict[str, Any] = {p.name: None for p in method.parameters.values() if _is_input(p)}
        referenced: dict[str, CIMInstance] = {}
        for name, (param, value) in declared.items():
            if value is None:
                continue
            if param.type == "reference":
                path, instance = self._reference(namespace, param, value)
                typed[name], referenced[name] = path, instance
            elif _embedded_class(param) is not None:
                typed[name] = self._embedded(namespace, param, value)
            else:
                typed[name] = typed_value(name, param.type, param.is_array, value)
                _check_value_map(param, typed[name])
        return typed, referenced

    def _reference(
        self, namespace: str, param: CIMParameter, value: Any
    ) -> tuple[CIMInstanceName, CIMInstance]:
        path = _as_path(param.name, value)
        ref_ns = self._schema.canonical_namespace(path.namespace) if path.namespace else namespace
        if ref_ns is None or self._schema.find_class(ref_ns, path.classname) is None:
            raise NotFound(f"{param.name} names {path.classname}, which does not exist in {path.namespace}",
                           message_id="ReferenceNotFound", parameter=param.name, path=str(path))
        expected = param.reference_class or "CIM_ManagedElement"
        if not self._schema.is_subclass(ref_ns, path.classname, expected):
            raise _wrong_class(param.name, expected, path.classname)
        located = path.copy()
        located.namespace = ref_ns
        located.host = None
        instance = self._find(located)
        if instance is None:
            raise NotFound(f"{param.name} names no existing instance: {path}",
                           message_id="ReferenceNotFound", parameter=param.name, path=str(path))
        if not self._schema.is_subclass(ref_ns, instance.classname, expected):
            raise _wrong_class(param.name, expected, instance.classname)
        return instance.path, instance

    def _embedded(self, namespace: str, param: CIMParameter, value: Any) -> Any:
        expected = _embedded_class(param) or ""
        if param.is_array:
            items = value if isinstance(value, list | tuple) else [value]
            return [embedded.embedded_instance(item, parameter=param.name, expected_class=expected,
                                               namespace=namespace, schema=self._schema) for item in items]
        if isinstance(value, list | tuple):
            raise InvalidParameter(f"Parameter {param.name} takes one embedded instance, not an array",
                                   message_id="InvalidParameterValue", parameter=param.name)
        return embedded.embedded_instance(value, parameter=param.name, expected_class=expected,
                                          namespace=namespace, schema=self._schema)

    # -- out-parameters -----------------------------------------------------------------------------------

    @staticmethod
    def _empty_outputs(method: CIMMethod) -> dict[str, Any]:
        return {p.name: None for p in method.parameters.values() if _is_output(p)}

    def _typed_outputs(self, method: CIMMethod, result: MethodResult) -> dict[str, Any]:
        out = self._empty_outputs(method)
        for name, value in result.out.items():
            param = method.parameters.get(name)
            if param is None or not _is_output(param):
                raise KeyError(f"{method.name} has no out-parameter {name!r}")
            out[param.name] = _out_value(param, value)
        return out


def _return_value(method: CIMMethod, value: int) -> Any:
    return cim_value(method.return_type or "uint32", int(value))


def _is_input(param: CIMParameter) -> bool:
    qual = param.qualifiers.get("In")
    return qual is None or bool(qual.value)


def _is_output(param: CIMParameter) -> bool:
    qual = param.qualifiers.get("Out")
    return qual is not None and bool(qual.value)


def _embedded_class(param: CIMParameter) -> str | None:
    qual = param.qualifiers.get("EmbeddedInstance")
    return str(qual.value) if qual is not None and qual.value else None


def _out_value(param: CIMParameter, value: Any) -> Any:
    if value is None:
        return None
    if param.type == "reference":
        return value
    if _embedded_class(param) is not None:
        if param.is_array:
            return [_embedded_text(item) for item in value]
        return _embedded_text(value)
    return cim_value(param.type, value)


def _embedded_text(value: Any) -> str:
    return embedded.serialize(value) if isinstance(value, CIMInstance) else str(value)


def _as_path(name: str, value: Any) -> CIMInstanceName:
    if isinstance(value, CIMInstanceName):
        return value
    if isinstance(value, str):
        try:
            return CIMInstanceName.from_wbem_uri(value.strip())
        except ValueError:
            pass
    raise InvalidParameter(f"Parameter {name} must be an object path (a reference)",
                           message_id="InvalidParameterValue", parameter=name)


def _wrong_class(name: str, expected: str, actual: str) -> IncorrectDataType:
    return IncorrectDataType(f"{name} must name an instance of {expected}, not {actual}",
                             message_id="ReferenceWrongClass", parameter=name, expected=expected,
                             actual=actual)


def _check_value_map(param: CIMParameter, value: Any) -> None:
    qual = param.qualifiers.get("ValueMap")
    if qual is None or not qual.value or value is None:
        return
    values = value if isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, int) and not value_in_value_map(int(item), qual.value):
            allowed = ", ".join(v for v in qual.value if v != "..")
            raise InvalidParameter(
                f"Parameter {param.name} value {int(item)} is not supported; allowed: {allowed}",
                message_id="UnsupportedParameterValue", parameter=param.name, value=int(item),
                allowed=allowed)
