"""What a parsed CIM-XML request is, independent of how it was parsed.

``wire.parse_request`` turns the body of a ``POST /cimom`` into one of these; the operation modules read them.
Values are pywbem objects (``CIMInstanceName``, ``CIMClassName``, ``CIMInstance``) or plain ``str`` /
``list[str | None]`` when the client sent no type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pywbem import CIMClassName, CIMInstanceName


class ProtocolError(Exception):
    """The request cannot be processed at the HTTP level (DSP0200 §7: a 4xx/5xx with a ``CIMError`` header).

    ``cim_error`` is the header value (``request-not-well-formed``, ``request-not-valid``,
    ``unsupported-cim-version``, ``unsupported-dtd-version``, ``unsupported-protocol-version``,
    ``multiple-requests-unsupported``, ``unsupported-operation``, ``header-mismatch``), ``status`` the HTTP
    status, ``message`` a readable sentence for the body.
    """

    def __init__(self, status: int, cim_error: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.cim_error = cim_error
        self.message = message


@dataclass(frozen=True, slots=True)
class ParamValue:
    """One ``PARAMVALUE`` of an extrinsic call.

    ``value`` is ``None`` (NULL), ``str`` (VALUE), ``list[str | None]`` (VALUE.ARRAY), ``CIMInstanceName`` /
    ``CIMClassName`` (any REF form) or a list of them (VALUE.REFARRAY). ``param_type`` is the PARAMTYPE (or
    TYPE) attribute when the client sent one; ``embedded`` is true when it marked the value as an embedded
    object.
    """

    name: str
    value: Any
    param_type: str | None = None
    embedded: bool = False


@dataclass(frozen=True, slots=True)
class IntrinsicCall:
    """An ``IMETHODCALL``: an operation on a namespace with named ``IPARAMVALUE`` parameters."""

    message_id: str
    method: str
    namespace: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExtrinsicCall:
    """A ``METHODCALL``: a method of a class (static) or of an instance."""

    message_id: str
    method: str
    target: CIMInstanceName | CIMClassName
    params: tuple[ParamValue, ...] = ()

    @property
    def namespace(self) -> str:
        """The namespace of the target path."""
        return self.target.namespace or ""


Call = IntrinsicCall | ExtrinsicCall
