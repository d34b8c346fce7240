"""What the CIM providers work with: the store, the clock, this host, the schema and the engine use cases.

``CimRuntime`` is built once by the composition root (``daemon/compose.py``) or a test, and handed to every
provider's ``install``. ``services`` is the daemon's whole ``Services`` object (or None in unit tests) for
providers that need more than the fields here (e.g. the VM use cases of ``engine/vms.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from standby.cim.schema import Schema
from standby.domain.entities import Host, Job
from standby.engine.collections import CollectionUseCases
from standby.engine.jobs import JobManager
from standby.engine.replication import ReplicationUseCases
from standby.store.sqlite import Database

Clock = Callable[[], datetime]


class ConnectionTester(Protocol):
    """The part of ``engine.connection.ReplicationConnectionTester`` the CIM layer calls."""

    def submit(self, target: Any) -> Job:
        """Start the connection test as a job."""
        ...


@dataclass(slots=True)
class CimRuntime:
    """Everything a provider may use."""

    db: Database
    clock: Clock
    host: Host
    schema: Schema
    replication: ReplicationUseCases
    collections: CollectionUseCases
    jobs: JobManager | None = None
    connection_tester: ConnectionTester | None = None
    services: Any = None
