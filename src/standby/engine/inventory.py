"""What this host holds, read-only, for the surfaces that list it (CIM instance providers, REST listings).

The surfaces never open the store: they list through these queries and act through the engine entries.
"""

from __future__ import annotations

import builtins

from standby.domain.entities import (
    AuthorizationEntry,
    Collection,
    CollectionRecoveryPoint,
    Job,
    RecoveryPoint,
    RedundancySet,
    Relationship,
    ReplicationSettings,
    ServiceSettings,
    VirtualMachine,
)
from standby.domain.failover import FailoverNetworkSettings
from standby.domain.groups import FailoverIndication
from standby.store.port import Store


class Inventory:
    """Read-only queries over the store."""

    def __init__(self, db: Store) -> None:
        self._db = db

    def vms(self) -> list[VirtualMachine]:
        """Every VM of this host, by name."""
        return self._db.vms.list()

    def find_vm(self, vm_id: str) -> VirtualMachine | None:
        """A VM by GUID, None when there is none."""
        return self._db.vms.find(vm_id)

    def relationships(self) -> list[Relationship]:
        """Every relationship of every VM."""
        return self._db.relationships.list()

    def find_relationship(self, vm_id: str, index: int) -> Relationship | None:
        """The VM's relationship ``index``, None when it has none."""
        return self._db.relationships.find(vm_id, index)

    def recovery_points(self) -> list[RecoveryPoint]:
        """Every recovery point of every replica VM."""
        return self._db.recovery_points.list()

    def collections(self) -> list[Collection]:
        """Every collection."""
        return self._db.collections.list()

    def find_collection(self, collection_id: str) -> Collection | None:
        """A collection by id, None when there is none."""
        return self._db.collections.find(collection_id)

    def collection_points(self, collection_id: str | None = None) -> builtins.list[CollectionRecoveryPoint]:
        """Collection recovery points (of one collection when named)."""
        if collection_id is None:
            return self._db.collection_points.list()
        return self._db.collection_points.list(collection_id=collection_id)

    def collection_settings(self, collection_id: str) -> tuple[str, ReplicationSettings] | None:
        """A replicating collection's ElementName and settings."""
        return self._db.collection_settings.find(collection_id)

    def authorization_entries(self) -> list[AuthorizationEntry]:
        """The replica server's authorization entries."""
        return self._db.auth_entries.list()

    def service_settings(self) -> ServiceSettings:
        """The replica server's settings."""
        return self._db.service_settings.get()

    def jobs(self) -> list[Job]:
        """Every job the store keeps."""
        return self._db.jobs.list()

    def job(self, job_id: str) -> Job:
        """One job (``NotFound`` when there is none)."""
        return self._db.jobs.get(job_id)

    def failover_network(self) -> list[FailoverNetworkSettings]:
        """The failover IP settings stored for every NIC that has some."""
        return self._db.failover_network.list()

    def redundancy_sets(self) -> list[RedundancySet]:
        """Every stored redundancy set."""
        return self._db.redundancy_sets.list()

    def failover_indications(self) -> list[FailoverIndication]:
        """The failovers this host keeps as indications."""
        return self._db.failover_indications.list()
