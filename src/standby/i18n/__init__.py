"""standby's message catalog (English and German) and language choice.

Texts live in ``locale/<lang>/LC_MESSAGES/standby.po``; the msgid is a language-independent key (errors
carry it as ``message_id``) and ``{name}`` placeholders are filled from keyword arguments. The ``.po`` files
are read at first use by :mod:`standby.i18n.po`, so nothing needs compiling. Unknown ids fall back to
English, then to the id itself; a placeholder without a value stays visible as ``{name}``.
"""

from __future__ import annotations

import gettext
import string
import threading
from collections.abc import Mapping
from importlib import resources
from typing import Any

from standby.i18n.language import SUPPORTED, language_from_env, normalize, pick_language
from standby.i18n.po import PoCatalog, PoSyntaxError, parse

__all__ = [
    "SUPPORTED_LANGUAGES",
    "PoSyntaxError",
    "catalog",
    "collection_replication_state_text",
    "error_text",
    "has_message",
    "job_state_text",
    "job_type_text",
    "language_from_env",
    "pick_language",
    "placeholders",
    "replication_health_text",
    "replication_mode_text",
    "replication_state_text",
    "return_code_text",
    "state_change_code_text",
    "translate",
    "translations",
]

SUPPORTED_LANGUAGES: tuple[str, ...] = SUPPORTED
_FALLBACK = "en"
_cache: dict[str, PoCatalog] = {}
_cache_lock = threading.Lock()
_formatter = string.Formatter()


def _language(language: str | None) -> str:
    return normalize(language) or _FALLBACK


def _load(language: str) -> PoCatalog:
    with _cache_lock:
        if language not in _cache:
            po = resources.files("standby.i18n") / "locale" / language / "LC_MESSAGES" / "standby.po"
            _cache[language] = parse(po.read_text(encoding="utf-8"), f"{language}/standby.po")
        return _cache[language]


def catalog(language: str) -> Mapping[str, str]:
    """Every message of ``language`` (``en`` or ``de``; other tags mean ``en``), msgid → text."""
    return _load(_language(language)).messages


def has_message(message_id: str, language: str = _FALLBACK) -> bool:
    """Whether ``language``'s catalog has its own text for ``message_id``."""
    return message_id in catalog(language)


def placeholders(text: str) -> set[str]:
    """The ``{name}`` placeholders of a catalog text."""
    try:
        return {name for _, name, _, _ in _formatter.parse(text) if name}
    except ValueError:
        return set()


class _KeepMissing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _fill(text: str, args: Mapping[str, object]) -> str:
    try:
        return text.format_map(_KeepMissing(args))
    except (ValueError, IndexError, AttributeError, TypeError):
        # A stray brace in a translation must not turn an error report into a crash.
        return text


def translate(message_id: str, language: str | None = _FALLBACK, /, **args: object) -> str:
    """``message_id``'s text in ``language`` with ``args`` filled in; English, then the id, as fallbacks."""
    text = catalog(_language(language)).get(message_id)
    if text is None:
        text = catalog(_FALLBACK).get(message_id)
    if text is None:
        return message_id
    return _fill(text, args)


def error_text(
    message_id: str, language: str | None, message: str, *, code: int | None = None, **args: object
) -> str:
    """How to show an error raised with English ``message`` to a reader of ``language``.

    English readers get ``message`` itself (it is the most precise). Others get the catalog text when it
    exists and every placeholder has a value; else the translated return code name, a colon, and ``message``.
    """
    lang = _language(language)
    if lang == _FALLBACK:
        return message or translate(message_id, lang, **args)
    text = catalog(lang).get(message_id)
    if text is not None and placeholders(text) <= set(args):
        return _fill(text, args)
    if code is not None:
        return f"{return_code_text(code, lang)}: {message}"
    return message


def _enum_text(prefix: str, value: int, language: str | None) -> str:
    message_id = f"{prefix}.{int(value)}"
    text = translate(message_id, language)
    return str(int(value)) if text == message_id else text


def return_code_text(code: int, language: str | None = _FALLBACK) -> str:
    """The name of a method return code (hyperv-api §2.3), e.g. 32775 → "Ungültiger Status für diesen
    Vorgang"."""
    return _enum_text("ReturnCode", code, language)


def state_change_code_text(code: int, language: str | None = _FALLBACK) -> str:
    """The name of a CIM RequestStateChange return code (0, 1, … 4096, 4097, …)."""
    return _enum_text("StateChangeCode", code, language)


def job_type_text(job_type: int, language: str | None = _FALLBACK) -> str:
    """The name of a JobType (hyperv-api §7), e.g. 97 → "Initiate Failover" / "Failover einleiten"."""
    return _enum_text("JobType", job_type, language)


def job_state_text(state: int, language: str | None = _FALLBACK) -> str:
    """The name of a JobState, e.g. 7 → "Completed" / "Abgeschlossen"."""
    return _enum_text("JobState", state, language)


def replication_state_text(state: int, language: str | None = _FALLBACK) -> str:
    """The name of a relationship ReplicationState (hyperv-api §6.1)."""
    return _enum_text("ReplicationState", state, language)


def collection_replication_state_text(state: int, language: str | None = _FALLBACK) -> str:
    """The name of a collection ReplicationState (hyperv-api §8.5)."""
    return _enum_text("CollectionReplicationState", state, language)


def replication_health_text(health: int, language: str | None = _FALLBACK) -> str:
    """The name of a ReplicationHealth value (hyperv-api §6.2; 1 reads "Normal" as in Hyper-V Manager)."""
    return _enum_text("ReplicationHealth", health, language)


def replication_mode_text(mode: int, language: str | None = _FALLBACK) -> str:
    """The name of a ReplicationMode value (hyperv-api §6.3)."""
    return _enum_text("ReplicationMode", mode, language)


class _CatalogTranslations(gettext.NullTranslations):
    """A ``gettext`` translations object backed by the catalog, for code that expects the stdlib API."""

    def __init__(self, language: str) -> None:
        super().__init__()
        self._language = language

    def gettext(self, message: str) -> str:
        return translate(message, self._language)

    def ngettext(self, msgid1: str, msgid2: str, n: int) -> str:
        return translate(msgid1 if n == 1 else msgid2, self._language)

    def info(self) -> dict[str, str]:
        return dict(_load(self._language).header)


def translations(language: str | None) -> gettext.NullTranslations:
    """The catalog of ``language`` as a stdlib ``gettext`` translations object."""
    return _CatalogTranslations(_language(language))
