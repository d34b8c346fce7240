"""``Database``: the host's SQLite state with one repository per entity."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from standby.domain.errors import Unavailable
from standby.store.sqlite.connection import Connection
from standby.store.sqlite.repos_cycles import CycleRepository, DiskStampRepository
from standby.store.sqlite.repos_failover import (
    FailoverNetworkRepository,
    PointHoldRepository,
    TestFailoverRepository,
)
from standby.store.sqlite.repos_groups import (
    CollectionSettingsRepository,
    FailoverIndicationRepository,
    GroupCycleRepository,
)
from standby.store.sqlite.repos_jobs import JobRepository
from standby.store.sqlite.repos_points import (
    CollectionPointRepository,
    CollectionRepository,
    RecoveryPointRepository,
    RedundancySetRepository,
)
from standby.store.sqlite.repos_replica import ReplicaRepository
from standby.store.sqlite.repos_service import AuthEntryRepository, EventRepository, ServiceSettingsRepository
from standby.store.sqlite.repos_vms import HostRepository, RelationshipRepository, VmRepository


class Database:
    """SQLite state of one host (WAL, ``foreign_keys=ON``, busy timeout), safe to share between threads.

    Build it with :meth:`open` (a file; migrations are applied) or :meth:`memory` (tests). Writes made
    inside ``with db.transaction():`` commit together or not at all.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.hosts = HostRepository(conn)
        self.vms = VmRepository(conn)
        self.relationships = RelationshipRepository(conn)
        self.recovery_points = RecoveryPointRepository(conn)
        self.jobs = JobRepository(conn)
        self.collections = CollectionRepository(conn)
        self.collection_points = CollectionPointRepository(conn)
        self.redundancy_sets = RedundancySetRepository(conn)
        self.auth_entries = AuthEntryRepository(conn)
        self.service_settings = ServiceSettingsRepository(conn)
        self.events = EventRepository(conn)
        self.cycles = CycleRepository(conn)
        self.disk_stamps = DiskStampRepository(conn)
        self.replicas = ReplicaRepository(conn)
        self.failover_network = FailoverNetworkRepository(conn)
        self.point_holds = PointHoldRepository(conn)
        self.test_failovers = TestFailoverRepository(conn)
        self.collection_settings = CollectionSettingsRepository(conn)
        self.group_cycles = GroupCycleRepository(conn)
        self.failover_indications = FailoverIndicationRepository(conn)

    @classmethod
    def open(cls, path: Path | str, *, migrate_upto: int | None = None) -> Database:
        """Open (or create) the database file at ``path`` and bring its schema up to date.

        ``migrate_upto`` stops after that migration; only tests use it, to build an old database.
        """
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Unavailable(
                f"cannot create the folder of the state database {path}: {exc.strerror}",
                message_id="StoreOpenFailed",
                path=str(path),
            ) from exc
        conn = Connection.open(str(path), wal=True)
        return cls._ready(conn, migrate_upto)

    @classmethod
    def memory(cls) -> Database:
        """A private in-memory database with the full schema (for tests)."""
        return cls._ready(Connection.open(":memory:", wal=False), None)

    @classmethod
    def _ready(cls, conn: Connection, migrate_upto: int | None) -> Database:
        try:
            conn.migrate(upto=migrate_upto)
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    @property
    def path(self) -> str:
        """The file this database lives in (``:memory:`` for :meth:`memory`)."""
        return self._conn.label

    @property
    def schema_version(self) -> int:
        """The number of the newest applied migration."""
        return self._conn.schema_version()

    def migrate(self) -> list[int]:
        """Apply pending migrations (``open`` already does); return the numbers applied."""
        return self._conn.migrate()

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Group several writes: all commit at the end of the block, or none if it raises.

        The block holds the database lock, so other threads wait; keep it short and free of awaits.
        """
        with self._conn.transaction():
            yield self

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
