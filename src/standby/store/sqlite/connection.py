"""The one SQLite connection of a host: lock, transactions, migrations and sqlite3 error translation."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources

from standby.domain.errors import (
    InUse,
    InvalidParameter,
    NotFound,
    OutOfMemory,
    StandbyError,
    Unavailable,
)

Params = Sequence[object]
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
BUSY_TIMEOUT_MS = 5000


def translate(exc: sqlite3.Error) -> StandbyError:
    """Map a sqlite3 error to the domain tree (repositories add context for constraint errors first)."""
    text = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        if "FOREIGN KEY" in text:
            return NotFound(f"a referenced object does not exist ({text})", message_id="ReferenceMissing")
        return InvalidParameter(f"a value breaks a constraint ({text})", message_id="ConstraintViolated")
    if "locked" in text or "busy" in text:
        return InUse(f"the state database is busy ({text})", message_id="StoreBusy")
    if "full" in text:
        return OutOfMemory(f"no space left for the state database ({text})", message_id="StoreFull")
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        return Unavailable(f"the state database failed: {text}", message_id="StoreFailed", detail=text)
    return StandbyError(f"the state database failed: {text}", message_id="StoreFailed", detail=text)


def migrations() -> list[tuple[int, str, str]]:
    """Every packaged migration as ``(number, file name, SQL)``, in order."""
    found: list[tuple[int, str, str]] = []
    folder = resources.files("standby.store.sqlite") / "migrations"
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migrations must be numbered 001, 002, … without gaps; found {numbers}")
    return found


class Connection:
    """One ``sqlite3`` connection shared by all threads, serialized by a re-entrant lock.

    Writes go through :meth:`transaction`; a transaction opened inside another becomes a savepoint, so an
    error rolls back exactly the inner block while the outer one may still commit.
    """

    def __init__(self, raw: sqlite3.Connection, label: str) -> None:
        self._raw = raw
        self._label = label
        self._lock = threading.RLock()
        self._depth = 0
        self._closed = False

    @classmethod
    def open(cls, target: str, *, wal: bool) -> Connection:
        """Open ``target`` (a path or ``:memory:``) with the pragmas standby relies on."""
        try:
            raw = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
            raw.row_factory = sqlite3.Row
            raw.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            raw.execute("PRAGMA foreign_keys = ON")
            if wal:
                mode = raw.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError(f"journal_mode WAL refused (got {mode})")
                # FULL: a commit survives power loss, so an acknowledged log or recovery point is never lost.
                raw.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise Unavailable(
                f"cannot open the state database {target}: {exc}", message_id="StoreOpenFailed", path=target
            ) from exc
        return cls(raw, target)

    @property
    def label(self) -> str:
        """The path (or ``:memory:``) this connection opened."""
        return self._label

    def close(self) -> None:
        """Close the connection; later use raises ``Unavailable``."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._raw.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes atomically (``BEGIN IMMEDIATE`` outside, a savepoint when nested)."""
        with self._lock:
            self._check_open()
            depth = self._depth
            savepoint = f"sp{depth}"
            self._exec("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {savepoint}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                self._rollback(depth, savepoint)
                raise
            self._depth -= 1
            self._exec("COMMIT" if depth == 0 else f"RELEASE {savepoint}")

    def _rollback(self, depth: int, savepoint: str) -> None:
        try:
            if depth == 0:
                self._raw.execute("ROLLBACK")
            else:
                self._raw.execute(f"ROLLBACK TO {savepoint}")
                self._raw.execute(f"RELEASE {savepoint}")
        except sqlite3.Error:
            # The original error matters more; SQLite may already have rolled back (e.g. after SQLITE_FULL).
            pass

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        """Run one statement under the lock; sqlite3 errors come out as domain errors."""
        with self._lock:
            self._check_open()
            return self._exec(sql, params)

    def query(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Run a SELECT and fetch every row under the lock."""
        with self._lock:
            self._check_open()
            try:
                return self._raw.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise translate(exc) from exc

    def _exec(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        try:
            return self._raw.execute(sql, params)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the state database is closed", message_id="StoreClosed")

    # -- migrations ---------------------------------------------------------------------------------------

    def schema_version(self) -> int:
        """The number of the newest applied migration (0 for an empty database)."""
        self.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        row = self.query("SELECT MAX(version) AS v FROM schema_version")[0]
        return int(row["v"] or 0)

    def migrate(self, upto: int | None = None) -> list[int]:
        """Apply the pending migrations in order (each atomically); return the numbers applied."""
        with self._lock:
            current = self.schema_version()
            known = migrations()
            newest = known[-1][0] if known else 0
            if current > newest:
                raise Unavailable(
                    f"the state database {self._label} has schema version {current}, newer than this "
                    f"standby knows ({newest}); upgrade standby",
                    message_id="StoreTooNew",
                    found=current,
                    known=newest,
                )
            applied: list[int] = []
            for number, name, sql in known:
                if number <= current or (upto is not None and number > upto):
                    continue
                self._apply(number, name, sql)
                applied.append(number)
            return applied

    def _apply(self, number: int, name: str, sql: str) -> None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        script = (
            f"BEGIN IMMEDIATE;\n{sql}\n;"
            f"INSERT INTO schema_version (version, name, applied_at) VALUES ({number}, '{name}', '{now}');\n"
            "COMMIT;"
        )
        try:
            self._raw.executescript(script)
        except sqlite3.Error as exc:
            self._rollback(0, "")
            raise Unavailable(
                f"migration {name} failed on {self._label}: {exc}",
                message_id="StoreMigrationFailed",
                name=name,
            ) from exc
