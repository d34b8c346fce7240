"""Repositories of the primary side of replication (migration 003): cycle records, statistics resets and
the disk stamps taken when a replicated VM stops cleanly."""

from __future__ import annotations

import builtins
from datetime import datetime

from standby.domain.cycles import CycleKind, CycleOutcome, CycleRecord
from standby.store import codec
from standby.store.sqlite.connection import Connection
from standby.store.sqlite.repository import Row

#: (disk_id, size in bytes, mtime in ns) of one image.
DiskStamp = tuple[str, int, int]


class CycleRepository:
    """``db.cycles``: append-only cycle records per relationship, plus the reset time of its statistics."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def record(self, rec: CycleRecord) -> None:
        """Append one cycle record."""
        self._conn.execute(
            "INSERT INTO replication_cycles (vm_id, idx, sequence, kind, outcome, started_at, finished_at,"
            " dirty_bytes, wire_bytes, latency_ms, app_consistent, app_consistent_failed, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rec.vm_id, rec.index, rec.sequence, rec.kind.value, rec.outcome.value,
             codec.dt_out(rec.started_at), codec.dt_out(rec.finished_at), rec.dirty_bytes, rec.wire_bytes,
             rec.latency_ms, int(rec.app_consistent), int(rec.app_consistent_failed), rec.detail[:500]),
        )

    def list(self, vm_id: str, index: int, *, since: datetime | None = None,
             until: datetime | None = None, limit: int = 100_000) -> builtins.list[CycleRecord]:
        """Records of a relationship finished in ``[since, until)``, oldest first (the newest ``limit``)."""
        clauses, params = ["vm_id = ?", "idx = ?"], builtins.list[object]([vm_id, index])
        if since is not None:
            clauses.append("finished_at >= ?")
            params.append(codec.dt_out(since))
        if until is not None:
            clauses.append("finished_at < ?")
            params.append(codec.dt_out(until))
        rows = self._conn.query(
            f"SELECT * FROM replication_cycles WHERE {' AND '.join(clauses)}"
            " ORDER BY cycle_id DESC LIMIT ?", (*params, max(0, limit)))
        return [_record(row) for row in reversed(rows)]

    def purge(self, before: datetime) -> int:
        """Drop records older than ``before``; how many."""
        cursor = self._conn.execute("DELETE FROM replication_cycles WHERE finished_at < ?",
                                    (codec.dt_out(before),))
        return int(cursor.rowcount)

    def forget(self, vm_id: str, index: int) -> None:
        """Drop every record and the reset time of a relationship (it was removed)."""
        with self._conn.transaction():
            self._conn.execute("DELETE FROM replication_cycles WHERE vm_id = ? AND idx = ?", (vm_id, index))
            self._conn.execute("DELETE FROM replication_stat_resets WHERE vm_id = ? AND idx = ?",
                               (vm_id, index))

    def reset(self, vm_id: str, index: int, at: datetime) -> None:
        """ResetReplicationStatistics: counting starts again at ``at``."""
        self._conn.execute(
            "INSERT OR REPLACE INTO replication_stat_resets (vm_id, idx, reset_at) VALUES (?, ?, ?)",
            (vm_id, index, codec.dt_out(at)))

    def reset_at(self, vm_id: str, index: int) -> datetime | None:
        """When the statistics of a relationship were last reset."""
        rows = self._conn.query(
            "SELECT reset_at FROM replication_stat_resets WHERE vm_id = ? AND idx = ?", (vm_id, index))
        return codec.dt_in(rows[0]["reset_at"]) if rows else None


class DiskStampRepository:
    """``db.disk_stamps``: size and mtime of each image of a VM at its last clean stop."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def put(self, vm_id: str, stamps: builtins.list[DiskStamp]) -> None:
        """Replace the stamps of a VM."""
        with self._conn.transaction():
            self._conn.execute("DELETE FROM disk_stamps WHERE vm_id = ?", (vm_id,))
            for disk_id, size, mtime_ns in stamps:
                self._conn.execute(
                    "INSERT INTO disk_stamps (vm_id, disk_id, size, mtime_ns) VALUES (?, ?, ?, ?)",
                    (vm_id, disk_id, size, mtime_ns))

    def get(self, vm_id: str) -> builtins.list[DiskStamp]:
        """The stamps of a VM (empty when none were taken)."""
        rows = self._conn.query(
            "SELECT disk_id, size, mtime_ns FROM disk_stamps WHERE vm_id = ? ORDER BY disk_id", (vm_id,))
        return [(row["disk_id"], int(row["size"]), int(row["mtime_ns"])) for row in rows]

    def clear(self, vm_id: str) -> None:
        """Forget the stamps of a VM (it runs again)."""
        self._conn.execute("DELETE FROM disk_stamps WHERE vm_id = ?", (vm_id,))


def _record(row: Row) -> CycleRecord:
    return CycleRecord(
        vm_id=row["vm_id"], index=int(row["idx"]), sequence=int(row["sequence"]),
        kind=CycleKind(row["kind"]), outcome=CycleOutcome(row["outcome"]),
        started_at=codec.dt_in_required(row["started_at"]),
        finished_at=codec.dt_in_required(row["finished_at"]),
        dirty_bytes=int(row["dirty_bytes"]), wire_bytes=int(row["wire_bytes"]),
        latency_ms=int(row["latency_ms"]), app_consistent=bool(row["app_consistent"]),
        app_consistent_failed=bool(row["app_consistent_failed"]), detail=row["detail"],
    )
