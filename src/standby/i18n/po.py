"""A small reader for gettext ``.po`` files, so the catalog needs no compiled ``.mo`` and no system gettext.

It understands what standby's catalogs use and what translation tools write: comments, flags (``fuzzy``
entries are skipped, as ``msgfmt`` does), ``msgctxt``, multi-line strings, C escapes and plural forms
(``msgstr[0]`` is kept). The header entry (``msgid ""``) is returned separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_KEYWORDS = ("msgctxt", "msgid_plural", "msgid", "msgstr")


class PoSyntaxError(ValueError):
    """The file is not a valid ``.po`` file; the message names the file and line."""


@dataclass
class _Entry:
    line: int
    fuzzy: bool = False
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PoCatalog:
    """Translations keyed by msgid (``"context\\x04msgid"`` when an entry has a ``msgctxt``)."""

    messages: dict[str, str]
    header: dict[str, str]


def unquote(text: str, where: str) -> str:
    """The value of one C-style quoted string (``"..."``) with its escapes resolved."""
    if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
        raise PoSyntaxError(f"{where}: expected a quoted string, found {text!r}")
    body, out, i = text[1:-1], [], 0
    while i < len(body):
        char = body[i]
        if char == '"':
            raise PoSyntaxError(f"{where}: unescaped quote inside a string")
        if char != "\\":
            out.append(char)
            i += 1
            continue
        if i + 1 >= len(body):
            raise PoSyntaxError(f"{where}: string ends with a lone backslash")
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            end = i + 1
            while end < min(len(body), i + 4) and body[end] in "01234567":
                end += 1
            out.append(chr(int(body[i + 1 : end], 8)))
            i = end
        else:
            raise PoSyntaxError(f"{where}: unknown escape \\{nxt}")
    return "".join(out)


def parse(text: str, name: str = "<po>") -> PoCatalog:
    """Read ``.po`` text; raises ``PoSyntaxError`` on anything malformed."""
    entries: list[_Entry] = []
    current = _Entry(0)
    last_key: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        where = f"{name}:{number}"
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith("#,") and "fuzzy" in (flag.strip() for flag in line[2:].split(",")):
                current = _flush(entries, current, number)
                current.fuzzy = True
            continue
        if line.startswith('"'):
            if last_key is None:
                raise PoSyntaxError(f"{where}: a string continuation without a keyword before it")
            current.fields[last_key] += unquote(line, where)
            continue
        keyword, _, rest = line.partition(" ")
        key = _keyword(keyword, where)
        if key in ("msgctxt", "msgid") and (key in current.fields or "msgid" in current.fields):
            current = _flush(entries, current, number)
        if key in current.fields:
            raise PoSyntaxError(f"{where}: {keyword} given twice in one entry")
        if current.line == 0:
            current.line = number
        current.fields[key] = unquote(rest.strip(), where)
        last_key = key
    _flush(entries, current, 0)
    return _catalog(entries, name)


def _keyword(keyword: str, where: str) -> str:
    if keyword in _KEYWORDS:
        return keyword
    if keyword.startswith("msgstr[") and keyword.endswith("]") and keyword[7:-1].isdigit():
        return keyword
    raise PoSyntaxError(f"{where}: unknown keyword {keyword!r}")


def _flush(entries: list[_Entry], current: _Entry, next_line: int) -> _Entry:
    if current.fields:
        entries.append(current)
        return _Entry(next_line)
    return current


def _catalog(entries: list[_Entry], name: str) -> PoCatalog:
    messages: dict[str, str] = {}
    header: dict[str, str] = {}
    for entry in entries:
        where = f"{name}:{entry.line}"
        if "msgid" not in entry.fields:
            raise PoSyntaxError(f"{where}: entry without msgid")
        translation = entry.fields.get("msgstr", entry.fields.get("msgstr[0]"))
        if translation is None:
            raise PoSyntaxError(f"{where}: entry without msgstr")
        msgid = entry.fields["msgid"]
        if msgid == "" and "msgctxt" not in entry.fields:
            header = _header(translation)
            continue
        if entry.fuzzy or translation == "":
            continue  # untranslated or unreviewed: callers fall back, as with msgfmt
        key = f"{entry.fields['msgctxt']}\x04{msgid}" if "msgctxt" in entry.fields else msgid
        if key in messages:
            raise PoSyntaxError(f"{where}: duplicate msgid {msgid!r}")
        messages[key] = translation
    return PoCatalog(messages, header)


def _header(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields
