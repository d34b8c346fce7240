"""CIM values: typing untyped input from its declaration, and Python values into CIM form.

Clients such as SBLIM wbemcli send method parameters without PARAMTYPE, so a value may arrive as ``str``
(scalars), ``list[str]`` (arrays) or ``CIMInstanceName`` (references). ``typed_value`` turns such a value
into the pywbem type its declaration names, and raises ``InvalidParameter`` (32773) when it cannot:
a number outside the type's range, ``"maybe"`` for a boolean, a malformed datetime.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pywbem
from pywbem import CIMDateTime, CIMInstanceName

from standby.domain.errors import InvalidParameter

_INTEGER_TYPES = {"uint8", "sint8", "uint16", "sint16", "uint32", "sint32", "uint64", "sint64"}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def cim_datetime(value: datetime | None) -> CIMDateTime | None:
    """A point in time as a CIM datetime (UTC); None stays None (a NULL property)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return CIMDateTime(value.astimezone(UTC))


def cim_interval(value: timedelta) -> CIMDateTime:
    """A duration as a CIM interval ``ddddddddHHMMSS.mmmmmm:000``."""
    return CIMDateTime(max(value, timedelta(0)))


def cim_time_of_day(value: time) -> CIMDateTime:
    """A time of day as Hyper-V writes it: an interval with zero days (``00000000183000.000000:000``)."""
    return CIMDateTime(timedelta(hours=value.hour, minutes=value.minute, seconds=value.second))


def time_of_day(value: CIMDateTime | None, default: time) -> time:
    """The time of day in a CIM interval or datetime (the date part is ignored); ``default`` when NULL."""
    if value is None:
        return default
    if value.is_interval:
        seconds = int(value.timedelta.total_seconds()) % 86400
        return time(seconds // 3600, seconds % 3600 // 60, seconds % 60)
    point = value.datetime
    return time(point.hour, point.minute, point.second)


def typed_value(name: str, cim_type: str, is_array: bool, value: Any) -> Any:
    """``value`` converted to the declared CIM type (a list for arrays); None stays None.

    References are handled by the caller (they need the schema); embedded instances too. Raises
    ``InvalidParameter`` naming the parameter when the value does not fit.
    """
    if value is None:
        return None
    if is_array:
        items: Sequence[Any] = value if isinstance(value, list | tuple) else [value]
        return [_scalar(name, cim_type, item) for item in items]
    if isinstance(value, list | tuple):
        raise _bad(name, value, f"a single {cim_type}, not an array")
    return _scalar(name, cim_type, value)


def _scalar(name: str, cim_type: str, value: Any) -> Any:
    if value is None:
        return None
    if cim_type in _INTEGER_TYPES:
        return _integer(name, cim_type, value)
    if cim_type == "boolean":
        return _boolean(name, value)
    if cim_type == "datetime":
        return _datetime(name, value)
    if cim_type in ("real32", "real64"):
        return _real(name, cim_type, value)
    if cim_type in ("string", "char16"):
        if isinstance(value, CIMInstanceName | pywbem.CIMInstance):
            raise _bad(name, value, "a string")
        text = str(value)
        if cim_type == "char16" and len(text) != 1:
            raise _bad(name, value, "a single character")
        return text
    raise _bad(name, value, f"a value of type {cim_type}")


def _integer(name: str, cim_type: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _bad(name, value, f"an integer ({cim_type})")
    try:
        number = int(value.strip(), 0) if isinstance(value, str) else int(value)
        return pywbem.type_from_name(cim_type)(number)
    except ValueError:
        raise _bad(name, value, f"an integer in the range of {cim_type}") from None


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise _bad(name, value, "TRUE or FALSE")


def _datetime(name: str, value: Any) -> CIMDateTime:
    if isinstance(value, CIMDateTime):
        return value
    if isinstance(value, datetime | timedelta):
        return CIMDateTime(value)
    if isinstance(value, str):
        try:
            return CIMDateTime(value.strip())
        except ValueError:
            pass
    expected = "a CIM datetime (yyyymmddHHMMSS.mmmmmmsUUU) or interval (ddddddddHHMMSS.mmmmmm:000)"
    raise _bad(name, value, expected)


def _real(name: str, cim_type: str, value: Any) -> Any:
    if isinstance(value, bool):
        raise _bad(name, value, "a number")
    try:
        return pywbem.type_from_name(cim_type)(float(value))
    except (TypeError, ValueError):
        raise _bad(name, value, "a number") from None


def _bad(name: str, value: Any, expected: str) -> InvalidParameter:
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return InvalidParameter(
        f"Parameter {name} must be {expected}; got {shown}",
        message_id="InvalidParameterValue",
        parameter=name,
        value=shown,
        expected=expected,
    )


def value_in_value_map(value: int, value_map: Sequence[str]) -> bool:
    """Whether an integer is one of a ValueMap's entries (``"7"``, ``"7..10"``, ``".."``, ``"0x8000.."``)."""
    for entry in value_map:
        text = entry.strip()
        if ".." not in text:
            if _int(text) == value:
                return True
            continue
        low_text, high_text = text.split("..", 1)
        low = _int(low_text) if low_text else None
        high = _int(high_text) if high_text else None
        if low_text == "" and high_text == "":
            continue  # ".." alone marks the DMTF-reserved gaps, not accepted values
        if (low is None or value >= low) and (high is None or value <= high):
            return True
    return False


def _int(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None
