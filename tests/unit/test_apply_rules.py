"""Pure replica-side rules: entry matching, log acceptance, state mirror, names (who may call which peer
route: tests/unit/test_peer_access.py)."""

from __future__ import annotations

import pytest

from standby.domain.entities import AuthorizationEntry, ServiceSettings
from standby.domain.enums import ReplicationState
from standby.domain.errors import AccessDenied, InvalidParameter, InvalidState
from standby.domain.replica import (
    LogVerdict,
    check_disk_id,
    host_matches,
    judge_log,
    matching_entry,
    mirrored_state,
    parse_point_file,
    point_file_name,
    replica_folder_name,
)

ENABLED = ServiceSettings(recovery_server_enabled=True)


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("hv1.contoso.com", "hv1.contoso.com", True),
        ("HV1.Contoso.com", "hv1.CONTOSO.com", True),
        ("hv1.contoso.com.", "hv1.contoso.com", True),
        ("hv1.contoso.com", "hv2.contoso.com", False),
        ("hv1.contoso.com", "hv1.contoso.com.evil.org", False),
        ("*.contoso.com", "hv1.contoso.com", True),
        ("*.contoso.com", "a.b.contoso.com", True),
        ("*.contoso.com", "contoso.com", False),
        ("*.contoso.com", "evilcontoso.com", False),
        ("*.contoso.com", "hv1.contoso.com.evil.org", False),
        ("*", "anything.example", True),
        ("*", "", False),
        ("hv*.contoso.com", "hv1.contoso.com", False),
        ("*.*.com", "a.b.com", False),
        ("", "hv1", False),
    ],
)
def test_host_matching_table(pattern: str, host: str, expected: bool) -> None:
    assert host_matches(pattern, host) is expected


def _entry(pattern: str, group: str = "DEFAULT", location: str = "/srv/replicas") -> AuthorizationEntry:
    return AuthorizationEntry(pattern, group, location)


def test_most_specific_entry_wins() -> None:
    entries = [_entry("*", "any"), _entry("*.contoso.com", "dom"), _entry("*.lab.contoso.com", "lab"),
               _entry("hv1.lab.contoso.com", "exact")]
    assert matching_entry(entries, "hv1.lab.contoso.com").trust_group == "exact"  # type: ignore[union-attr]
    assert matching_entry(entries, "hv2.lab.contoso.com").trust_group == "lab"  # type: ignore[union-attr]
    assert matching_entry(entries, "hv2.contoso.com").trust_group == "dom"  # type: ignore[union-attr]
    assert matching_entry(entries, "other.org").trust_group == "any"  # type: ignore[union-attr]
    assert matching_entry(entries[1:], "other.org") is None


@pytest.mark.parametrize(
    ("head", "base", "sequence", "parent", "kind", "verdict"),
    [
        (None, None, 1, 0, "initial", LogVerdict.APPLY),
        (None, None, 5, 0, "delta", LogVerdict.OUT_OF_SEQUENCE),
        (None, None, 5, 4, "resync", LogVerdict.APPLY),  # seeded: compared against the VM's own disk
        (1, 1, 1, 0, "initial", LogVerdict.REPEAT),
        (1, 1, 2, 0, "initial", LogVerdict.OUT_OF_SEQUENCE),
        (1, 1, 2, 1, "delta", LogVerdict.APPLY),  # parent is the head
        (5, 1, 6, 4, "delta", LogVerdict.APPLY),  # the ack of 5 was lost: parent 4 is an ancestor
        (5, 1, 6, 1, "delta", LogVerdict.APPLY),  # several acks lost
        (5, 3, 6, 2, "delta", LogVerdict.OUT_OF_SEQUENCE),  # older than the lineage (before a resync)
        (5, 1, 7, 6, "delta", LogVerdict.OUT_OF_SEQUENCE),  # parent the replica never had (restored replica)
        (5, 1, 5, 4, "delta", LogVerdict.REPEAT),
        (5, 1, 3, 2, "delta", LogVerdict.REPEAT),
        (5, 1, 6, 5, "resync", LogVerdict.APPLY),
        (5, 1, 6, 4, "resync", LogVerdict.OUT_OF_SEQUENCE),
        (5, None, 6, 5, "delta", LogVerdict.APPLY),
        (5, None, 6, 4, "delta", LogVerdict.OUT_OF_SEQUENCE),
        (5, 1, 0, 0, "delta", LogVerdict.OUT_OF_SEQUENCE),
    ],
)
def test_log_acceptance_table(  # noqa: PLR0917 - one argument per table column
    head: int | None, base: int | None, sequence: int, parent: int, kind: str, verdict: LogVerdict
) -> None:
    judged = judge_log(head=head, base=base, sequence=sequence, parent=parent, initial=kind == "initial",
                       resync=kind == "resync")
    assert judged.verdict is verdict
    assert bool(judged.reason) is (verdict is LogVerdict.OUT_OF_SEQUENCE)


@pytest.mark.parametrize(
    ("current", "requested", "has_points", "expected"),
    [
        (ReplicationState.REPLICATING, 7, True, ReplicationState.SUSPENDED),
        (ReplicationState.SUSPENDED, 3, True, ReplicationState.REPLICATING),
        (ReplicationState.SUSPENDED, 3, False, ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION),
        (ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION, 1, False,
         ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION),
        (ReplicationState.RESYNCHRONIZING, 9, True, ReplicationState.REPLICATING),
        (ReplicationState.REPLICATING, 10, True, ReplicationState.RESYNCHRONIZING),
    ],
)
def test_state_mirror(current: ReplicationState, requested: int, has_points: bool,
                      expected: ReplicationState) -> None:
    assert mirrored_state(current, requested, has_points=has_points) is expected


def test_state_mirror_refusals() -> None:
    with pytest.raises(InvalidState):
        mirrored_state(ReplicationState.RECOVERED, 7, has_points=True)
    with pytest.raises(InvalidState):
        mirrored_state(ReplicationState.REPLICATING, 1, has_points=True)
    with pytest.raises(InvalidParameter):
        mirrored_state(ReplicationState.REPLICATING, 4, has_points=True)


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", ".", "", "x\x00y", "back\\slash"])
def test_folder_names_that_escape_are_refused(name: str) -> None:
    with pytest.raises(AccessDenied) as info:
        replica_folder_name(name, "0F1E2D3C-0000-4000-8000-000000000001")
    assert info.value.message_id == "StorageLocationEscape"


def test_folder_and_point_names() -> None:
    vm_id = "0F1E2D3C-0000-4000-8000-000000000001"
    assert replica_folder_name("web 01", vm_id) == f"web 01_{vm_id}"
    assert point_file_name(42) == "rp-0000000042.qcow2"
    assert point_file_name(42, partial=True) == "rp-0000000042.qcow2.partial"
    assert parse_point_file("rp-0000000042.qcow2") == (42, False)
    assert parse_point_file("rp-0000000042.qcow2.partial") == (42, True)
    assert parse_point_file("rp-42.qcow2") is None
    assert parse_point_file("failover.qcow2") is None
    assert check_disk_id("disk0") == "disk0"
    for bad in ("..", "a/b", "", ".hidden"):
        with pytest.raises(InvalidParameter):
            check_disk_id(bad)
