"""``db.replicas``: the replica-side record of each replica VM (migration 004)."""

from __future__ import annotations

from standby.domain.replica import ReplicaSite
from standby.store import codec
from standby.store.sqlite.repository import Repository, Row


class ReplicaRepository(Repository[ReplicaSite]):
    """Keyed by ``vm_id``; versioned (compare-and-swap updates)."""

    kind = "Replica"
    table = "replicas"
    key_columns = ("vm_id",)
    order_by = "vm_id"
    versioned = True

    def _key(self, entity: ReplicaSite) -> tuple[object, ...]:
        return (entity.vm_id,)

    def _to_row(self, entity: ReplicaSite) -> dict[str, object]:
        return {
            "vm_id": entity.vm_id,
            "primary_host": entity.primary_host,
            "trust_group": entity.trust_group,
            "storage_root": entity.storage_root,
            "base_sequence": entity.base_sequence,
            "created_at": codec.dt_out(entity.created_at),
        }

    def _from_row(self, row: Row) -> ReplicaSite:
        return ReplicaSite(
            vm_id=row["vm_id"],
            primary_host=row["primary_host"],
            trust_group=row["trust_group"],
            storage_root=row["storage_root"],
            created_at=codec.dt_in_required(row["created_at"]),
            base_sequence=row["base_sequence"],
            version=row["version"],
        )
