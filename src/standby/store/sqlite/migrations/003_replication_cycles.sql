-- 003: the primary side of replication (issue 4): one row per cycle attempt, statistics resets, and the
-- image stamps taken at a clean VM stop (a disk changed while the VM was off needs a resync).

CREATE TABLE replication_cycles (
    cycle_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    vm_id         TEXT NOT NULL REFERENCES vms (vm_id) ON DELETE CASCADE,
    idx           INTEGER NOT NULL,
    sequence      INTEGER NOT NULL,
    kind          TEXT NOT NULL,      -- delta | initial | resync | planned
    outcome       TEXT NOT NULL,      -- success | miss | network | failure
    started_at    TEXT NOT NULL,
    finished_at   TEXT NOT NULL,
    dirty_bytes   INTEGER NOT NULL,   -- bytes the cut described (data + zero ranges)
    wire_bytes    INTEGER NOT NULL,   -- bytes of the log as shipped
    latency_ms    INTEGER NOT NULL,
    app_consistent         INTEGER NOT NULL,  -- 1 when the guest was frozen for the cut
    app_consistent_failed  INTEGER NOT NULL,  -- 1 when a freeze was wanted and failed
    detail        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX replication_cycles_by_rel ON replication_cycles (vm_id, idx, finished_at);

CREATE TABLE replication_stat_resets (
    vm_id    TEXT NOT NULL REFERENCES vms (vm_id) ON DELETE CASCADE,
    idx      INTEGER NOT NULL,
    reset_at TEXT NOT NULL,
    PRIMARY KEY (vm_id, idx)
);

CREATE TABLE disk_stamps (
    vm_id    TEXT NOT NULL REFERENCES vms (vm_id) ON DELETE CASCADE,
    disk_id  TEXT NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    PRIMARY KEY (vm_id, disk_id)
);
