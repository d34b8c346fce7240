"""``domain.intents``: every intent a use case writes before its side effects, in the form start-up recovery
reads back — including what a daemon of this version finds written by an earlier one."""

from __future__ import annotations

import pytest

from standby.domain.cycles import IntentKind as CycleIntentKind
from standby.domain.cycles import intent, parse_intent
from standby.domain.errors import InvalidParameter
from standby.domain.intents import (
    CUT_KINDS,
    Intent,
    IntentKind,
    commit_intent,
    cut_intent,
    failover_intent,
    is_kind,
    merge_intent,
    parse,
    parse_cut,
)

K = IntentKind


@pytest.mark.parametrize(("written", "text"), [
    (cut_intent(K.CYCLE, 12), "cycle:12"),
    (cut_intent(K.INITIAL, 1), "initial:1"),
    (cut_intent(K.EXPORT, 1), "export:1"),
    (cut_intent(K.RESYNC, 0), "resync:0"),
    (failover_intent("P2"), "failover:P2"),
    (commit_intent("5C0FFEE0-0000-4000-8000-00000000AB01"), "commit:5C0FFEE0-0000-4000-8000-00000000AB01"),
    (merge_intent("P1", "P2"), "merge:P1:P2"),
])
def test_what_is_written_is_the_stored_form(written: str, text: str) -> None:
    assert written == text


@pytest.mark.parametrize(("text", "expected"), [
    ("cycle:12", Intent(K.CYCLE, sequence=12)),
    ("initial:3", Intent(K.INITIAL, sequence=3)),
    ("export:1", Intent(K.EXPORT, sequence=1)),
    ("resync:40", Intent(K.RESYNC, sequence=40)),
    ("cycle:007", Intent(K.CYCLE, sequence=7)),
    ("failover:P2", Intent(K.FAILOVER, points=("P2",))),
    ("commit:P1", Intent(K.COMMIT, points=("P1",))),
    ("merge:P1:P2", Intent(K.MERGE, points=("P1", "P2"))),
    # no intent of ours: start-up recovery leaves these alone
    (None, None),
    ("", None),
    ("late", None),
    ("cycle:", None),
    ("cycle:-1", None),
    ("cycle:x", None),
    ("cycle:1:2", None),
    ("failover:", None),
    ("failover:P1:P2", None),
    ("merge:P1", None),
    ("merge:P1:P2:P3", None),
    ("merge:P1::P2", None),
    ("planned:3", None),
    ("Cycle:3", None),
])
def test_a_stored_intent_parses_back(text: str | None, expected: Intent | None) -> None:
    assert parse(text) == expected
    if expected is not None:
        assert parse(expected.text) == expected  # what it writes reads back the same


@pytest.mark.parametrize(("text", "cut"), [
    ("cycle:12", (K.CYCLE, 12)),
    ("export:1", (K.EXPORT, 1)),
    ("resync:2", (K.RESYNC, 2)),
    ("initial:5", (K.INITIAL, 5)),
    # a point id that happens to be a number is still no cut: the cycle's recovery must not abort "cut 123"
    ("failover:123", None),
    ("commit:7", None),
    ("merge:1:2", None),
    (None, None),
])
def test_only_a_cuts_intent_reads_as_a_kind_and_sequence(text: str | None,
                                                         cut: tuple[IntentKind, int] | None) -> None:
    assert parse_cut(text) == cut
    assert parse_intent(text) == cut  # the names the cycle runner and the scheduler import


def test_the_cycle_names_are_the_same_vocabulary() -> None:
    assert CycleIntentKind is IntentKind
    assert intent(CycleIntentKind.CYCLE, 4) == cut_intent(K.CYCLE, 4) == "cycle:4"
    assert {kind for kind in K if parse_cut(f"{kind.value}:3") is not None} == CUT_KINDS


@pytest.mark.parametrize(("kind", "sequence", "points"), [
    (K.CYCLE, None, ()),
    (K.CYCLE, -1, ()),
    (K.CYCLE, 3, ("P1",)),
    (K.FAILOVER, None, ()),
    (K.FAILOVER, 3, ("P1",)),
    (K.FAILOVER, None, ("P1", "P2")),
    (K.COMMIT, None, ("P:1",)),
    (K.COMMIT, None, ("",)),
    (K.MERGE, None, ("P1",)),
    (K.MERGE, None, ("P1", "P 2")),
])
def test_an_intent_that_could_not_be_read_back_is_refused(kind: IntentKind, sequence: int | None,
                                                          points: tuple[str, ...]) -> None:
    with pytest.raises(InvalidParameter):
        Intent(kind, sequence=sequence, points=points)


def test_the_point_an_intent_names() -> None:
    pending = parse("failover:P2")
    assert pending is not None and pending.point_id == "P2"
    assert Intent(K.MERGE, points=("P1", "P2")).point_id == "P1"
    with pytest.raises(InvalidParameter):
        _ = Intent(K.CYCLE, sequence=1).point_id


@pytest.mark.parametrize(("text", "kind", "answer"), [
    ("failover:P2", K.FAILOVER, True),
    ("commit:P2", K.FAILOVER, False),
    ("cycle:2", K.CYCLE, True),
    (None, K.CYCLE, False),
    ("failover:", K.FAILOVER, False),
])
def test_is_kind(text: str | None, kind: IntentKind, answer: bool) -> None:
    assert is_kind(text, kind) is answer
