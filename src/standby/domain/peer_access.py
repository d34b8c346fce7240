"""Who may call which peer route: one table, route × caller kind (docs/security.md).

A peer route touches one relationship, seen from this host:

- **replica** routes act on a replica this host holds; the other end is the *recorded primary* (the host
  whose certificate created the replica) and the replica remembers the trust group of the entry that
  admitted it;
- **VM** routes act on a VM of this host; the other ends are the hosts its relationships record: the
  *recorded replica* of each (the ``RecoveryConnectionPoint`` this host replicates to) and, when the VM
  is a replica here, its recorded primary;
- **new** routes touch no relationship yet (``ping``, creating a replica).

The caller is the host its client certificate names (the TLS layer has checked the site CA). It is the
*owner* when its certificate is valid for the other end's recorded name or address, the way a TLS client
checks a server: the caller's DNS names and IP addresses, compared case-insensitively. An owner with no
authorization entry here is a distinct kind: the recorded replica need not be allowed to replicate *into*
this primary, but may ask it whether the VM still runs.

Trust groups are explicit: an entry added without one gets a group of its own (stored as ``""``), so two
hosts share a group only when an administrator gave both entries the same non-empty name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum

from standby.domain.entities import AuthorizationEntry, ServiceSettings
from standby.domain.errors import AccessDenied
from standby.domain.replica import matching_entry


class PeerRoute(StrEnum):
    """The routes of ``/peer/v1`` (their paths are in ``peer.routes``)."""

    PING = "ping"
    CREATE_REPLICA = "create-replica"
    REPLICA_STATUS = "replica-status"
    PUT_LOG = "put-log"
    HEARTBEAT = "heartbeat"
    HASHES = "hashes"
    SET_STATE = "set-state"
    REMOVE_REPLICA = "remove-replica"
    REPLICA_SETTINGS = "replica-settings"
    PLANNED_TAKE_OVER = "planned-take-over"
    VM_RUNNING = "vm-running"
    BECOME_REPLICA = "become-replica"
    PLANNED_PREPARE = "planned-prepare"
    PLANNED_CANCEL = "planned-cancel"


class Subject(Enum):
    """What relationship a route touches (see the module docstring)."""

    NEW = "new"
    REPLICA = "replica"
    PRIMARY_VM = "primary-vm"


class CallerKind(StrEnum):
    """How a caller stands to the relationship a route touches."""

    OWNER = "owner"  # the recorded other end, admitted by an entry here
    OWNER_WITHOUT_ENTRY = "owner without entry"  # the recorded other end, no entry admits it
    SAME_GROUP = "same group"  # not the other end, admitted by an entry of the relationship's trust group
    OTHER_GROUP = "other group"  # admitted by an entry of another (or no shared) trust group
    NO_ENTRY = "no entry"  # a certificate of the site CA, but no entry admits it and it owns nothing
    WRONG_CA = "wrong CA"  # no verified certificate naming a host: the listener refuses before any route


_ANY_ENTRY = frozenset({CallerKind.OWNER, CallerKind.SAME_GROUP, CallerKind.OTHER_GROUP})
_PRIMARY_OR_GROUP = frozenset({CallerKind.OWNER, CallerKind.SAME_GROUP})
_OWNER = frozenset({CallerKind.OWNER})

#: route → (what it touches, the caller kinds it admits). Everything not listed is refused.
RULES: Mapping[PeerRoute, tuple[Subject, frozenset[CallerKind]]] = {
    PeerRoute.PING: (Subject.NEW, _ANY_ENTRY),
    PeerRoute.CREATE_REPLICA: (Subject.NEW, _ANY_ENTRY),
    # A VM may move among the primaries of one trust group and go on replicating to the same replica.
    PeerRoute.REPLICA_STATUS: (Subject.REPLICA, _PRIMARY_OR_GROUP),
    PeerRoute.PUT_LOG: (Subject.REPLICA, _PRIMARY_OR_GROUP),
    PeerRoute.HEARTBEAT: (Subject.REPLICA, _PRIMARY_OR_GROUP),
    PeerRoute.HASHES: (Subject.REPLICA, _PRIMARY_OR_GROUP),
    PeerRoute.SET_STATE: (Subject.REPLICA, _PRIMARY_OR_GROUP),
    PeerRoute.REMOVE_REPLICA: (Subject.REPLICA, _PRIMARY_OR_GROUP),
    PeerRoute.REPLICA_SETTINGS: (Subject.REPLICA, _PRIMARY_OR_GROUP),
    # Moving the VM to this host: only the primary that prepared it.
    PeerRoute.PLANNED_TAKE_OVER: (Subject.REPLICA, _OWNER),
    # The split-brain guard of the replica's unplanned failover: the replica need not replicate here.
    PeerRoute.VM_RUNNING: (Subject.PRIMARY_VM, frozenset({CallerKind.OWNER, CallerKind.OWNER_WITHOUT_ENTRY})),
    # Turning this host's VM into a replica, or locking it for a move: only its own replica host.
    PeerRoute.BECOME_REPLICA: (Subject.PRIMARY_VM, _OWNER),
    PeerRoute.PLANNED_PREPARE: (Subject.PRIMARY_VM, _OWNER),
    PeerRoute.PLANNED_CANCEL: (Subject.PRIMARY_VM, _OWNER),
}


@dataclass(frozen=True, slots=True)
class CallerIdentity:
    """What a verified client certificate says about the caller: its host name (first DNS SAN, else CN),
    every DNS name and every IP address it is valid for."""

    name: str
    dns_names: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()

    @classmethod
    def named(cls, name: str) -> CallerIdentity:
        """A certificate naming exactly ``name`` (a host name or an IP address)."""
        if _address(name) is not None:
            return cls(name, (), (name,))
        return cls(name, (name,))

    def is_for(self, point: str) -> bool:
        """Whether this certificate is valid for ``point`` (a recorded host name or address)."""
        wanted = point.strip().lower().rstrip(".")
        if not wanted:
            return False
        address = _address(wanted)
        if address is not None:
            return any(_address(mine) == address for mine in self.addresses)
        names = {self.name, *self.dns_names}
        return any(name.strip().lower().rstrip(".") == wanted for name in names if name)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Relation:
    """The relationship a route touches: its recorded other end(s) and, on the replica side, the trust
    group recorded with it. ``None`` for a route that touches none yet."""

    other_ends: tuple[str, ...]
    trust_group: str = ""


def shares_group(entry: AuthorizationEntry, trust_group: str) -> bool:
    """Whether ``entry`` names the same explicit trust group (an empty group is the entry's own)."""
    mine = entry.trust_group.strip().lower()
    return bool(mine) and mine == trust_group.strip().lower()


def classify(identity: CallerIdentity | None, entry: AuthorizationEntry | None,
             relation: Relation | None) -> CallerKind:
    """The kind of caller ``identity`` is for ``relation``, given the entry admitting it (or None)."""
    if identity is None or not identity.name:
        return CallerKind.WRONG_CA
    owner = relation is not None and any(identity.is_for(end) for end in relation.other_ends if end)
    if owner:
        return CallerKind.OWNER if entry is not None else CallerKind.OWNER_WITHOUT_ENTRY
    if entry is None:
        return CallerKind.NO_ENTRY
    if relation is not None and shares_group(entry, relation.trust_group):
        return CallerKind.SAME_GROUP
    return CallerKind.OTHER_GROUP


def admits(route: PeerRoute, kind: CallerKind) -> bool:
    """The table's answer."""
    return kind in RULES[route][1]


def admission_entry(settings: ServiceSettings, entries: Iterable[AuthorizationEntry],
                    identity: CallerIdentity | None) -> AuthorizationEntry | None:
    """The entry admitting ``identity`` to replicate here (None also when inbound replication is off)."""
    if identity is None or not settings.recovery_server_enabled:
        return None
    return matching_entry(entries, identity.name)


def check(route: PeerRoute, identity: CallerIdentity | None, entry: AuthorizationEntry | None,
          relation: Relation | None, *, inbound_enabled: bool = True) -> CallerKind:
    """The caller's kind when the table admits it for ``route``; ``AccessDenied`` (32769) otherwise, with
    the reason an administrator can act on: inbound replication off, no entry, or not the owner."""
    kind = classify(identity, entry, relation)
    if admits(route, kind):
        return kind
    caller = identity.name if identity is not None else ""
    if kind is CallerKind.WRONG_CA:
        raise AccessDenied("a client certificate naming the calling host is required",
                           message_id="PeerCertificateRequired")
    if entry is None and not inbound_enabled and kind is not CallerKind.OWNER_WITHOUT_ENTRY:
        raise AccessDenied("this host does not accept inbound replication (RecoveryServerEnabled is false)",
                           message_id="RecoveryServerDisabled")
    if kind is CallerKind.NO_ENTRY:
        raise AccessDenied(f"no authorization entry allows primary server {caller!r}",
                           message_id="PrimaryNotAuthorized", host=caller)
    ends = ", ".join(end for end in relation.other_ends if end) if relation is not None else ""
    raise AccessDenied(f"{caller!r} ({kind}) may not call {route} on a relationship whose other end is "
                       f"{ends or 'not recorded'}", message_id="PeerNotOwner", host=caller, route=str(route),
                       kind=str(kind), owner=ends or "-")
