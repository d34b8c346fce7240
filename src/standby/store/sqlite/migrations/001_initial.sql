-- 001: the entities of domain/entities.py.
-- Times are ISO-8601 UTC text, enums are their integer values, small tuples are JSON text.
-- Every mutable entity carries `version` for compare-and-swap writes.

CREATE TABLE hosts (
    host_id TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    fqdn    TEXT NOT NULL
);

CREATE TABLE vms (
    vm_id             TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    memory_mib        INTEGER NOT NULL,
    cpus              INTEGER NOT NULL,
    kernel            TEXT,
    initrd            TEXT,
    append            TEXT,
    enabled_state     INTEGER NOT NULL,
    replication_mode  INTEGER NOT NULL,
    locked_from_start INTEGER NOT NULL,
    created_at        TEXT,
    version           INTEGER NOT NULL
);

CREATE TABLE vm_disks (
    vm_id      TEXT NOT NULL REFERENCES vms (vm_id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    disk_id    TEXT NOT NULL,
    path       TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    PRIMARY KEY (vm_id, position),
    UNIQUE (vm_id, disk_id)
);

CREATE TABLE vm_nics (
    vm_id    TEXT NOT NULL REFERENCES vms (vm_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    nic_id   TEXT NOT NULL,
    mac      TEXT NOT NULL,
    network  TEXT NOT NULL,
    PRIMARY KEY (vm_id, position),
    UNIQUE (vm_id, nic_id)
);

CREATE TABLE relationships (
    vm_id                    TEXT NOT NULL REFERENCES vms (vm_id) ON DELETE CASCADE,
    idx                      INTEGER NOT NULL,
    state                    INTEGER NOT NULL,
    health                   INTEGER NOT NULL,
    settings                 TEXT NOT NULL,
    failed_over_type         INTEGER NOT NULL,
    last_replication_type    INTEGER NOT NULL,
    last_replication_time    TEXT,
    last_apply_time          TEXT,
    last_app_consistent_time TEXT,
    state_before_failover    INTEGER,
    intent                   TEXT,
    sequence                 INTEGER NOT NULL,
    version                  INTEGER NOT NULL,
    PRIMARY KEY (vm_id, idx)
);

CREATE TABLE recovery_points (
    point_id            TEXT PRIMARY KEY,
    vm_id               TEXT NOT NULL REFERENCES vms (vm_id) ON DELETE CASCADE,
    sequence            INTEGER NOT NULL,
    created_at          TEXT NOT NULL,
    kind                TEXT NOT NULL,
    images              TEXT NOT NULL,
    parent_id           TEXT,
    collection_point_id TEXT
);
CREATE INDEX recovery_points_by_vm ON recovery_points (vm_id, sequence);

CREATE TABLE collections (
    collection_id     TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    replication_mode  INTEGER NOT NULL,
    replication_state INTEGER NOT NULL,
    failed_over_type  INTEGER NOT NULL,
    last_apply_time   TEXT,
    version           INTEGER NOT NULL
);

CREATE TABLE collection_members (
    collection_id TEXT NOT NULL REFERENCES collections (collection_id) ON DELETE CASCADE,
    position      INTEGER NOT NULL,
    vm_id         TEXT NOT NULL,
    PRIMARY KEY (collection_id, position),
    UNIQUE (collection_id, vm_id)
);
CREATE INDEX collection_members_by_vm ON collection_members (vm_id);

CREATE TABLE collection_points (
    point_id      TEXT PRIMARY KEY,
    collection_id TEXT NOT NULL REFERENCES collections (collection_id) ON DELETE CASCADE,
    created_at    TEXT NOT NULL,
    consistency   INTEGER NOT NULL,
    members       TEXT NOT NULL,
    pause_ms      REAL NOT NULL
);
CREATE INDEX collection_points_by_collection ON collection_points (collection_id, created_at);

CREATE TABLE redundancy_sets (
    set_id           TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    type_of_set      INTEGER NOT NULL,
    status           INTEGER NOT NULL,
    member_ids       TEXT NOT NULL,
    active_member_id TEXT
);

CREATE TABLE auth_entries (
    allowed_primary_host TEXT PRIMARY KEY,
    trust_group          TEXT NOT NULL,
    storage_location     TEXT NOT NULL
);

-- A singleton: the CHECK keeps it to one row.
CREATE TABLE service_settings (
    id                          INTEGER PRIMARY KEY CHECK (id = 1),
    recovery_server_enabled     INTEGER NOT NULL,
    allowed_authentication_type INTEGER NOT NULL,
    certificate_thumbprint      TEXT NOT NULL,
    http_port                   INTEGER NOT NULL,
    https_port                  INTEGER NOT NULL,
    monitoring_start_time       TEXT NOT NULL,
    monitoring_interval_seconds INTEGER NOT NULL
);

CREATE TABLE jobs (
    job_id                 TEXT PRIMARY KEY,
    job_type               INTEGER NOT NULL,
    state                  INTEGER NOT NULL,
    submitted_at           TEXT NOT NULL,
    description            TEXT NOT NULL,
    element_id             TEXT,
    percent_complete       INTEGER NOT NULL,
    error_code             INTEGER NOT NULL,
    error_message_id       TEXT,
    error_args             TEXT NOT NULL,
    error_description      TEXT NOT NULL,
    error_summary          TEXT NOT NULL,
    cancellable            INTEGER NOT NULL,
    delete_on_completion   INTEGER NOT NULL,
    time_before_removal_s  REAL NOT NULL,
    started_at             TEXT,
    state_changed_at       TEXT,
    finished_at            TEXT,
    owner                  TEXT NOT NULL,
    result                 TEXT NOT NULL,
    version                INTEGER NOT NULL
);
CREATE INDEX jobs_by_element ON jobs (element_id, state);
