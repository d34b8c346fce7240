"""Repositories for hosts, VMs (with their disks and NICs) and replication relationships."""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from standby.domain.entities import Disk, Host, Nic, Relationship, VirtualMachine
from standby.domain.enums import (
    EnabledState,
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    ReplicationType,
)
from standby.store import codec
from standby.store.sqlite.repository import Repository, Row


class HostRepository(Repository[Host]):
    """``db.hosts``: the machines this host knows (itself and its peers)."""

    kind = "Host"
    table = "hosts"
    key_columns = ("host_id",)
    order_by = "name, host_id"

    def _key(self, entity: Host) -> tuple[object, ...]:
        return (entity.host_id,)

    def _to_row(self, entity: Host) -> dict[str, object]:
        return {"host_id": entity.host_id, "name": entity.name, "fqdn": entity.fqdn}

    def _from_row(self, row: Row) -> Host:
        return Host(host_id=row["host_id"], name=row["name"], fqdn=row["fqdn"])


class VmRepository(Repository[VirtualMachine]):
    """``db.vms``: virtual machines with their disks and NICs (child rows keep their order)."""

    kind = "VM"
    table = "vms"
    key_columns = ("vm_id",)
    order_by = "name, vm_id"
    versioned = True

    def _key(self, entity: VirtualMachine) -> tuple[object, ...]:
        return (entity.vm_id,)

    def _to_row(self, entity: VirtualMachine) -> dict[str, object]:
        return {
            "vm_id": entity.vm_id,
            "name": entity.name,
            "memory_mib": entity.memory_mib,
            "cpus": entity.cpus,
            "kernel": entity.kernel,
            "initrd": entity.initrd,
            "append": entity.append,
            "enabled_state": int(entity.enabled_state),
            "replication_mode": int(entity.replication_mode),
            "locked_from_start": int(entity.locked_from_start),
            "created_at": codec.dt_out(entity.created_at),
        }

    def _write_children(self, entity: VirtualMachine) -> None:
        self._conn.execute("DELETE FROM vm_disks WHERE vm_id = ?", (entity.vm_id,))
        self._conn.execute("DELETE FROM vm_nics WHERE vm_id = ?", (entity.vm_id,))
        for position, disk in enumerate(entity.disks):
            self._conn.execute(
                "INSERT INTO vm_disks (vm_id, position, disk_id, path, size_bytes) VALUES (?, ?, ?, ?, ?)",
                (entity.vm_id, position, disk.disk_id, disk.path, disk.size_bytes),
            )
        for position, nic in enumerate(entity.nics):
            self._conn.execute(
                "INSERT INTO vm_nics (vm_id, position, nic_id, mac, network) VALUES (?, ?, ?, ?, ?)",
                (entity.vm_id, position, nic.nic_id, nic.mac, nic.network),
            )

    def _load_many(self, rows: Sequence[Row]) -> builtins.list[VirtualMachine]:
        if not rows:
            return []
        ids = [row["vm_id"] for row in rows]
        marks = ", ".join("?" for _ in ids)
        disks: dict[str, list[Disk]] = {vm_id: [] for vm_id in ids}
        nics: dict[str, list[Nic]] = {vm_id: [] for vm_id in ids}
        for d in self._conn.query(f"SELECT * FROM vm_disks WHERE vm_id IN ({marks}) ORDER BY position", ids):
            disks[d["vm_id"]].append(Disk(disk_id=d["disk_id"], path=d["path"], size_bytes=d["size_bytes"]))
        for n in self._conn.query(f"SELECT * FROM vm_nics WHERE vm_id IN ({marks}) ORDER BY position", ids):
            nics[n["vm_id"]].append(Nic(nic_id=n["nic_id"], mac=n["mac"], network=n["network"]))
        return [self._vm(row, tuple(disks[row["vm_id"]]), tuple(nics[row["vm_id"]])) for row in rows]

    def _from_row(self, row: Row) -> VirtualMachine:
        return self._load_many([row])[0]

    @staticmethod
    def _vm(row: Row, disks: tuple[Disk, ...], nics: tuple[Nic, ...]) -> VirtualMachine:
        return VirtualMachine(
            vm_id=row["vm_id"],
            name=row["name"],
            memory_mib=row["memory_mib"],
            cpus=row["cpus"],
            disks=disks,
            nics=nics,
            kernel=row["kernel"],
            initrd=row["initrd"],
            append=row["append"],
            enabled_state=EnabledState(row["enabled_state"]),
            replication_mode=ReplicationMode(row["replication_mode"]),
            locked_from_start=bool(row["locked_from_start"]),
            created_at=codec.dt_in(row["created_at"]),
            version=row["version"],
        )

    def find_by_name(self, name: str) -> builtins.list[VirtualMachine]:
        """VMs whose ``name`` (ElementName) equals ``name``; names need not be unique, as in Hyper-V."""
        return self._load_many(self._select("name = ?", (name,)))


class RelationshipRepository(Repository[Relationship]):
    """``db.relationships``: keyed by ``(vm_id, index)``; settings are stored as one JSON document.

    ``get(vm_id, RelationshipIndex.PRIMARY)``, ``find(...)`` and ``delete(...)`` take both key parts.
    """

    kind = "Relationship"
    table = "relationships"
    key_columns = ("vm_id", "idx")
    order_by = "vm_id, idx"
    versioned = True

    def list(
        self, *, vm_id: str | None = None, state: ReplicationState | None = None
    ) -> builtins.list[Relationship]:
        """Relationships, optionally only those of one VM or in one state."""
        clauses, params = ["1"], builtins.list[object]()
        if vm_id is not None:
            clauses.append("vm_id = ?")
            params.append(vm_id)
        if state is not None:
            clauses.append("state = ?")
            params.append(int(state))
        return self._load_many(self._select(" AND ".join(clauses), params))

    def _key(self, entity: Relationship) -> tuple[object, ...]:
        return (entity.vm_id, int(entity.index))

    def _to_row(self, entity: Relationship) -> dict[str, object]:
        before = entity.state_before_failover
        return {
            "vm_id": entity.vm_id,
            "idx": int(entity.index),
            "state": int(entity.state),
            "health": int(entity.health),
            "settings": codec.settings_out(entity.settings),
            "failed_over_type": int(entity.failed_over_type),
            "last_replication_type": int(entity.last_replication_type),
            "last_replication_time": codec.dt_out(entity.last_replication_time),
            "last_apply_time": codec.dt_out(entity.last_apply_time),
            "last_app_consistent_time": codec.dt_out(entity.last_app_consistent_time),
            "state_before_failover": None if before is None else int(before),
            "intent": entity.intent,
            "sequence": entity.sequence,
        }

    def _from_row(self, row: Row) -> Relationship:
        before = row["state_before_failover"]
        return Relationship(
            vm_id=row["vm_id"],
            index=RelationshipIndex(row["idx"]),
            state=ReplicationState(row["state"]),
            health=ReplicationHealth(row["health"]),
            settings=codec.settings_in(row["settings"]),
            failed_over_type=ReplicationType(row["failed_over_type"]),
            last_replication_type=ReplicationType(row["last_replication_type"]),
            last_replication_time=codec.dt_in(row["last_replication_time"]),
            last_apply_time=codec.dt_in(row["last_apply_time"]),
            last_app_consistent_time=codec.dt_in(row["last_app_consistent_time"]),
            state_before_failover=None if before is None else ReplicationState(before),
            intent=row["intent"],
            sequence=row["sequence"],
            version=row["version"],
        )
