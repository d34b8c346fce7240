"""Choosing the language of a reply: from an HTTP ``Accept-Language`` header or the POSIX locale variables."""

from __future__ import annotations

import os
from collections.abc import Mapping

SUPPORTED = ("en", "de")
DEFAULT = "en"


def normalize(tag: str | None) -> str | None:
    """``de``, ``de-DE``, ``de_AT.UTF-8``, ``de_DE@euro`` → ``de``; unsupported or empty → None."""
    if not tag:
        return None
    base = tag.strip().split(".", 1)[0].split("@", 1)[0]
    primary = base.replace("_", "-").split("-", 1)[0].lower()
    return primary if primary in SUPPORTED else None


def pick_language(accept_language: str | None) -> str:
    """The best supported language for an ``Accept-Language`` header (RFC 9110 §12.5.4); ``en`` by default.

    Handles regional tags (``de-DE``), q-values (``de;q=0.8, en;q=0.9`` → ``en``), ``q=0`` (not
    acceptable), ``*`` (any language not named); malformed parts are ignored. Equal q: first listed wins.
    """
    if not accept_language:
        return DEFAULT
    named: dict[str, tuple[float, int]] = {}
    wildcard: tuple[float, int] | None = None
    for position, part in enumerate(accept_language.split(",")):
        tag, quality = _range_and_quality(part)
        if tag == "*":
            wildcard = (quality, position)
            continue
        language = normalize(tag)
        if language is not None and (language not in named or quality > named[language][0]):
            named[language] = (quality, position)
    scored = [(named.get(language, wildcard), language) for language in SUPPORTED]
    candidates = [(score[0], -score[1], language) for score, language in scored if score and score[0] > 0]
    return max(candidates)[2] if candidates else DEFAULT


def _range_and_quality(part: str) -> tuple[str | None, float]:
    pieces = [piece.strip() for piece in part.split(";")]
    tag = pieces[0]
    if not tag:
        return None, 0.0
    quality = 1.0
    for parameter in pieces[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value.strip())
            except ValueError:
                return None, 0.0
            if not 0.0 <= quality <= 1.0:
                return None, 0.0
    return tag, quality


def language_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The language of the POSIX locale (``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG``); else ``en``.

    The first of ``LC_ALL``, ``LC_MESSAGES``, ``LANG`` that is set decides the locale, as in POSIX; GNU's
    ``LANGUAGE`` priority list is consulted first unless that locale is ``C``/``POSIX``.
    """
    env = os.environ if environ is None else environ
    locale = next((env[name] for name in ("LC_ALL", "LC_MESSAGES", "LANG") if env.get(name)), "")
    if locale in ("C", "POSIX") or locale.startswith(("C.", "POSIX.")):
        return DEFAULT
    for tag in env.get("LANGUAGE", "").split(":"):
        language = normalize(tag)
        if language is not None:
            return language
    return normalize(locale) or DEFAULT
