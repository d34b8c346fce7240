-- 005: failover (issue 5): failover IP settings per NIC, recovery points held by failover/test disks,
-- and when a replica last had a test failover.

-- Msvm_FailoverNetworkAdapterSettingData, one row per NIC of a VM; address lists are JSON arrays.
CREATE TABLE failover_network_settings (
    vm_id            TEXT NOT NULL REFERENCES vms (vm_id) ON DELETE CASCADE,
    nic_id           TEXT NOT NULL,
    protocol_if_type INTEGER NOT NULL,
    dhcp_enabled     INTEGER NOT NULL,
    ip_addresses     TEXT NOT NULL,
    subnets          TEXT NOT NULL,
    default_gateways TEXT NOT NULL,
    dns_servers      TEXT NOT NULL,
    PRIMARY KEY (vm_id, nic_id)
);

-- A recovery point a failover disk, a test VM's overlay or a committed disk stands on. Retention must not
-- merge such a point, nor any older point of its chain (their files are its backing files). A hold goes
-- with its holder VM (a test VM's DestroySystem drops its hold through the cascade).
CREATE TABLE point_holds (
    point_id   TEXT NOT NULL REFERENCES recovery_points (point_id) ON DELETE CASCADE,
    holder_id  TEXT NOT NULL REFERENCES vms (vm_id) ON DELETE CASCADE,
    reason     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (point_id, holder_id)
);
CREATE INDEX point_holds_by_holder ON point_holds (holder_id);

-- Per replica VM: the last test failover (Msvm_ReplicationStatistics.LastTestFailoverTime).
CREATE TABLE test_failovers (
    vm_id      TEXT PRIMARY KEY REFERENCES vms (vm_id) ON DELETE CASCADE,
    last_time  TEXT NOT NULL,
    test_vm_id TEXT
);
