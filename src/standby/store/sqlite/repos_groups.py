"""Repositories of groups and redundancy sets (migration 007): collection replication settings, group cycles
with their statistics resets, and failover indications."""

from __future__ import annotations

import builtins
from datetime import datetime

from standby.domain.entities import ReplicationSettings
from standby.domain.enums import ConsistencyLevel, FailoverIndicationType, PerceivedSeverity
from standby.domain.groups import FailoverIndication, GroupCycleRecord, GroupOutcome
from standby.store import codec
from standby.store.sqlite.connection import Connection
from standby.store.sqlite.repository import Row


class CollectionSettingsRepository:
    """``db.collection_settings``: the Msvm_CollectionReplicationSettingData of a collection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def put(self, collection_id: str, element_name: str, settings: ReplicationSettings) -> None:
        """Store (or replace) the settings of a collection."""
        self._conn.execute(
            "INSERT OR REPLACE INTO collection_settings (collection_id, element_name, settings)"
            " VALUES (?, ?, ?)", (collection_id, element_name, codec.settings_out(settings)))

    def find(self, collection_id: str) -> tuple[str, ReplicationSettings] | None:
        """``(ElementName, settings)`` of a collection, or None when it has none."""
        rows = self._conn.query("SELECT * FROM collection_settings WHERE collection_id = ?", (collection_id,))
        if not rows:
            return None
        return rows[0]["element_name"], codec.settings_in(rows[0]["settings"])

    def delete(self, collection_id: str) -> None:
        """Forget the settings (replication of the collection was removed)."""
        self._conn.execute("DELETE FROM collection_settings WHERE collection_id = ?", (collection_id,))


class GroupCycleRepository:
    """``db.group_cycles``: append-only group cycle records, plus the reset time of their statistics."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def record(self, rec: GroupCycleRecord) -> None:
        """Append one record."""
        self._conn.execute(
            "INSERT INTO collection_cycles (collection_id, cut_id, outcome, started_at, finished_at,"
            " wire_bytes, pause_ms, consistency, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rec.collection_id, rec.cut_id, rec.outcome.value, codec.dt_out(rec.started_at),
             codec.dt_out(rec.finished_at), rec.wire_bytes, rec.pause_ms, int(rec.consistency),
             rec.detail[:500]))

    def list(self, collection_id: str, *, since: datetime | None = None,
             limit: int = 100_000) -> builtins.list[GroupCycleRecord]:
        """Records of a collection finished at or after ``since``, oldest first (the newest ``limit``)."""
        where, params = "collection_id = ?", builtins.list[object]([collection_id])
        if since is not None:
            where += " AND finished_at >= ?"
            params.append(codec.dt_out(since))
        rows = self._conn.query(
            f"SELECT * FROM collection_cycles WHERE {where} ORDER BY cycle_id DESC LIMIT ?",
            (*params, max(0, limit)))
        return [_record(row) for row in reversed(rows)]

    def reset(self, collection_id: str, at: datetime) -> None:
        """ResetReplicationStatistics of a collection: counting starts again at ``at``."""
        self._conn.execute(
            "INSERT OR REPLACE INTO collection_stat_resets (collection_id, reset_at) VALUES (?, ?)",
            (collection_id, codec.dt_out(at)))

    def reset_at(self, collection_id: str) -> datetime | None:
        """When the statistics of a collection were last reset."""
        rows = self._conn.query("SELECT reset_at FROM collection_stat_resets WHERE collection_id = ?",
                                (collection_id,))
        return codec.dt_in(rows[0]["reset_at"]) if rows else None

    def forget(self, collection_id: str) -> None:
        """Drop every record and the reset time (replication of the collection was removed)."""
        with self._conn.transaction():
            self._conn.execute("DELETE FROM collection_cycles WHERE collection_id = ?", (collection_id,))
            self._conn.execute("DELETE FROM collection_stat_resets WHERE collection_id = ?", (collection_id,))


class FailoverIndicationRepository:
    """``db.failover_indications``: one record per element a redundancy-set Failover moved."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def insert(self, item: FailoverIndication) -> None:
        """Keep one indication."""
        self._conn.execute(
            "INSERT INTO failover_indications (indication_id, set_id, hosted_element, hosting_system,"
            " previous_hosting_system, failover_type, other_type, severity, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (item.indication_id, item.set_id, item.hosted_element, item.hosting_system,
             item.previous_hosting_system, int(item.failover_type), item.other_type, int(item.severity),
             codec.dt_out(item.created_at)))

    def list(self, *, limit: int = 1000) -> builtins.list[FailoverIndication]:
        """The newest ``limit`` indications, oldest first."""
        rows = self._conn.query(
            "SELECT * FROM failover_indications ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (max(0, limit),))
        return [_indication(row) for row in reversed(rows)]


def _record(row: Row) -> GroupCycleRecord:
    return GroupCycleRecord(
        collection_id=row["collection_id"], cut_id=row["cut_id"], outcome=GroupOutcome(row["outcome"]),
        started_at=codec.dt_in_required(row["started_at"]),
        finished_at=codec.dt_in_required(row["finished_at"]), wire_bytes=row["wire_bytes"],
        pause_ms=row["pause_ms"], consistency=ConsistencyLevel(row["consistency"]), detail=row["detail"])


def _indication(row: Row) -> FailoverIndication:
    return FailoverIndication(
        indication_id=row["indication_id"], set_id=row["set_id"], hosted_element=row["hosted_element"],
        hosting_system=row["hosting_system"], previous_hosting_system=row["previous_hosting_system"],
        failover_type=FailoverIndicationType(row["failover_type"]), other_type=row["other_type"],
        severity=PerceivedSeverity(row["severity"]), created_at=codec.dt_in_required(row["created_at"]))
