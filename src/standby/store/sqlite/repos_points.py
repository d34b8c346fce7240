"""Repositories for recovery points, collections, collection recovery points and redundancy sets."""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from standby.domain.entities import Collection, CollectionRecoveryPoint, RecoveryPoint, RedundancySet
from standby.domain.enums import (
    CollectionReplicationState,
    CollectionReplicationType,
    ConsistencyLevel,
    RedundancyStatus,
    ReplicationMode,
    TypeOfSet,
    VirtualSystemType,
)
from standby.store import codec
from standby.store.sqlite.repository import Repository, Row


class RecoveryPointRepository(Repository[RecoveryPoint]):
    """``db.recovery_points``: a replica's retained points, listed oldest first (by sequence)."""

    kind = "RecoveryPoint"
    table = "recovery_points"
    key_columns = ("point_id",)
    order_by = "vm_id, sequence, created_at"

    def list(self, *, vm_id: str | None = None) -> builtins.list[RecoveryPoint]:
        """Points of one VM (or all), oldest first."""
        if vm_id is None:
            return super().list()
        return self._load_many(self._select("vm_id = ?", (vm_id,)))

    def latest(self, vm_id: str) -> RecoveryPoint | None:
        """The newest point of ``vm_id`` (highest sequence), or None."""
        rows = self._conn.query(
            "SELECT * FROM recovery_points WHERE vm_id = ? ORDER BY sequence DESC, created_at DESC LIMIT 1",
            (vm_id,),
        )
        return self._from_row(rows[0]) if rows else None

    def _key(self, entity: RecoveryPoint) -> tuple[object, ...]:
        return (entity.point_id,)

    def _to_row(self, entity: RecoveryPoint) -> dict[str, object]:
        return {
            "point_id": entity.point_id,
            "vm_id": entity.vm_id,
            "sequence": entity.sequence,
            "created_at": codec.dt_out(entity.created_at),
            "kind": entity.kind.value,
            "images": codec.pairs_out(entity.images),
            "parent_id": entity.parent_id,
            "collection_point_id": entity.collection_point_id,
        }

    def _from_row(self, row: Row) -> RecoveryPoint:
        return RecoveryPoint(
            point_id=row["point_id"],
            vm_id=row["vm_id"],
            sequence=row["sequence"],
            created_at=codec.dt_in_required(row["created_at"]),
            kind=VirtualSystemType(row["kind"]),
            images=codec.pairs_in(row["images"]),
            parent_id=row["parent_id"],
            collection_point_id=row["collection_point_id"],
        )


class CollectionRepository(Repository[Collection]):
    """``db.collections``: VM groups; the member list keeps its order."""

    kind = "Collection"
    table = "collections"
    key_columns = ("collection_id",)
    order_by = "name, collection_id"
    versioned = True

    def containing(self, vm_id: str) -> builtins.list[Collection]:
        """The collections ``vm_id`` is a member of."""
        rows = self._select(
            "collection_id IN (SELECT collection_id FROM collection_members WHERE vm_id = ?)", (vm_id,)
        )
        return self._load_many(rows)

    def _key(self, entity: Collection) -> tuple[object, ...]:
        return (entity.collection_id,)

    def _to_row(self, entity: Collection) -> dict[str, object]:
        return {
            "collection_id": entity.collection_id,
            "name": entity.name,
            "replication_mode": int(entity.replication_mode),
            "replication_state": int(entity.replication_state),
            "failed_over_type": int(entity.failed_over_type),
            "last_apply_time": codec.dt_out(entity.last_apply_time),
        }

    def _write_children(self, entity: Collection) -> None:
        self._conn.execute("DELETE FROM collection_members WHERE collection_id = ?", (entity.collection_id,))
        for position, vm_id in enumerate(entity.member_vm_ids):
            self._conn.execute(
                "INSERT INTO collection_members (collection_id, position, vm_id) VALUES (?, ?, ?)",
                (entity.collection_id, position, vm_id),
            )

    def _load_many(self, rows: Sequence[Row]) -> builtins.list[Collection]:
        if not rows:
            return []
        ids = [row["collection_id"] for row in rows]
        marks = ", ".join("?" for _ in ids)
        members: dict[str, list[str]] = {cid: [] for cid in ids}
        for m in self._conn.query(
            f"SELECT * FROM collection_members WHERE collection_id IN ({marks}) ORDER BY position", ids
        ):
            members[m["collection_id"]].append(m["vm_id"])
        return [
            Collection(
                collection_id=row["collection_id"],
                name=row["name"],
                member_vm_ids=tuple(members[row["collection_id"]]),
                replication_mode=ReplicationMode(row["replication_mode"]),
                replication_state=CollectionReplicationState(row["replication_state"]),
                failed_over_type=CollectionReplicationType(row["failed_over_type"]),
                last_apply_time=codec.dt_in(row["last_apply_time"]),
                version=row["version"],
            )
            for row in rows
        ]

    def _from_row(self, row: Row) -> Collection:
        return self._load_many([row])[0]


class CollectionPointRepository(Repository[CollectionRecoveryPoint]):
    """``db.collection_points``: group cuts of a collection, oldest first."""

    kind = "CollectionRecoveryPoint"
    table = "collection_points"
    key_columns = ("point_id",)
    order_by = "collection_id, created_at, point_id"

    def list(self, *, collection_id: str | None = None) -> builtins.list[CollectionRecoveryPoint]:
        """Points of one collection (or all), oldest first."""
        if collection_id is None:
            return super().list()
        return self._load_many(self._select("collection_id = ?", (collection_id,)))

    def _key(self, entity: CollectionRecoveryPoint) -> tuple[object, ...]:
        return (entity.point_id,)

    def _to_row(self, entity: CollectionRecoveryPoint) -> dict[str, object]:
        return {
            "point_id": entity.point_id,
            "collection_id": entity.collection_id,
            "created_at": codec.dt_out(entity.created_at),
            "consistency": int(entity.consistency),
            "members": codec.pairs_out(entity.members),
            "pause_ms": entity.pause_ms,
        }

    def _from_row(self, row: Row) -> CollectionRecoveryPoint:
        return CollectionRecoveryPoint(
            point_id=row["point_id"],
            collection_id=row["collection_id"],
            created_at=codec.dt_in_required(row["created_at"]),
            consistency=ConsistencyLevel(row["consistency"]),
            members=codec.pairs_in(row["members"]),
            pause_ms=row["pause_ms"],
        )


class RedundancySetRepository(Repository[RedundancySet]):
    """``db.redundancy_sets``: sets of interchangeable elements with one active member."""

    kind = "RedundancySet"
    table = "redundancy_sets"
    key_columns = ("set_id",)
    order_by = "name, set_id"

    def _key(self, entity: RedundancySet) -> tuple[object, ...]:
        return (entity.set_id,)

    def _to_row(self, entity: RedundancySet) -> dict[str, object]:
        return {
            "set_id": entity.set_id,
            "name": entity.name,
            "type_of_set": int(entity.type_of_set),
            "status": int(entity.status),
            "member_ids": codec.strings_out(entity.member_ids),
            "active_member_id": entity.active_member_id,
        }

    def _from_row(self, row: Row) -> RedundancySet:
        return RedundancySet(
            set_id=row["set_id"],
            name=row["name"],
            type_of_set=TypeOfSet(row["type_of_set"]),
            status=RedundancyStatus(row["status"]),
            member_ids=codec.strings_in(row["member_ids"]),
            active_member_id=row["active_member_id"],
        )
