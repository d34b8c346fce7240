"""Errors the store raises beyond the domain tree (all of them are domain errors, so surfaces map them)."""

from __future__ import annotations

from standby.domain.errors import InUse, InvalidParameter


class StaleWrite(InUse):
    """A compare-and-swap update lost: the stored ``version`` moved on since the entity was read.

    The caller re-reads, re-checks its preconditions and tries again (or reports 32774 System is in use).
    """

    def __init__(self, kind: str, key: str, expected_version: int) -> None:
        super().__init__(
            f"{kind} {key} was changed by another operation (expected version {expected_version})",
            message_id="StaleWrite",
            kind=kind,
            key=key,
        )
        self.kind = kind
        self.key = key
        self.expected_version = expected_version


class AlreadyExists(InvalidParameter):
    """An insert named a key that is already stored."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key} already exists", message_id="AlreadyExists", kind=kind, key=key)
        self.kind = kind
        self.key = key
