"""The shared shape of every repository: get / find / list / insert / update (compare-and-swap) / delete."""

from __future__ import annotations

import builtins
import dataclasses
import sqlite3
from collections.abc import Sequence
from typing import ClassVar, Generic, TypeVar

from standby.domain.errors import InvalidParameter, NotFound
from standby.store.errors import AlreadyExists, StaleWrite
from standby.store.sqlite.connection import Connection

E = TypeVar("E")
Row = sqlite3.Row


class Repository(Generic[E]):
    """One table (plus child tables) holding one entity type.

    Subclasses name the table, its key columns and how an entity maps to a row. Versioned entities
    (those with a ``version`` field) are updated with compare-and-swap: the row is written only if its
    stored version equals ``entity.version``, and the stored version becomes ``version + 1``.
    """

    kind: ClassVar[str]
    table: ClassVar[str]
    key_columns: ClassVar[tuple[str, ...]]
    order_by: ClassVar[str]
    versioned: ClassVar[bool] = False

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    # -- what subclasses provide --------------------------------------------------------------------------

    def _key(self, entity: E) -> tuple[object, ...]:
        raise NotImplementedError

    def _to_row(self, entity: E) -> dict[str, object]:
        """Every column except ``version``."""
        raise NotImplementedError

    def _from_row(self, row: Row) -> E:
        raise NotImplementedError

    def _write_children(self, entity: E) -> None:
        """Replace child rows (disks, nics, members); runs inside the write's transaction."""

    def _load_many(self, rows: Sequence[Row]) -> builtins.list[E]:
        return [self._from_row(row) for row in rows]

    # -- public operations --------------------------------------------------------------------------------

    def find(self, *key: object) -> E | None:
        """The entity with this key, or None."""
        rows = self._select(self._key_where(), key)
        return self._load_many(rows)[0] if rows else None

    def get(self, *key: object) -> E:
        """The entity with this key; raises ``NotFound``."""
        found = self.find(*key)
        if found is None:
            raise self._not_found(key)
        return found

    def insert(self, entity: E) -> E:
        """Store a new entity; raises ``AlreadyExists`` when its key is taken."""
        row = self._to_row(entity)
        if self.versioned:
            row["version"] = self._version(entity)
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._conn.transaction():
            try:
                sql = f"INSERT INTO {self.table} ({columns}) VALUES ({marks})"
                self._conn.execute(sql, list(row.values()))
            except NotFound:
                raise  # a foreign key names a missing parent
            except InvalidParameter as exc:
                if self.find(*self._key(entity)) is not None:
                    raise AlreadyExists(self.kind, self._key_text(self._key(entity))) from exc
                raise
            self._write_children(entity)
        return entity

    def update(self, entity: E) -> E:
        """Write ``entity`` over the stored one; versioned entities use compare-and-swap.

        Returns the entity as stored (with ``version + 1`` when versioned). Raises ``NotFound`` when the
        key is not stored and ``StaleWrite`` when another writer got there first.
        """
        row = self._to_row(entity)
        key = self._key(entity)
        for column in self.key_columns:
            row.pop(column, None)
        assignments = ", ".join(f"{column} = ?" for column in row)
        params: builtins.list[object] = list(row.values())
        where = self._key_where()
        if self.versioned:
            assignments += ", version = version + 1"
            where += " AND version = ?"
        params += [*key, *([self._version(entity)] if self.versioned else [])]
        with self._conn.transaction():
            cursor = self._conn.execute(f"UPDATE {self.table} SET {assignments} WHERE {where}", params)
            if cursor.rowcount == 0:
                if self.find(*key) is None:
                    raise self._not_found(key)
                raise StaleWrite(self.kind, self._key_text(key), self._version(entity))
            self._write_children(entity)
        if self.versioned:
            return dataclasses.replace(entity, version=self._version(entity) + 1)  # type: ignore[type-var]
        return entity

    def delete(self, *key: object) -> None:
        """Remove the entity (and its child rows); raises ``NotFound``."""
        cursor = self._conn.execute(f"DELETE FROM {self.table} WHERE {self._key_where()}", key)
        if cursor.rowcount == 0:
            raise self._not_found(key)

    def list(self) -> builtins.list[E]:
        """Every stored entity, in the repository's natural order."""
        return self._load_many(self._select("1", ()))

    def count(self) -> int:
        """How many entities are stored."""
        return int(self._conn.query(f"SELECT COUNT(*) AS n FROM {self.table}")[0]["n"])

    # -- helpers ------------------------------------------------------------------------------------------

    def _select(
        self, where: str, params: Sequence[object], *, limit: int | None = None
    ) -> builtins.list[Row]:
        sql = f"SELECT * FROM {self.table} WHERE {where} ORDER BY {self.order_by}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._conn.query(sql, params)

    def _key_where(self) -> str:
        return " AND ".join(f"{column} = ?" for column in self.key_columns)

    def _key_text(self, key: Sequence[object]) -> str:
        return "/".join(str(int(part) if isinstance(part, int) else part) for part in key)

    def _not_found(self, key: Sequence[object]) -> NotFound:
        text = self._key_text(key)
        return NotFound(
            f"{self.kind} {text} does not exist", message_id="ObjectNotFound", kind=self.kind, key=text
        )

    @staticmethod
    def _version(entity: object) -> int:
        return int(getattr(entity, "version", 0))
