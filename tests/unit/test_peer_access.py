"""The peer-route table (domain/peer_access.py) for every route × caller kind, how callers are classified,
and ``PeerAccess`` over a real SQLite store (the relation it reads for each kind of route)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from standby.domain.entities import (
    AuthorizationEntry,
    Relationship,
    ReplicationSettings,
    ServiceSettings,
    VirtualMachine,
)
from standby.domain.enums import RelationshipIndex, ReplicationMode, ReplicationState
from standby.domain.errors import AccessDenied, NotFound
from standby.domain.peer_access import (
    RULES,
    CallerIdentity,
    CallerKind,
    PeerRoute,
    Relation,
    admits,
    check,
    classify,
)
from standby.domain.replica import ReplicaSite
from standby.engine.peer_access import PeerAccess
from standby.store.sqlite.database import Database

K = CallerKind
R = PeerRoute
_ALL = (K.OWNER, K.OWNER_WITHOUT_ENTRY, K.SAME_GROUP, K.OTHER_GROUP, K.NO_ENTRY, K.WRONG_CA)

#: Written out by hand from docs/security.md, not derived from ``RULES``: what each caller kind may do.
EXPECTED: dict[PeerRoute, set[CallerKind]] = {
    R.PING: {K.OWNER, K.SAME_GROUP, K.OTHER_GROUP},
    R.CREATE_REPLICA: {K.OWNER, K.SAME_GROUP, K.OTHER_GROUP},
    R.REPLICA_STATUS: {K.OWNER, K.SAME_GROUP},
    R.PUT_LOG: {K.OWNER, K.SAME_GROUP},
    R.HEARTBEAT: {K.OWNER, K.SAME_GROUP},
    R.HASHES: {K.OWNER, K.SAME_GROUP},
    R.SET_STATE: {K.OWNER, K.SAME_GROUP},
    R.REMOVE_REPLICA: {K.OWNER, K.SAME_GROUP},
    R.REPLICA_SETTINGS: {K.OWNER, K.SAME_GROUP},
    R.PLANNED_TAKE_OVER: {K.OWNER},
    R.VM_RUNNING: {K.OWNER, K.OWNER_WITHOUT_ENTRY},
    R.BECOME_REPLICA: {K.OWNER},
    R.PLANNED_PREPARE: {K.OWNER},
    R.PLANNED_CANCEL: {K.OWNER},
}


def test_the_table_covers_every_route() -> None:
    assert set(RULES) == set(PeerRoute) == set(EXPECTED)


@pytest.mark.parametrize("kind", _ALL, ids=str)
@pytest.mark.parametrize("route", list(PeerRoute), ids=str)
def test_route_by_caller_kind(route: PeerRoute, kind: CallerKind) -> None:
    assert admits(route, kind) is (kind in EXPECTED[route])


A = CallerIdentity("hosta.lab", ("hosta.lab",), ("10.0.0.1",))
C = CallerIdentity("hostc.lab", ("hostc.lab",), ("10.0.0.3",))


def _entry(pattern: str, group: str = "") -> AuthorizationEntry:
    return AuthorizationEntry(pattern, group, "/srv/replicas")


@pytest.mark.parametrize(
    ("identity", "entry", "relation", "kind"),
    [
        (A, _entry("hosta.lab"), Relation(("hosta.lab",)), K.OWNER),
        (A, _entry("*.lab"), Relation(("10.0.0.1",)), K.OWNER),  # recorded by address: the IP SAN counts
        (A, None, Relation(("HOSTA.lab.",)), K.OWNER_WITHOUT_ENTRY),
        (C, _entry("hostc.lab", "site-1"), Relation(("hosta.lab",), "site-1"), K.SAME_GROUP),
        (C, _entry("hostc.lab", "SITE-1"), Relation(("hosta.lab",), "site-1"), K.SAME_GROUP),
        (C, _entry("hostc.lab", "site-2"), Relation(("hosta.lab",), "site-1"), K.OTHER_GROUP),
        # No group given: a group of its own, never shared, even with another entry that has none.
        (C, _entry("hostc.lab"), Relation(("hosta.lab",), ""), K.OTHER_GROUP),
        (C, None, Relation(("hosta.lab",), "site-1"), K.NO_ENTRY),
        (C, _entry("hostc.lab"), None, K.OTHER_GROUP),
        (C, _entry("hostc.lab"), Relation(("10.0.0.1",)), K.OTHER_GROUP),  # another host's address
        (None, _entry("*"), Relation(("hosta.lab",)), K.WRONG_CA),
        (CallerIdentity(""), _entry("*"), None, K.WRONG_CA),
    ],
)
def test_classify(identity: CallerIdentity | None, entry: AuthorizationEntry | None,
                  relation: Relation | None, kind: CallerKind) -> None:
    assert classify(identity, entry, relation) is kind


def test_a_name_is_not_an_address_and_the_other_way_round() -> None:
    assert CallerIdentity.named("10.0.0.1").is_for("10.0.0.1")
    assert not CallerIdentity.named("10.0.0.1").is_for("hosta.lab")
    assert not CallerIdentity("hosta.lab", ("hosta.lab",)).is_for("10.0.0.1")
    assert CallerIdentity("h", (), ("fd00::1",)).is_for("[FD00:0::1]")
    assert not A.is_for("")


@pytest.mark.parametrize(
    ("entry", "inbound", "message_id"),
    [
        (None, True, "PrimaryNotAuthorized"),
        (None, False, "RecoveryServerDisabled"),
        (_entry("hostc.lab"), True, "PeerNotOwner"),
    ],
)
def test_refusals_say_why(entry: AuthorizationEntry | None, inbound: bool, message_id: str) -> None:
    with pytest.raises(AccessDenied) as info:
        check(R.PUT_LOG, C, entry, Relation(("hosta.lab",)), inbound_enabled=inbound)
    assert info.value.message_id == message_id
    assert info.value.code == 32769


def test_no_certificate_is_refused_for_every_route() -> None:
    for route in PeerRoute:
        with pytest.raises(AccessDenied) as info:
            check(route, None, _entry("*"), None)
        assert info.value.message_id == "PeerCertificateRequired"


# -- PeerAccess over a store ------------------------------------------------------------------------------


VM = "0A6B3C1E-0000-4000-8000-000000000001"


@pytest.fixture()
def db(tmp_path: Path) -> Database:
    store = Database.open(tmp_path / "standby.db")
    store.service_settings.put(ServiceSettings(recovery_server_enabled=True))
    for pattern, group in (("hosta.lab", "site-1"), ("hostb.lab", "site-1"), ("hostc.lab", "")):
        store.auth_entries.insert(AuthorizationEntry(pattern, group, str(tmp_path)))
    return store


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _replica_of_a(db: Database, tmp_path: Path) -> None:
    db.vms.insert(VirtualMachine(VM, "web", 128, 1, replication_mode=ReplicationMode.REPLICA))
    db.replicas.insert(ReplicaSite(VM, "hosta.lab", "site-1", str(tmp_path), NOW))


def _primary_replicating_to_b(db: Database) -> None:
    db.vms.insert(VirtualMachine(VM, "web", 128, 1, replication_mode=ReplicationMode.PRIMARY))
    settings = ReplicationSettings(recovery_connection_point="hostb.lab")
    db.relationships.insert(Relationship(VM, RelationshipIndex.PRIMARY, ReplicationState.REPLICATING,
                                         settings=settings))


def test_replica_routes_admit_the_recorded_primary_and_its_group_only(db: Database, tmp_path: Path) -> None:
    _replica_of_a(db, tmp_path)
    access = PeerAccess(db)
    assert access.admit(R.PUT_LOG, "hosta.lab", VM).kind is K.OWNER
    assert access.admit(R.PUT_LOG, "hostb.lab", VM).kind is K.SAME_GROUP
    with pytest.raises(AccessDenied) as info:
        access.admit(R.PUT_LOG, "hostc.lab", VM)
    assert info.value.message_id == "PeerNotOwner"
    with pytest.raises(AccessDenied):
        access.admit(R.PLANNED_TAKE_OVER, "hostb.lab", VM)
    with pytest.raises(NotFound):
        access.admit(R.PUT_LOG, "hosta.lab", "0A6B3C1E-0000-4000-8000-0000000000FF")


def test_primary_vm_routes_admit_its_recorded_replica_only(db: Database) -> None:
    _primary_replicating_to_b(db)
    access = PeerAccess(db)
    assert access.admit(R.BECOME_REPLICA, "hostb.lab", VM).kind is K.OWNER
    for route in (R.BECOME_REPLICA, R.PLANNED_PREPARE, R.PLANNED_CANCEL, R.VM_RUNNING):
        with pytest.raises(AccessDenied):
            access.admit(route, "hostc.lab", VM)
        with pytest.raises(AccessDenied):
            access.admit(route, "hosta.lab", VM)  # same trust group as B, but not its replica
    db.auth_entries.delete("hostb.lab")
    assert access.admit(R.VM_RUNNING, "hostb.lab", VM).kind is K.OWNER_WITHOUT_ENTRY
    with pytest.raises(AccessDenied):
        access.admit(R.BECOME_REPLICA, "hostb.lab", VM)
