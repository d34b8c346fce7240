"""standby.store.sqlite: the SQLite state of a host (see docs/ARCHITECTURE.md, "Store")."""

from standby.store.sqlite.database import Database
from standby.store.sqlite.repos_service import Event

__all__ = ["Database", "Event"]
