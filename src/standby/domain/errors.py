"""The standby exception tree.

Every failure the engine reports is one of these; each carries the Hyper-V return code it maps to, a message
id for the catalog (``standby.i18n``) and the arguments that fill it. Adapters translate foreign exceptions
(QMP, sqlite3, httpx, OSError) into this tree once, at their edge; the CIM, REST and CLI surfaces map it to
their own form (return code / CIMError, HTTP status, one-line message and exit code).

::

    StandbyError                      32768 Failed
     ├── AccessDenied                 32769
     ├── NotSupported                 32770
     ├── OperationTimeout             32772
     ├── InvalidParameter             32773
     │    └── NotFound                32773 (an object the caller named does not exist)
     ├── InUse                        32774 (another operation runs on the element)
     ├── InvalidState                 32775
     ├── IncorrectDataType            32776
     ├── Unavailable                  32777 (a host or service cannot be reached)
     ├── OutOfMemory                  32778
     └── FileNotFound                 32779
"""

from __future__ import annotations

from standby.domain.enums import ReturnCode


class StandbyError(Exception):
    """Base of every error standby reports; ``code`` is the Hyper-V return code it maps to."""

    code: ReturnCode = ReturnCode.FAILED

    def __init__(self, message: str, *, message_id: str | None = None, **args: object) -> None:
        super().__init__(message)
        self.message = message
        self.message_id = message_id or type(self).__name__
        self.args_map: dict[str, object] = dict(args)

    def __str__(self) -> str:
        return self.message


class AccessDenied(StandbyError):
    """The caller or peer is not authorized."""

    code = ReturnCode.ACCESS_DENIED


class NotSupported(StandbyError):
    """The operation or parameter value is not supported (or not implemented yet)."""

    code = ReturnCode.NOT_SUPPORTED


class OperationTimeout(StandbyError):
    """The operation did not finish in time."""

    code = ReturnCode.TIMEOUT


class InvalidParameter(StandbyError):
    """A parameter value is missing, malformed or out of range."""

    code = ReturnCode.INVALID_PARAMETER


class NotFound(InvalidParameter):
    """An object the caller named (VM, job, recovery point, collection) does not exist."""


class InUse(StandbyError):
    """Another operation is already running on the element."""

    code = ReturnCode.SYSTEM_IN_USE


class InvalidState(StandbyError):
    """The element's mode or state does not allow the operation (hyperv-api §10)."""

    code = ReturnCode.INVALID_STATE


class IncorrectDataType(StandbyError):
    """A reference names an object of the wrong class, or a value has the wrong type."""

    code = ReturnCode.INCORRECT_DATA_TYPE


class Unavailable(StandbyError):
    """A host, VM process or service the operation needs cannot be reached."""

    code = ReturnCode.SYSTEM_NOT_AVAILABLE


class OutOfMemory(StandbyError):
    """Not enough memory or disk space."""

    code = ReturnCode.OUT_OF_MEMORY


class FileNotFound(StandbyError):
    """A file the operation needs (disk image, import folder) does not exist."""

    code = ReturnCode.FILE_NOT_FOUND
