-- 006: groups and redundancy sets (issue 7): replication settings of a collection, its group cycles and
-- their statistics resets, and the Msvm_FailoverIndication records of redundancy-set failovers.

-- Msvm_CollectionReplicationSettingData of a replicating collection (the members' relationships carry the
-- same settings); ElementName is required by Hyper-V and kept here.
CREATE TABLE collection_settings (
    collection_id TEXT PRIMARY KEY REFERENCES collections (collection_id) ON DELETE CASCADE,
    element_name  TEXT NOT NULL,
    settings      TEXT NOT NULL
);

-- One row per group cycle: one cut across every member (pause in milliseconds), then every member's log.
CREATE TABLE collection_cycles (
    cycle_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id TEXT NOT NULL REFERENCES collections (collection_id) ON DELETE CASCADE,
    cut_id        TEXT NOT NULL,
    outcome       TEXT NOT NULL,      -- success | miss | network | failure
    started_at    TEXT NOT NULL,
    finished_at   TEXT NOT NULL,
    wire_bytes    INTEGER NOT NULL,
    pause_ms      REAL NOT NULL,
    consistency   INTEGER NOT NULL,
    detail        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX collection_cycles_by_collection ON collection_cycles (collection_id, finished_at);

CREATE TABLE collection_stat_resets (
    collection_id TEXT PRIMARY KEY REFERENCES collections (collection_id) ON DELETE CASCADE,
    reset_at      TEXT NOT NULL
);

-- Msvm_FailoverIndication: one row per element a redundancy-set Failover moved.
CREATE TABLE failover_indications (
    indication_id           TEXT PRIMARY KEY,
    set_id                  TEXT NOT NULL,
    hosted_element          TEXT NOT NULL,
    hosting_system          TEXT NOT NULL,
    previous_hosting_system TEXT NOT NULL,
    failover_type           INTEGER NOT NULL,
    other_type              TEXT NOT NULL,
    severity                INTEGER NOT NULL,
    created_at              TEXT NOT NULL
);
CREATE INDEX failover_indications_by_time ON failover_indications (created_at);
