"""The language of a CIM-XML reply: which one a request wants, and CIM error descriptions rendered in it.

Descriptions are rendered here, once, as a reply is built: the layers below raise errors with English text,
a catalog id and its arguments (``cim.errors.CimFault``, ``domain.errors.StandbyError``).
"""

from __future__ import annotations

from typing import Any

from pywbem import CIMError

from standby import i18n
from standby.cim.errors import CimFault
from standby.domain.errors import StandbyError

SUPPORTED = i18n.SUPPORTED_LANGUAGES
_ENGLISH = "en"
#: Keyword names of ``i18n.error_text`` itself; an error argument of that name cannot be passed on.
_RESERVED = frozenset({"message_id", "language", "message", "code"})


def pick_language(accept_language: str | None) -> str:
    """``"de"`` or ``"en"`` for an ``Accept-Language`` header value (None → English)."""
    return i18n.pick_language(accept_language)


def cim_status_text(code: int, language: str) -> str:
    """The name of a CIM status code (DSP0200 Table 1) in ``language``, e.g. 6 → "Nicht gefunden"."""
    message_id = f"CimStatus.{int(code)}"
    text = i18n.translate(message_id, language)
    return f"CIM status {int(code)}" if text == message_id else text


def describe_error(exc: CIMError, language: str) -> str:
    """The ``DESCRIPTION`` of an ``ERROR`` element for a reader of ``language``.

    A ``CimFault`` gets its catalog text; a bare ``CIMError`` (raised where no catalog id was given) keeps
    its English description, after the status name in the reader's language (pywbem's default English text
    for the status, when it was raised without one, gives way to that name).
    """
    english = str(exc.status_description or "")
    if isinstance(exc, CimFault):
        args: dict[str, Any] = {name: _argument(value, language) for name, value in exc.message_args.items()
                                if name not in _RESERVED}
        return i18n.error_text(exc.message_id, language, english, **args)
    own = exc.args[1] if len(exc.args) > 1 else None
    if language == _ENGLISH:
        return english
    status = cim_status_text(int(exc.status_code), language)
    return f"{status}: {own}" if own else status


def describe_standby_error(exc: StandbyError, language: str) -> str:
    """An engine error that reached an intrinsic operation, in ``language``."""
    args = {name: value for name, value in exc.args_map.items() if name not in _RESERVED}
    return i18n.error_text(exc.message_id, language, exc.message, code=int(exc.code), **args)


def _argument(value: object, language: str) -> object:
    return describe_standby_error(value, language) if isinstance(value, StandbyError) else value
