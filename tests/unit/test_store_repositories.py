"""Round trips of every repository through a real in-memory SQLite, plus CAS and constraint errors."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, time, timedelta, timezone

import pytest

from standby.domain.entities import (
    AuthorizationEntry,
    Collection,
    CollectionRecoveryPoint,
    Disk,
    Host,
    Job,
    Nic,
    RecoveryPoint,
    RedundancySet,
    Relationship,
    ReplicationSettings,
    ServiceSettings,
    VirtualMachine,
)
from standby.domain.enums import (
    AllowedAuthenticationType,
    AuthenticationType,
    CollectionReplicationState,
    CollectionReplicationType,
    ConsistencyLevel,
    EnabledState,
    JobState,
    JobType,
    RedundancyStatus,
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
    ReplicationType,
    TypeOfSet,
    VirtualSystemType,
)
from standby.domain.errors import InUse, InvalidParameter, NotFound
from standby.store.errors import AlreadyExists, StaleWrite
from standby.store.sqlite import Database

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
VM_ID = "6F2C1A3E-0000-4000-8000-000000000001"


@pytest.fixture
def db() -> Database:
    return Database.memory()


def make_vm(vm_id: str = VM_ID, name: str = "web01") -> VirtualMachine:
    return VirtualMachine(
        vm_id=vm_id,
        name=name,
        memory_mib=512,
        cpus=2,
        disks=(
            Disk("disk0", "/var/lib/standby/web01/disk0.qcow2", 1 << 30),
            Disk("disk1", "/d1.qcow2", 4096),
        ),
        nics=(Nic("nic0", "52:54:00:12:34:56"), Nic("nic1", "52:54:00:12:34:57", "bridge:br0")),
        kernel="/boot/vmlinux",
        initrd="/boot/initrd.img",
        append="console=ttyS0",
        enabled_state=EnabledState.ENABLED,
        replication_mode=ReplicationMode.PRIMARY,
        locked_from_start=True,
        created_at=T0,
    )


def make_settings() -> ReplicationSettings:
    return ReplicationSettings(
        recovery_connection_point="replica.example.org",
        recovery_port=443,
        primary_connection_point="primary.example.org",
        authentication_type=AuthenticationType.CERTIFICATE,
        certificate_thumbprint="AB12",
        compression_enabled=False,
        bypass_proxy_server=True,
        replicate_host_kvp_items=False,
        interval_seconds=30,
        recovery_history=24,
        app_consistent_interval_hours=4,
        included_disks=("disk0", "disk1"),
        auto_resynchronize_enabled=True,
        auto_resynchronize_start=time(20, 15),
        auto_resynchronize_end=time(5, 45, 30),
        bandwidth_schedule=((time(8), time(18), 10_000_000), (time(18), time(8), 0)),
    )


def make_job(job_id: str = "J1", element_id: str | None = VM_ID, state: JobState = JobState.NEW) -> Job:
    return Job(
        job_id=job_id,
        job_type=JobType.INITIATE_FAILOVER,
        state=state,
        submitted_at=T0,
        description="Initiating failover",
        element_id=element_id,
        percent_complete=40,
        error_code=32775,
        error_message_id="InvalidState",
        error_args=(("state", "Replicating"),),
        error_description="wrong state",
        error_summary="Failover failed",
        cancellable=True,
        delete_on_completion=False,
        time_before_removal=timedelta(minutes=7, seconds=30),
        started_at=T0 + timedelta(seconds=1),
        state_changed_at=T0 + timedelta(seconds=2),
        finished_at=T0 + timedelta(seconds=3),
        owner="admin",
        result=(("ResultingSystem", "ABC"),),
    )


def test_vm_round_trip_keeps_disks_nics_and_every_field(db: Database) -> None:
    vm = make_vm()
    db.vms.insert(vm)
    assert db.vms.get(VM_ID) == vm
    assert db.vms.find("nope") is None
    assert db.vms.find_by_name("web01") == [vm]


def test_vm_update_is_compare_and_swap(db: Database) -> None:
    vm = db.vms.insert(make_vm())
    moved = db.vms.update(dataclasses.replace(vm, name="web02", disks=vm.disks[:1], nics=()))
    assert moved.version == 1
    stored = db.vms.get(VM_ID)
    assert stored == moved
    assert stored.disks == vm.disks[:1] and stored.nics == ()
    with pytest.raises(StaleWrite) as caught:
        db.vms.update(dataclasses.replace(vm, name="lost update"))  # still version 0
    assert isinstance(caught.value, InUse)
    assert caught.value.code == 32774
    assert db.vms.get(VM_ID).name == "web02"


def test_update_of_missing_entity_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound) as caught:
        db.vms.update(make_vm())
    assert caught.value.code == 32773
    assert VM_ID in str(caught.value)


def test_insert_twice_is_already_exists(db: Database) -> None:
    db.vms.insert(make_vm())
    with pytest.raises(AlreadyExists) as caught:
        db.vms.insert(make_vm())
    assert isinstance(caught.value, InvalidParameter)
    assert db.vms.count() == 1


def test_naive_datetime_is_refused(db: Database) -> None:
    with pytest.raises(InvalidParameter, match="naive"):
        db.vms.insert(dataclasses.replace(make_vm(), created_at=datetime(2024, 1, 1)))
    assert db.vms.count() == 0


def test_other_time_zones_come_back_as_utc(db: Database) -> None:
    cest = timezone(timedelta(hours=2))
    db.vms.insert(dataclasses.replace(make_vm(), created_at=datetime(2024, 1, 1, 14, 0, tzinfo=cest)))
    created = db.vms.get(VM_ID).created_at
    assert created == datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    assert created is not None and created.utcoffset() == timedelta(0)


def test_delete_vm_cascades_to_children(db: Database) -> None:
    db.vms.insert(make_vm())
    db.relationships.insert(Relationship(VM_ID, RelationshipIndex.PRIMARY, ReplicationState.REPLICATING))
    db.recovery_points.insert(RecoveryPoint("P1", VM_ID, 1, T0, VirtualSystemType.REPLICA_STANDARD))
    db.vms.delete(VM_ID)
    assert db.vms.find(VM_ID) is None
    assert db.relationships.list() == []
    assert db.recovery_points.list() == []
    with pytest.raises(NotFound):
        db.vms.delete(VM_ID)


def test_relationship_round_trip_with_settings_json(db: Database) -> None:
    db.vms.insert(make_vm())
    rel = Relationship(
        vm_id=VM_ID,
        index=RelationshipIndex.EXTENDED,
        state=ReplicationState.RECOVERED,
        health=ReplicationHealth.WARNING,
        settings=make_settings(),
        failed_over_type=ReplicationType.PLANNED,
        last_replication_type=ReplicationType.APPLICATION_CONSISTENT,
        last_replication_time=T0,
        last_apply_time=T0 + timedelta(seconds=5),
        last_app_consistent_time=T0 - timedelta(hours=1),
        state_before_failover=ReplicationState.REPLICATING,
        intent="failover:P1",
        sequence=42,
    )
    db.relationships.insert(rel)
    assert db.relationships.get(VM_ID, RelationshipIndex.EXTENDED) == rel
    assert db.relationships.find(VM_ID, RelationshipIndex.PRIMARY) is None
    assert db.relationships.list(vm_id=VM_ID) == [rel]
    assert db.relationships.list(state=ReplicationState.REPLICATING) == []
    assert db.relationships.list(state=ReplicationState.RECOVERED) == [rel]
    with pytest.raises(NotFound, match=r"Relationship .*/0 does not exist"):
        db.relationships.get(VM_ID, RelationshipIndex.PRIMARY)


def test_relationship_cas_and_defaults(db: Database) -> None:
    db.vms.insert(make_vm())
    rel = db.relationships.insert(
        Relationship(VM_ID, RelationshipIndex.PRIMARY, ReplicationState.REPLICATING)
    )
    assert db.relationships.get(VM_ID, RelationshipIndex.PRIMARY).settings == ReplicationSettings()
    first = db.relationships.update(dataclasses.replace(rel, state=ReplicationState.SUSPENDED))
    second = db.relationships.update(dataclasses.replace(first, state=ReplicationState.REPLICATING))
    assert second.version == 2
    with pytest.raises(StaleWrite):
        db.relationships.update(dataclasses.replace(first, intent="late"))


def test_relationship_needs_its_vm(db: Database) -> None:
    with pytest.raises(NotFound):
        db.relationships.insert(Relationship("missing", RelationshipIndex.PRIMARY, ReplicationState.DISABLED))


def test_recovery_points_round_trip_and_order(db: Database) -> None:
    db.vms.insert(make_vm())
    p2 = RecoveryPoint(
        "P2",
        VM_ID,
        2,
        T0 + timedelta(minutes=5),
        VirtualSystemType.REPLICA_APPLICATION_CONSISTENT,
        images=(("disk0", "/r/disk0-2.qcow2"), ("disk1", "/r/disk1-2.qcow2")),
        parent_id="P1",
        collection_point_id="CP1",
    )
    p1 = RecoveryPoint("P1", VM_ID, 1, T0, VirtualSystemType.REPLICA_STANDARD)
    db.recovery_points.insert(p2)
    db.recovery_points.insert(p1)
    assert db.recovery_points.list(vm_id=VM_ID) == [p1, p2]
    assert db.recovery_points.latest(VM_ID) == p2
    assert db.recovery_points.latest("other") is None
    assert db.recovery_points.get("P2") == p2
    db.recovery_points.delete("P1")
    assert db.recovery_points.list() == [p2]


def test_collections_with_members_and_points(db: Database) -> None:
    coll = Collection(
        "C1",
        "sql-cluster",
        member_vm_ids=("VM-B", "VM-A"),
        replication_mode=ReplicationMode.REPLICA,
        replication_state=CollectionReplicationState.PARTIALLY_RECOVERED,
        failed_over_type=CollectionReplicationType.PLANNED,
        last_apply_time=T0,
    )
    db.collections.insert(coll)
    db.collections.insert(Collection("C2", "empty"))
    assert db.collections.get("C1") == coll
    assert [c.collection_id for c in db.collections.list()] == ["C2", "C1"]  # by name
    assert db.collections.containing("VM-A") == [coll]
    updated = db.collections.update(dataclasses.replace(coll, member_vm_ids=("VM-A",)))
    assert db.collections.get("C1").member_vm_ids == ("VM-A",) and updated.version == 1
    assert db.collections.containing("VM-B") == []

    cp = CollectionRecoveryPoint(
        "CP1", "C1", T0, ConsistencyLevel.GROUP_CRASH_CONSISTENT, members=(("VM-A", "P7"),), pause_ms=12.5
    )
    db.collection_points.insert(cp)
    assert db.collection_points.list(collection_id="C1") == [cp]
    assert db.collection_points.get("CP1") == cp
    with pytest.raises(NotFound):
        db.collection_points.insert(dataclasses.replace(cp, point_id="CP2", collection_id="nope"))
    db.collections.delete("C1")
    assert db.collection_points.list() == []


def test_redundancy_set_round_trip_and_plain_update(db: Database) -> None:
    rs = RedundancySet(
        "RS1", "web pair", TypeOfSet.SPARING, RedundancyStatus.FULLY_REDUNDANT, ("A", "B"), "A"
    )
    db.redundancy_sets.insert(rs)
    assert db.redundancy_sets.get("RS1") == rs
    switched = dataclasses.replace(rs, active_member_id="B", status=RedundancyStatus.DEGRADED_REDUNDANCY)
    assert db.redundancy_sets.update(switched) == switched
    assert db.redundancy_sets.get("RS1") == switched
    with pytest.raises(NotFound):
        db.redundancy_sets.update(dataclasses.replace(rs, set_id="RS9"))


def test_hosts_and_auth_entries(db: Database) -> None:
    host = Host("H1", "alpha", "alpha.example.org")
    db.hosts.insert(host)
    assert db.hosts.list() == [host]
    any_server = AuthorizationEntry("*", "DEFAULT", "/var/lib/standby/replicas")
    explicit = AuthorizationEntry("primary.example.org", "G1", "/srv/replicas")
    db.auth_entries.insert(explicit)
    db.auth_entries.insert(any_server)
    assert db.auth_entries.list() == [any_server, explicit]
    db.auth_entries.update(dataclasses.replace(explicit, storage_location="/srv/other"))
    assert db.auth_entries.get("primary.example.org").storage_location == "/srv/other"
    db.auth_entries.delete("*")
    assert db.auth_entries.count() == 1


def test_service_settings_singleton(db: Database) -> None:
    assert db.service_settings.get() == ServiceSettings()
    settings = ServiceSettings(
        recovery_server_enabled=True,
        allowed_authentication_type=AllowedAuthenticationType.CERTIFICATE_AND_KERBEROS,
        certificate_thumbprint="FFEE",
        http_port=8080,
        https_port=8443,
        monitoring_start_time=time(7, 30),
        monitoring_interval_seconds=3600,
    )
    db.service_settings.put(settings)
    db.service_settings.put(settings)
    assert db.service_settings.get() == settings


def test_job_round_trip_and_queries(db: Database) -> None:
    job = make_job()
    db.jobs.insert(job)
    assert db.jobs.get("J1") == job
    assert db.jobs.active_on(VM_ID) == job
    assert db.jobs.unfinished() == [job]
    done = db.jobs.update(dataclasses.replace(job, state=JobState.COMPLETED))
    assert db.jobs.active_on(VM_ID) is None
    assert db.jobs.list(states=[JobState.COMPLETED]) == [done]
    assert db.jobs.list(element_id="other") == []
    assert db.jobs.list(states=[]) == []
    db.jobs.set_description_key("J1", "JobDescription.Failover", {"vm": "web01", "n": 3})
    assert db.jobs.description_key("J1") == ("JobDescription.Failover", {"vm": "web01", "n": 3})
    with pytest.raises(NotFound):
        db.jobs.description_key("J9")


def test_jobs_removable_after_time_before_removal(db: Database) -> None:
    finished = T0 + timedelta(seconds=3)
    db.jobs.insert(
        dataclasses.replace(make_job("keep"), state=JobState.COMPLETED)
    )  # delete_on_completion=False
    db.jobs.insert(dataclasses.replace(make_job("drop"), state=JobState.EXCEPTION, delete_on_completion=True))
    db.jobs.insert(make_job("running", state=JobState.RUNNING))
    assert db.jobs.removable(finished + timedelta(minutes=7)) == []
    assert [j.job_id for j in db.jobs.removable(finished + timedelta(minutes=7, seconds=30))] == ["drop"]


def test_events_log(db: Database) -> None:
    first = db.events.record(
        T0, "vm.exited", "VmProcessDied", element_id=VM_ID, args={"code": 137, "x": None}
    )
    db.events.record(T0 + timedelta(seconds=1), "cycle.failed", "CycleFailed", element_id="other")
    db.events.record(
        T0 + timedelta(seconds=2), "vm.exited", "VmProcessDied", element_id=VM_ID, args={"p": T0}
    )
    assert first.event_id > 0
    assert first.args == {"code": 137, "x": None}
    mine = db.events.list(element_id=VM_ID)
    assert [e.message_id for e in mine] == ["VmProcessDied", "VmProcessDied"]
    assert mine[0] == first
    assert mine[1].args == {"p": str(T0)}  # values JSON cannot hold are kept as text
    assert [e.kind for e in db.events.list(limit=2)] == ["cycle.failed", "vm.exited"]
    assert len(db.events.list(since=T0 + timedelta(seconds=1))) == 2
    assert len(db.events.list(kind="cycle.failed")) == 1
    assert db.events.purge(T0 + timedelta(seconds=2)) == 2
    assert len(db.events.list()) == 1
