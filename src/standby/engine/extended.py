"""Extended replication (spec §9.8): a replica B replicates on to a third host C (``…\\HVR\\1``, mode 4 on C).

(Being built: see ``ExtendedReplication``.)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from standby.engine.cycle import CycleRunner, PeerFactory
from standby.engine.jobs import JobManager
from standby.engine.replication import ReplicationUseCases
from standby.store.sqlite import Database

Clock = Callable[[], datetime]


class ExtendedReplication:
    """Extended CreateReplicationRelationship, forwarding of the points, ChangeReplicationModeToPrimary."""

    def __init__(self, guards: ReplicationUseCases, jobs: JobManager | None, runner: CycleRunner | None,
                 peers: PeerFactory | None, *, db: Database, clock: Clock, host_name: str = "") -> None:
        self._guards = guards
        self._jobs = jobs
        self._runner = runner
        self._peers = peers
        self._db = db
        self._clock = clock
        self._host = host_name
