"""``PeerAccess``: the one place a peer route's caller is checked against the relationship it touches.

It reads what the table of ``domain.peer_access`` needs (the service settings, the entry admitting the
caller, the replica record or the VM's relationships) and asks it; the use cases behind every peer route
call ``admit`` first. A caller given as a plain string is a certificate naming exactly that host (what
in-process callers and unit tests have).
"""

from __future__ import annotations

from dataclasses import dataclass

from standby.domain.entities import AuthorizationEntry
from standby.domain.enums import RelationshipIndex
from standby.domain.errors import NotFound
from standby.domain.peer_access import (
    RULES,
    CallerIdentity,
    CallerKind,
    PeerRoute,
    Relation,
    Subject,
    admission_entry,
    check,
)
from standby.domain.replica import ReplicaSite
from standby.store.port import Store

#: The caller of a peer route: its verified certificate, or a host name standing for one.
Caller = CallerIdentity | str


def identity_of(caller: Caller) -> CallerIdentity:
    """``caller`` as a certificate identity."""
    return caller if isinstance(caller, CallerIdentity) else CallerIdentity.named(caller)


@dataclass(frozen=True, slots=True)
class Admission:
    """Who was let in and why: its kind, the entry admitting it (None for an owner without one), and the
    replica record a replica route touches."""

    caller: CallerIdentity
    kind: CallerKind
    entry: AuthorizationEntry | None
    site: ReplicaSite | None = None

    @property
    def host(self) -> str:
        """The caller's host name (what replica records and events store)."""
        return self.caller.name


class PeerAccess:
    """``admit(route, caller, vm_id)`` over the store."""

    def __init__(self, db: Store) -> None:
        self._db = db

    def admit(self, route: PeerRoute, caller: Caller, vm_id: str | None = None) -> Admission:
        """The admission of ``caller`` for ``route`` on ``vm_id``; AccessDenied (32769) when the table
        refuses it, NotFound (32773) for a VM or replica this host does not have (every caller holds a
        certificate of the site CA: the listener refused the others)."""
        identity = identity_of(caller)
        settings = self._db.service_settings.get()
        entry = admission_entry(settings, self._db.auth_entries.list(), identity)
        subject = RULES[route][0]
        site: ReplicaSite | None = None
        relation: Relation | None = None
        if subject is Subject.REPLICA:
            site = self._db.replicas.find(_key(vm_id))
            if site is None:
                raise NotFound(f"this host holds no replica of virtual machine {vm_id}",
                               message_id="ObjectNotFound", kind="Replica", key=_key(vm_id))
            relation = Relation((site.primary_host,), site.trust_group)
        elif subject is Subject.PRIMARY_VM:
            relation = self._primary_vm(vm_id)
        kind = check(route, identity, entry, relation, inbound_enabled=settings.recovery_server_enabled)
        return Admission(identity, kind, entry, site)

    def _primary_vm(self, vm_id: str | None) -> Relation:
        vm = self._db.vms.get(_key(vm_id))  # NotFound (32773) for a VM this host does not have
        ends = []
        for index in RelationshipIndex:
            relationship = self._db.relationships.find(vm.vm_id, int(index))
            if relationship is not None and relationship.settings.recovery_connection_point:
                ends.append(relationship.settings.recovery_connection_point)
        site = self._db.replicas.find(vm.vm_id)
        if site is not None:  # a replica here: its primary is the other end of its relationship
            ends.append(site.primary_host)
        return Relation(tuple(ends))


def _key(vm_id: str | None) -> str:
    return (vm_id or "").strip().upper()
