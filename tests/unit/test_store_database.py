"""The Database itself: file mode, migrations, transactions, thread safety and error translation."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from standby.domain.entities import Job, Relationship, VirtualMachine
from standby.domain.enums import JobState, JobType, RelationshipIndex, ReplicationState
from standby.domain.errors import InvalidParameter, Unavailable
from standby.store.errors import StaleWrite
from standby.store.sqlite import Database
from standby.store.sqlite.connection import migrations, translate

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def vm(vm_id: str, name: str = "vm") -> VirtualMachine:
    return VirtualMachine(vm_id=vm_id, name=name, memory_mib=256, cpus=1)


def test_file_database_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "state" / "standby.db"
    with Database.open(path) as db:
        db.vms.insert(vm("A"))
        assert db.path == str(path)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("SELECT name FROM vms").fetchall() == [("vm",)]
    raw.close()
    with Database.open(path) as db:
        assert db.vms.get("A").name == "vm"
        with pytest.raises(InvalidParameter):  # foreign_keys=ON: a relationship needs its VM
            db.relationships.insert(Relationship("B", RelationshipIndex.PRIMARY, ReplicationState.DISABLED))


def test_schema_version_is_recorded(tmp_path: Path) -> None:
    numbers = [n for n, _, _ in migrations()]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 2
    with Database.open(tmp_path / "s.db") as db:
        assert db.schema_version == numbers[-1]
        assert db.migrate() == []
    raw = sqlite3.connect(tmp_path / "s.db")
    rows = raw.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
    raw.close()
    assert [r[0] for r in rows] == numbers
    assert rows[0][1] == "001_initial.sql"


def test_old_database_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with Database.open(path, migrate_upto=1) as old:
        assert old.schema_version == 1
        old.vms.insert(vm("A", "kept"))
        old.jobs.insert(Job("J1", JobType.START_VM, JobState.COMPLETED, T0, description="old job"))
    raw = sqlite3.connect(path)
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    raw.close()
    assert "events" not in tables

    with Database.open(path) as db:
        assert db.schema_version == migrations()[-1][0]
        assert db.vms.get("A").name == "kept"
        assert db.jobs.get("J1").description == "old job"
        assert db.jobs.description_key("J1") == (None, {})  # the column 002 added, with its default
        db.events.record(T0, "test", "Generic")
        assert len(db.events.list()) == 1


def test_newer_schema_than_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    Database.open(path).close()
    raw = sqlite3.connect(path)
    raw.execute("INSERT INTO schema_version VALUES (999, '999_future.sql', 'x')")
    raw.commit()
    raw.close()
    with pytest.raises(Unavailable, match="newer than this standby"):
        Database.open(path)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(Unavailable) as caught:
        Database.open(path)
    assert caught.value.code == 32777
    assert "garbage.db" in str(caught.value)


def test_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Unavailable, match="cannot create the folder"):
        Database.open(blocker / "sub" / "s.db")


def test_closed_database_raises_unavailable() -> None:
    db = Database.memory()
    db.close()
    with pytest.raises(Unavailable, match="closed"):
        db.vms.list()


def test_transaction_commits_all_or_nothing() -> None:
    db = Database.memory()
    with db.transaction():
        db.vms.insert(vm("A"))
        db.vms.insert(vm("B"))
    assert db.vms.count() == 2

    with pytest.raises(RuntimeError), db.transaction():
        db.vms.insert(vm("C"))
        db.vms.update(dataclasses.replace(db.vms.get("A"), name="changed"))
        raise RuntimeError("boom")
    assert db.vms.count() == 2
    assert db.vms.get("A").name == "vm" and db.vms.get("A").version == 0


def test_failed_write_inside_a_transaction_rolls_back_only_itself() -> None:
    db = Database.memory()
    with db.transaction():
        db.vms.insert(vm("A"))
        with pytest.raises(StaleWrite):
            db.vms.update(dataclasses.replace(vm("A"), version=5))
        db.vms.insert(vm("B"))
    assert [v.vm_id for v in db.vms.list()] == ["A", "B"]


def test_nested_transaction_rollback_keeps_outer_work() -> None:
    db = Database.memory()
    with db.transaction():
        db.vms.insert(vm("A"))
        with pytest.raises(ValueError), db.transaction():
            db.vms.insert(vm("B"))
            raise ValueError("inner")
    assert [v.vm_id for v in db.vms.list()] == ["A"]


def test_concurrent_cas_writers_from_threads_lose_no_update(tmp_path: Path) -> None:
    """Eight threads each add 25 to a counter (the VM's cpus) with read / CAS-write / retry."""
    db = Database.open(tmp_path / "c.db")
    db.vms.insert(vm("A"))
    stale_seen = [0]
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            while True:
                current = db.vms.get("A")
                try:
                    db.vms.update(dataclasses.replace(current, cpus=current.cpus + 1))
                    break
                except StaleWrite:
                    with lock:
                        stale_seen[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = db.vms.get("A")
    assert final.cpus == 1 + 8 * 25
    assert final.version == 8 * 25
    db.close()


def test_concurrent_transactions_from_threads_stay_atomic() -> None:
    """Each thread inserts a pair of VMs in one transaction; readers never see half a pair."""
    db = Database.memory()
    errors: list[str] = []

    def writer(n: int) -> None:
        for i in range(20):
            with db.transaction():
                db.vms.insert(vm(f"{n}-{i}-a"))
                db.vms.insert(vm(f"{n}-{i}-b"))

    def reader() -> None:
        for _ in range(50):
            if db.vms.count() % 2:
                errors.append("odd count seen")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert db.vms.count() == 4 * 20 * 2


def test_two_connections_to_one_file_see_each_others_commits(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    first, second = Database.open(path), Database.open(path)
    first.vms.insert(vm("A"))
    stored = second.vms.get("A")
    first.vms.update(stored)
    with pytest.raises(StaleWrite):
        second.vms.update(stored)
    first.close()
    second.close()


@pytest.mark.parametrize(
    ("error", "expected", "code"),
    [
        (sqlite3.IntegrityError("FOREIGN KEY constraint failed"), "ReferenceMissing", 32773),
        (sqlite3.IntegrityError("CHECK constraint failed: id = 1"), "ConstraintViolated", 32773),
        (sqlite3.OperationalError("database is locked"), "StoreBusy", 32774),
        (sqlite3.OperationalError("database or disk is full"), "StoreFull", 32778),
        (sqlite3.OperationalError("disk I/O error"), "StoreFailed", 32777),
        (sqlite3.DatabaseError("file is not a database"), "StoreFailed", 32777),
        (sqlite3.InterfaceError("bad parameter"), "StoreFailed", 32768),
    ],
)
def test_sqlite_errors_become_domain_errors(error: sqlite3.Error, expected: str, code: int) -> None:
    translated = translate(error)
    assert translated.message_id == expected
    assert translated.code == code
    assert str(error) in str(translated)


def test_a_real_check_constraint_error_is_translated() -> None:
    db = Database.memory()
    with pytest.raises(InvalidParameter) as caught:
        db._conn.execute("INSERT INTO service_settings VALUES (2, 0, 0, '', 80, 443, '09:00:00', 60)")
    assert caught.value.message_id == "ConstraintViolated"


def test_file_database_commits_durably(tmp_path: Path) -> None:
    with Database.open(tmp_path / "d.db") as db:
        assert db._conn.query("PRAGMA synchronous")[0][0] == 2  # FULL
        assert db._conn.query("PRAGMA foreign_keys")[0][0] == 1
        assert db._conn.query("PRAGMA busy_timeout")[0][0] == 5000
