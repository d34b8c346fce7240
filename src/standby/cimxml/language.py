"""Which language a request wants: B1's ``standby.i18n.pick_language`` when it is there, else a local reader.

The fallback understands the same things the daemon's catalog does (``de``, ``de-DE``, q-values) and only
exists so this package imports before the catalog lands.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

SUPPORTED = ("en", "de")


def _fallback_pick(accept_language: str | None) -> str:
    best, best_q = "en", -1.0
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in SUPPORTED and q > best_q and q > 0:
            best, best_q = primary, q
    return best


def _load() -> Callable[[str | None], str]:
    catalog = importlib.import_module("standby.i18n")
    found: Callable[[str | None], str] | None = getattr(catalog, "pick_language", None)
    return found if found is not None else _fallback_pick


_pick = _load()


def pick_language(accept_language: str | None) -> str:
    """``"de"`` or ``"en"`` for an ``Accept-Language`` header value (None → English)."""
    language = _pick(accept_language)
    return language if language in SUPPORTED else "en"
