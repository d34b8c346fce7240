"""The store as the engine sees it: one repository per entity and transactions, nothing of how it is kept.

``store.sqlite.Database`` is the implementation; the engine and its entries import this protocol instead, so
opening, migrating and closing the store stay with the composition root.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

from standby.store.sqlite.repos_cycles import CycleRepository, DiskStampRepository
from standby.store.sqlite.repos_failover import (
    FailoverNetworkRepository,
    PointHold,
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
from standby.store.sqlite.repos_service import (
    AuthEntryRepository,
    Event,
    EventRepository,
    ServiceSettingsRepository,
)
from standby.store.sqlite.repos_vms import HostRepository, RelationshipRepository, VmRepository

__all__ = ["Event", "PointHold", "Store"]


class Store(Protocol):
    """Repositories (get / find / list / insert / update with compare-and-swap / delete) and transactions."""

    @property
    def hosts(self) -> HostRepository: ...
    @property
    def vms(self) -> VmRepository: ...
    @property
    def relationships(self) -> RelationshipRepository: ...
    @property
    def recovery_points(self) -> RecoveryPointRepository: ...
    @property
    def jobs(self) -> JobRepository: ...
    @property
    def collections(self) -> CollectionRepository: ...
    @property
    def collection_points(self) -> CollectionPointRepository: ...
    @property
    def redundancy_sets(self) -> RedundancySetRepository: ...
    @property
    def auth_entries(self) -> AuthEntryRepository: ...
    @property
    def service_settings(self) -> ServiceSettingsRepository: ...
    @property
    def events(self) -> EventRepository: ...
    @property
    def cycles(self) -> CycleRepository: ...
    @property
    def disk_stamps(self) -> DiskStampRepository: ...
    @property
    def replicas(self) -> ReplicaRepository: ...
    @property
    def failover_network(self) -> FailoverNetworkRepository: ...
    @property
    def point_holds(self) -> PointHoldRepository: ...
    @property
    def test_failovers(self) -> TestFailoverRepository: ...
    @property
    def collection_settings(self) -> CollectionSettingsRepository: ...
    @property
    def group_cycles(self) -> GroupCycleRepository: ...
    @property
    def failover_indications(self) -> FailoverIndicationRepository: ...

    def transaction(self) -> AbstractContextManager[Any]:
        """Several writes as one: all or none."""
