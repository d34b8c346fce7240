"""``CimFault``: a ``pywbem.CIMError`` that also carries a catalog message id and its arguments.

The object manager and the CIM-XML operations raise it with an English description; the CIM-XML edge renders
the description once, in the request's language (``standby.cimxml.language.describe_error``). To every other
reader it is a plain ``CIMError`` with an English ``status_description``.
"""

from __future__ import annotations

from pywbem import CIMError


class CimFault(CIMError):  # type: ignore[misc]  # pywbem ships no type information
    """A CIM status with an English description plus ``message_id`` and ``message_args`` for the catalog.

    An argument that is itself a ``StandbyError`` (the engine failure behind a CIM_ERR_FAILED) is rendered
    in the reader's language too.
    """

    def __init__(self, status_code: int, description: str, *, message_id: str, **args: object) -> None:
        super().__init__(status_code, description)
        self.message_id = message_id
        self.message_args: dict[str, object] = dict(args)
