"""The intents a use case writes on a relationship before its side effects (DESIGN §3), as one vocabulary.

A restarted daemon reads them back to finish or roll back half-done work, so the stored form is fixed:
``<kind>:<subject>``, where the subject is a cut's sequence (``cycle:12``), a recovery point's id
(``failover:<id>``, ``commit:<id>``) or two of them (``merge:<older id>:<newer id>``). A text that is none of
these parses as None: it is no one's intent here, and start-up recovery leaves it alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from standby.domain.errors import InvalidParameter

_TEXT = re.compile(r"^(?P<kind>[a-z-]+):(?P<subject>.+)$")
_SEQUENCE = re.compile(r"^\d+$")
_POINT_ID = re.compile(r"^[^:\s]+$")


class IntentKind(StrEnum):
    """What a use case was doing when it wrote the intent."""

    # A cut of the primary, with its sequence N (engine/cycle.py).
    CYCLE = "cycle"  # a delta cycle
    INITIAL = "initial"  # initial replication over the network
    EXPORT = "export"  # the initial log N was exported; waits for the replica's import
    RESYNC = "resync"  # resynchronization
    # A recovery point of the replica, by id (engine/failover.py, engine/apply.py).
    FAILOVER = "failover"  # overlays over the point are being made
    COMMIT = "commit"  # every point but this one is being dropped
    MERGE = "merge"  # the older point is being merged into the newer one (retention)


#: The kinds whose subject is a cut's sequence.
CUT_KINDS = frozenset({IntentKind.CYCLE, IntentKind.INITIAL, IntentKind.EXPORT, IntentKind.RESYNC})
#: How many recovery point ids each of the other kinds names.
_POINTS = {IntentKind.FAILOVER: 1, IntentKind.COMMIT: 1, IntentKind.MERGE: 2}


@dataclass(frozen=True, slots=True)
class Intent:
    """One intent: a cut's (``sequence``) or one naming recovery points (``points``)."""

    kind: IntentKind
    sequence: int | None = None
    points: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind in CUT_KINDS:
            if self.sequence is None or self.sequence < 0 or self.points:
                raise InvalidParameter(f"a {self.kind.value} intent names one sequence, not {self!r}")
            return
        if self.sequence is not None or len(self.points) != _POINTS[self.kind] or \
                not all(_POINT_ID.match(point) for point in self.points):
            raise InvalidParameter(f"a {self.kind.value} intent names {_POINTS[self.kind]} recovery point "
                                   f"id(s) without colons or spaces, not {self.points!r}")

    @property
    def text(self) -> str:
        """The stored form."""
        subject = (str(self.sequence),) if self.sequence is not None else self.points
        return ":".join((self.kind.value, *subject))

    @property
    def point_id(self) -> str:
        """The recovery point a failover or commit intent names (the older one of a merge)."""
        if not self.points:
            raise InvalidParameter(f"a {self.kind.value} intent names no recovery point")
        return self.points[0]


def cut_intent(kind: IntentKind, sequence: int) -> str:
    """The stored intent of cut ``sequence`` (e.g. ``cycle:12``)."""
    return Intent(kind, sequence=sequence).text


def failover_intent(point_id: str) -> str:
    """The stored intent of a failover to recovery point ``point_id``."""
    return Intent(IntentKind.FAILOVER, points=(point_id,)).text


def commit_intent(point_id: str) -> str:
    """The stored intent of committing a failover to ``point_id``."""
    return Intent(IntentKind.COMMIT, points=(point_id,)).text


def merge_intent(older_id: str, newer_id: str) -> str:
    """The stored intent of merging recovery point ``older_id`` into ``newer_id``."""
    return Intent(IntentKind.MERGE, points=(older_id, newer_id)).text


def parse(text: str | None) -> Intent | None:
    """The intent stored as ``text``; None for none, or for a text that is no intent of ours."""
    match = _TEXT.match(text or "")
    if match is None:
        return None
    try:
        kind = IntentKind(match["kind"])
    except ValueError:
        return None
    subject = match["subject"]
    try:
        if kind in CUT_KINDS:
            return Intent(kind, sequence=int(subject)) if _SEQUENCE.match(subject) else None
        return Intent(kind, points=tuple(subject.split(":")))
    except InvalidParameter:
        return None


def parse_cut(text: str | None) -> tuple[IntentKind, int] | None:
    """``(kind, sequence)`` of a cut's intent; None for none or any other intent."""
    intent = parse(text)
    if intent is None or intent.sequence is None:
        return None
    return intent.kind, intent.sequence


def is_kind(text: str | None, kind: IntentKind) -> bool:
    """Whether ``text`` is an intent of ``kind``."""
    intent = parse(text)
    return intent is not None and intent.kind is kind
