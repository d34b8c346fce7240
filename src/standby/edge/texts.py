"""Language choice and message text for the REST surface, on top of ``standby.i18n``."""

from __future__ import annotations

from starlette.requests import Request

from standby import i18n
from standby.domain.errors import StandbyError


def request_language(request: Request) -> str:
    """``en`` or ``de`` from the request's ``Accept-Language`` header."""
    return i18n.pick_language(request.headers.get("accept-language"))


def error_text(exc: StandbyError, language: str) -> str:
    """The error's message in ``language`` (English: the precise text it was raised with)."""
    args = {key: str(value) for key, value in exc.args_map.items()}
    return i18n.error_text(exc.message_id, language, exc.message, code=int(exc.code), **args)


def message(message_id: str, language: str, fallback: str, **args: str) -> str:
    """A catalog message, or ``fallback`` (English) when the id is unknown."""
    try:
        text = i18n.translate(message_id, language, **args)
    except (KeyError, ValueError):
        return fallback
    return fallback if not text or text == message_id else text
