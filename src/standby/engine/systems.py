"""The VM verbs of Msvm_VirtualSystemManagementService and Msvm_ComputerSystem.RequestStateChange, one entry
each (docs/hyperv-api.md §1), and ``Engine``: every entry the surfaces call, in one typed bundle.

DestroySystem of a test VM ends its test failover (job 103: powered off, overlays deleted, the hold on its
recovery point released); of any other VM it removes the stopped VM and the disks standby made for it.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass

from standby.domain.entities import VirtualMachine
from standby.domain.enums import ReplicationMode
from standby.engine.collection_service import CollectionReplicationService
from standby.engine.collections import CollectionUseCases
from standby.engine.failover import FailoverUseCases
from standby.engine.inventory import Inventory
from standby.engine.jobs import JobManager
from standby.engine.redundancy import RedundancyUseCases
from standby.engine.service import DONE, Outcome, ReplicationService, started
from standby.engine.vms import VmRequest, VmUseCases
from standby.store.port import Event


class VirtualSystems:
    """DefineSystem, DestroySystem and the power state changes of VMs."""

    def __init__(self, vms: VmUseCases, failover: FailoverUseCases) -> None:
        self.vms = vms
        self._failover = failover

    def list(self) -> list[VirtualMachine]:
        """Every VM of this host, by name."""
        return self.vms.list()

    def get(self, ref: str) -> VirtualMachine:
        """A VM by GUID or unique name."""
        return self.vms.get(ref)

    def events(self, ref: str, *, limit: int = 100) -> builtins.list[Event]:
        """The VM's event log, oldest first."""
        return self.vms.db.events.list(element_id=self.vms.get(ref).vm_id, limit=limit)

    def define(self, request: VmRequest) -> VirtualMachine:
        """DefineSystem."""
        return self.vms.define(request)

    def destroy(self, ref: str) -> Outcome:
        """DestroySystem: a test VM ends its test failover (a job); another VM is deleted at once."""
        vm = self.vms.get(ref)
        if vm.replication_mode == ReplicationMode.TEST_REPLICA:
            return started(self._failover.drill.submit_remove(vm.vm_id))
        self.vms.delete(vm.vm_id)
        return DONE

    def request_state_change(self, ref: str, requested: int, *, timeout: float = 60.0) -> Outcome:
        """RequestStateChange: start, stop, pause, resume, reset (a job)."""
        return started(self.vms.submit_state_change(ref, requested, timeout=timeout))

    def kill(self, ref: str) -> Outcome:
        """Stop the VM's process at once (a job)."""
        return started(self.vms.submit_kill(ref))


@dataclass(frozen=True, slots=True)
class Engine:
    """Every engine entry a surface (CIM, REST, CLI through REST, console) calls."""

    replication: ReplicationService
    collections: CollectionReplicationService
    collection_management: CollectionUseCases
    redundancy: RedundancyUseCases
    systems: VirtualSystems
    jobs: JobManager
    #: Read-only listings for the surfaces (they never open the store).
    inventory: Inventory
