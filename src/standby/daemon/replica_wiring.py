"""Builds the replica side for the composition root (``compose.build_services`` calls ``build``).

The applier and the replica use cases need only the store and the clock, so every host serves replicas
(the peer listener runs when ``[tls] ca_file`` is set). Start-up recovery finishes journaled merges and
deletes what crashed applies left behind, before any listener accepts a log.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from standby.engine.apply import ReplicaApplier
from standby.engine.replica import ReplicaUseCases

if TYPE_CHECKING:
    from standby.daemon.compose import Services

log = logging.getLogger("standby.replica")


def build(services: Services) -> ReplicaUseCases:
    """The replica use cases over the daemon's store; registers the start-up cleanup."""
    applier = ReplicaApplier(services.db, services.clock, verify_writes=services.config.replica.verify_writes)
    services.add_recovery_hook("replica-chains", _recover)
    return ReplicaUseCases(services.db, services.clock, applier)


async def _recover(services: Services) -> None:
    await services.replica.applier.recover()
