"""Failover state (migration 005): failover IP settings per NIC, point holds, the last test failover."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from standby.domain.enums import ProtocolIFType
from standby.domain.failover import FailoverNetworkSettings
from standby.store import codec
from standby.store.sqlite.connection import Connection
from standby.store.sqlite.repository import Repository, Row


class FailoverNetworkRepository(Repository[FailoverNetworkSettings]):
    """``db.failover_network``: one ``FailoverNetworkSettings`` per (VM, NIC)."""

    kind = "FailoverNetworkSettings"
    table = "failover_network_settings"
    key_columns = ("vm_id", "nic_id")
    order_by = "vm_id, nic_id"

    def list(self, *, vm_id: str | None = None) -> builtins.list[FailoverNetworkSettings]:
        """Settings of one VM (or all), by NIC id."""
        if vm_id is None:
            return super().list()
        return self._load_many(self._select("vm_id = ?", (vm_id,)))

    def replace_all(self, vm_id: str, settings: Sequence[FailoverNetworkSettings]) -> None:
        """Make ``settings`` the VM's whole set (NICs not named lose theirs), atomically."""
        with self._conn.transaction():
            self._conn.execute(f"DELETE FROM {self.table} WHERE vm_id = ?", (vm_id,))
            for item in settings:
                self.insert(item)

    def put(self, settings: FailoverNetworkSettings) -> None:
        """Store the settings of one NIC, replacing what it had."""
        with self._conn.transaction():
            self._conn.execute(f"DELETE FROM {self.table} WHERE vm_id = ? AND nic_id = ?",
                               (settings.vm_id, settings.nic_id))
            self.insert(settings)

    def _key(self, entity: FailoverNetworkSettings) -> tuple[object, ...]:
        return (entity.vm_id, entity.nic_id)

    def _to_row(self, entity: FailoverNetworkSettings) -> dict[str, object]:
        return {
            "vm_id": entity.vm_id,
            "nic_id": entity.nic_id,
            "protocol_if_type": int(entity.protocol),
            "dhcp_enabled": int(entity.dhcp_enabled),
            "ip_addresses": codec.strings_out(entity.ip_addresses),
            "subnets": codec.strings_out(entity.subnets),
            "default_gateways": codec.strings_out(entity.default_gateways),
            "dns_servers": codec.strings_out(entity.dns_servers),
        }

    def _from_row(self, row: Row) -> FailoverNetworkSettings:
        return FailoverNetworkSettings(
            vm_id=row["vm_id"],
            nic_id=row["nic_id"],
            protocol=ProtocolIFType(row["protocol_if_type"]),
            dhcp_enabled=bool(row["dhcp_enabled"]),
            ip_addresses=codec.strings_in(row["ip_addresses"]),
            subnets=codec.strings_in(row["subnets"]),
            default_gateways=codec.strings_in(row["default_gateways"]),
            dns_servers=codec.strings_in(row["dns_servers"]),
        )


@dataclass(frozen=True, slots=True)
class PointHold:
    """A recovery point some disk stands on; ``reason`` is ``failover``, ``test`` or ``committed``."""

    point_id: str
    holder_id: str
    reason: str
    created_at: datetime


class PointHoldRepository:
    """``db.point_holds``: which recovery points retention must leave alone (with their older chain)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def hold(self, hold: PointHold) -> None:
        """Record ``hold`` (holding the same point twice for the same holder is one hold)."""
        self._conn.execute(
            "INSERT OR REPLACE INTO point_holds (point_id, holder_id, reason, created_at) "
            "VALUES (?, ?, ?, ?)",
            (hold.point_id, hold.holder_id, hold.reason, codec.dt_out(hold.created_at)),
        )

    def release(self, holder_id: str, reason: str | None = None) -> int:
        """Drop the holds of ``holder_id`` (only those of ``reason`` when given); how many went."""
        sql = "DELETE FROM point_holds WHERE holder_id = ?"
        params: list[object] = [holder_id]
        if reason is not None:
            sql += " AND reason = ?"
            params.append(reason)
        return int(self._conn.execute(sql, params).rowcount)

    def list(self, *, holder_id: str | None = None, point_id: str | None = None) -> builtins.list[PointHold]:
        """Holds, optionally of one holder or on one point."""
        clauses, params = ["1"], builtins.list[object]()
        if holder_id is not None:
            clauses.append("holder_id = ?")
            params.append(holder_id)
        if point_id is not None:
            clauses.append("point_id = ?")
            params.append(point_id)
        rows = self._conn.query(
            f"SELECT * FROM point_holds WHERE {' AND '.join(clauses)} ORDER BY created_at, point_id", params
        )
        return [PointHold(r["point_id"], r["holder_id"], r["reason"], codec.dt_in_required(r["created_at"]))
                for r in rows]

    def is_held(self, point_id: str) -> bool:
        """Whether any disk stands on ``point_id``."""
        rows = self._conn.query("SELECT 1 FROM point_holds WHERE point_id = ? LIMIT 1", (point_id,))
        return bool(rows)

    def oldest_held_sequence(self, vm_id: str) -> int | None:
        """The lowest sequence of a held point of ``vm_id``: retention may only merge points above it."""
        rows = self._conn.query(
            "SELECT MIN(p.sequence) AS s FROM point_holds h "
            "JOIN recovery_points p ON p.point_id = h.point_id WHERE p.vm_id = ?",
            (vm_id,),
        )
        value = rows[0]["s"] if rows else None
        return None if value is None else int(value)


class TestFailoverRepository:
    """``db.test_failovers``: when each replica VM last got a test VM (LastTestFailoverTime)."""

    __test__ = False  # not a pytest class, despite the name

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def record(self, vm_id: str, when: datetime, test_vm_id: str | None) -> None:
        """Remember a test failover of ``vm_id`` at ``when``."""
        self._conn.execute(
            "INSERT OR REPLACE INTO test_failovers (vm_id, last_time, test_vm_id) VALUES (?, ?, ?)",
            (vm_id, codec.dt_out(when), test_vm_id),
        )

    def last_time(self, vm_id: str) -> datetime | None:
        """LastTestFailoverTime of ``vm_id`` (None when it never had one)."""
        rows = self._conn.query("SELECT last_time FROM test_failovers WHERE vm_id = ?", (vm_id,))
        return codec.dt_in(rows[0]["last_time"]) if rows else None
