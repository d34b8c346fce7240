"""The message catalog: every number and error has text, language choice, fallbacks, the .po reader."""

from __future__ import annotations

import inspect

import pytest

from standby import i18n
from standby.domain import errors
from standby.domain.enums import (
    CollectionReplicationState,
    JobState,
    JobType,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    ReturnCode,
    StateChangeCode,
)
from standby.i18n.po import PoSyntaxError, parse

ERROR_CLASSES = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.StandbyError) and cls.__module__ == errors.__name__
]

SEED_003_FIXED = {
    0: "Abgeschlossen ohne Fehler",
    4096: "Methodenparameter überprüft – Auftrag gestartet",
    32768: "Fehler",
    32769: "Zugriff verweigert",
    32770: "Nicht unterstützt",
    32771: "Status ist unbekannt",
    32772: "Zeitüberschreitung",
    32773: "Ungültiger Parameter",
    32774: "System wird verwendet",
    32775: "Ungültiger Status für diesen Vorgang",
    32776: "Falscher Datentyp",
    32777: "System ist nicht verfügbar",
    32778: "Nicht genügend Arbeitsspeicher",
    32779: "Datei wurde nicht gefunden",
}


@pytest.mark.parametrize("code", list(ReturnCode))
def test_every_return_code_has_english_and_german_text(code: ReturnCode) -> None:
    en, de = i18n.return_code_text(code, "en"), i18n.return_code_text(code, "de")
    assert en and de and en != str(int(code))
    assert de == SEED_003_FIXED[int(code)]


def test_english_return_codes_follow_the_spec() -> None:
    assert i18n.return_code_text(0) == "Completed with No Error"
    assert i18n.return_code_text(4096) == "Method Parameters Checked - Job Started"
    assert i18n.return_code_text(32775) == "Invalid state for this operation"


@pytest.mark.parametrize(
    ("enum", "text"),
    [
        (JobType, i18n.job_type_text),
        (JobState, i18n.job_state_text),
        (ReplicationState, i18n.replication_state_text),
        (CollectionReplicationState, i18n.collection_replication_state_text),
        (ReplicationHealth, i18n.replication_health_text),
        (ReplicationMode, i18n.replication_mode_text),
        (StateChangeCode, i18n.state_change_code_text),
    ],
)
def test_every_enum_value_has_both_texts(enum: type, text: object) -> None:
    assert callable(text)
    for value in enum:  # type: ignore[attr-defined]
        en, de = text(value, "en"), text(value, "de")
        assert en != str(int(value)), f"{enum.__name__}.{value.name} has no English text"
        assert de != str(int(value)), f"{enum.__name__}.{value.name} has no German text"


def test_spot_checks_of_names() -> None:
    assert i18n.job_type_text(JobType.INITIATE_FAILOVER, "en") == "Initiate Failover"
    assert i18n.job_type_text(JobType.INITIATE_FAILOVER, "de") == "Failover einleiten"
    assert i18n.replication_state_text(ReplicationState.RECOVERED, "de") == "Wiederhergestellt"
    assert i18n.replication_state_text(ReplicationState.WAITING_TO_START_RESYNCHRONIZATION) == (
        "Waiting to start resynchronization"
    )
    assert i18n.replication_health_text(1) == "Normal"
    assert i18n.job_state_text(JobState.COMPLETED_WITH_WARNINGS, "de") == "Mit Warnungen abgeschlossen"


def test_unknown_numbers_read_as_the_number() -> None:
    assert i18n.job_type_text(4242, "de") == "4242"
    assert i18n.return_code_text(7) == "7"


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_class_name_is_a_message_id(cls: type[errors.StandbyError]) -> None:
    assert i18n.has_message(cls.__name__, "en")
    assert i18n.has_message(cls.__name__, "de")
    assert cls("x").message_id == cls.__name__


def test_the_catalogs_have_the_same_ids_and_placeholders() -> None:
    en, de = i18n.catalog("en"), i18n.catalog("de")
    assert set(en) == set(de)
    for message_id, text in en.items():
        assert i18n.placeholders(text) == i18n.placeholders(de[message_id]), message_id
    assert len(en) > 150


def test_ids_other_modules_raise_are_in_the_catalog() -> None:
    from standby.domain.preconditions import MESSAGE_IDS

    needed = {*MESSAGE_IDS, "JobInterruptedByRestart", "UnexpectedError", "StaleWrite", "ObjectNotFound"}
    assert needed <= set(i18n.catalog("de"))


def test_translate_fills_arguments_and_falls_back() -> None:
    assert i18n.translate("ObjectNotFound", "de", kind="VM", key="A1") == "VM A1 ist nicht vorhanden."
    assert i18n.translate("ObjectNotFound", "en", kind="VM", key="A1") == "VM A1 does not exist."
    assert i18n.translate("ObjectNotFound", "fr", kind="VM", key="A1") == "VM A1 does not exist."
    assert i18n.translate("ObjectNotFound", "de-AT", kind="VM", key="A1") == "VM A1 ist nicht vorhanden."
    assert i18n.translate("NoSuchMessageId", "de") == "NoSuchMessageId"
    assert i18n.translate("ObjectNotFound", "de", kind="VM") == "VM {key} ist nicht vorhanden."
    assert i18n.translate("JobInterruptedByRestart", "de").startswith("Der Dienst wurde beendet")


def test_translate_falls_back_to_english_when_german_lacks_the_id(monkeypatch: pytest.MonkeyPatch) -> None:
    i18n.catalog("de")  # load the real one first, then swap in a German catalog with a single entry
    monkeypatch.setitem(i18n._cache, "de", parse('msgid "ReturnCode.0"\nmsgstr "Fertig"\n', "tiny.po"))
    assert i18n.return_code_text(0, "de") == "Fertig"
    assert i18n.translate("StaleWrite", "de", kind="VM", key="A").startswith("VM A was changed")


def test_error_text() -> None:
    precise = "RecoveryServerPortNumber 0 is not a port number (1-65535)"
    assert i18n.error_text("InvalidPortNumber", "en", precise, value="0") == precise
    assert i18n.error_text("InvalidPortNumber", "de", precise, value="0").startswith(
        "RecoveryServerPortNumber 0 ist keine Portnummer"
    )
    # A placeholder without a value: the German return code name, then the precise English message.
    assert (
        i18n.error_text("InvalidPortNumber", "de", precise, code=32773) == f"Ungültiger Parameter: {precise}"
    )
    assert i18n.error_text("Unknown", "de", "boom") == "boom"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "en"),
        ("", "en"),
        ("de", "de"),
        ("de-DE", "de"),
        ("DE-at", "de"),
        ("en-US,en;q=0.9", "en"),
        ("de-DE,de;q=0.9,en;q=0.8", "de"),
        ("en;q=0.5, de;q=0.8", "de"),
        ("de;q=0.8, en;q=0.9", "en"),
        ("fr-FR, fr;q=0.9, de;q=0.7", "de"),
        ("fr", "en"),
        ("de;q=0", "en"),
        ("en;q=0, *", "de"),
        ("*", "en"),
        ("de;q=abc, en", "en"),
        ("de;q=2", "en"),
        ("de, en", "de"),
        (",,;", "en"),
    ],
)
def test_pick_language(header: str | None, expected: str) -> None:
    assert i18n.pick_language(header) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "en"),
        ({"LANG": "de_DE.UTF-8"}, "de"),
        ({"LANG": "de_AT@euro"}, "de"),
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LANG": "de_DE.UTF-8", "LC_ALL": "en_GB.UTF-8"}, "en"),
        ({"LANG": "en_US.UTF-8", "LC_MESSAGES": "de_DE.UTF-8"}, "de"),
        ({"LC_ALL": "C"}, "en"),
        ({"LC_ALL": "C.UTF-8", "LANGUAGE": "de"}, "en"),
        ({"LANG": "en_US.UTF-8", "LANGUAGE": "fr:de:en"}, "de"),
        ({"LANG": "fr_FR.UTF-8"}, "en"),
        ({"LANG": ""}, "en"),
    ],
)
def test_language_from_env(env: dict[str, str], expected: str) -> None:
    assert i18n.language_from_env(env) == expected


def test_language_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    assert i18n.language_from_env() == "de"


def test_gettext_translations_object() -> None:
    translations = i18n.translations("de-DE")
    assert translations.gettext("ReturnCode.32774") == "System wird verwendet"
    assert translations.info()["Language"] == "de"


# -- the .po reader -----------------------------------------------------------------------------------------

PO_SAMPLE = r"""
# translator comment
msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\n"
"Language: de\n"

#: source.py:1
msgid "Plain"
msgstr "Einfach"

msgid "Multi"
msgstr ""
"erste Zeile\n"
"zweite \"Zeile\"\t\\ Ende"

#, fuzzy
msgid "Fuzzy"
msgstr "ungeprüft"

#, python-format
msgid "Flagged"
msgstr "mit Flagge"

msgid "Empty"
msgstr ""

msgctxt "menu"
msgid "Open"
msgstr "Öffnen"

msgid "One file"
msgid_plural "{n} files"
msgstr[0] "Eine Datei"
msgstr[1] "{n} Dateien"

msgid "Octal"
msgstr "A\101\60"
"""


def test_po_reader_understands_the_format() -> None:
    po = parse(PO_SAMPLE, "sample.po")
    assert po.header["Language"] == "de"
    assert po.messages == {
        "Plain": "Einfach",
        "Multi": 'erste Zeile\nzweite "Zeile"\t\\ Ende',
        "Flagged": "mit Flagge",
        "menu\x04Open": "Öffnen",
        "One file": "Eine Datei",
        "Octal": "AA0",
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('msgid "a"\nmsgstr "b"\nmsgid "a"\nmsgstr "c"\n', "duplicate msgid"),
        ('msgid "a"\n', "without msgstr"),
        ('msgstr "b"\n', "without msgid"),
        ('"stray"\n', "continuation"),
        ('msgid "a"\nmsgstr "b\n', "quoted string"),
        ('msgid "a"\nmsgstr "b\\q"\n', "unknown escape"),
        ('msgid "a"\nmsgstr "b"c"\n', "unescaped quote"),
        ('msgid "a"\nmsgfoo "b"\n', "unknown keyword"),
        ('msgid "a"\nmsgstr "b"\nmsgstr "c"\n', "given twice"),
    ],
)
def test_po_reader_rejects_malformed_files_with_a_line_number(text: str, problem: str) -> None:
    with pytest.raises(PoSyntaxError, match=problem) as caught:
        parse(text, "bad.po")
    assert "bad.po:" in str(caught.value)


def test_every_message_id_of_the_store_and_jobs_is_in_the_catalog() -> None:
    import re
    from pathlib import Path

    import standby

    root = Path(standby.__file__).parent
    sources = [*sorted((root / "store").rglob("*.py")), root / "engine" / "jobs.py"]
    found = set()
    for source in sources:
        text = source.read_text(encoding="utf-8")
        found |= set(re.findall(r'message_id="([A-Za-z0-9_.]+)"', text))
        found |= set(re.findall(r'translate\("([A-Za-z0-9_.]+)"', text))
        found |= set(re.findall(r'"(Job[A-Z][A-Za-z]+)"', text)) - {"JobHandle"}
    assert {"StaleWrite", "JobInterruptedByRestart", "JobKilled", "StoreTooNew"} <= found
    missing = found - set(i18n.catalog("en"))
    assert not missing
