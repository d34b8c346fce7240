-- 004: the replica side of replication (issue 4): who a replica belongs to and where its files live.
-- One row per replica VM on this host; the VM row itself is in `vms` (mode 2), its relationship in
-- `relationships` and its recovery points in `recovery_points`.

CREATE TABLE replicas (
    vm_id         TEXT PRIMARY KEY REFERENCES vms (vm_id) ON DELETE CASCADE,
    primary_host  TEXT NOT NULL,   -- the primary's name from its certificate
    trust_group   TEXT NOT NULL,   -- of the authorization entry that admitted it
    storage_root  TEXT NOT NULL,   -- resolved <ReplicaStorageLocation>/<VMName>_<VMGUID>
    base_sequence INTEGER,         -- first sequence of the current lineage (initial or resync point)
    created_at    TEXT NOT NULL,
    version       INTEGER NOT NULL
);
