"""Test failover (``TestReplicaSystem``, hyperv-api §3.2, §9.5): a throwaway copy of a replica VM to try
things on.

The test VM is named ``"<replica name> - Test"``, has ReplicationMode 3 (Test Replica) and its own overlays
``test/<disk>.qcow2`` over the chosen recovery point (constant time); its NICs keep their MACs but sit on an
isolated network (``TEST_NETWORK``), and it gets the cloud-init seed when the replica has failover IP
settings. The point is held (``point_holds``, holder = the test VM) so retention does not merge it while
replication goes on; the hold goes with the test VM's row. ``LastTestFailoverTime`` is recorded.
Removing the test VM (``DestroySystem`` or ``standby failover stop``) powers it off, deletes its row and
its files. One test VM per replica: the precondition table refuses a second (32775).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from standby.domain.entities import Job, Nic, VirtualMachine
from standby.domain.enums import EnabledState, JobType, ReplicationMode
from standby.domain.errors import InvalidState, Unavailable
from standby.domain.failover import TEST_DIR, name_of_test_vm
from standby.domain.preconditions import Operation
from standby.engine.failover_support import (
    ChainGuard,
    FailoverStore,
    overlay_disks,
    own_locks,
    remove_folder_files,
    replica_dir,
    seed_disk,
)
from standby.engine.jobs import JobHandle, JobManager
from standby.engine.replication import ReplicationUseCases
from standby.hypervisor.port import Hypervisor
from standby.storage import failover_images
from standby.store.port import PointHold

#: The network test VMs' NICs are put on: user networking with no route out (see the QEMU command line).
TEST_NETWORK = "isolated:standby-test"
_RECOVERY_MODES = (ReplicationMode.REPLICA, ReplicationMode.EXTENDED_REPLICA)
#: The hold reason of a point a test VM is being made on (held by the replica until the test VM exists).
_PENDING = "test-pending"


class FailoverDrill:
    """Create and remove test VMs of replicas."""

    def __init__(self, store: FailoverStore, jobs: JobManager | None, hypervisor: Hypervisor,
                 guards: ReplicationUseCases, *, chain_guard: ChainGuard | None = None) -> None:
        self.chain_guard = chain_guard or own_locks()
        self.store = store
        self.db = store.db
        self.jobs = jobs
        self.hypervisor = hypervisor
        self.guards = guards

    def test_vm_of(self, replica: VirtualMachine) -> VirtualMachine | None:
        """The replica's test VM, if it has one."""
        wanted = name_of_test_vm(replica.name)
        found = [vm for vm in self.db.vms.find_by_name(wanted)
                 if vm.replication_mode == ReplicationMode.TEST_REPLICA]
        return found[0] if found else None

    def replica_of(self, test_vm: VirtualMachine) -> VirtualMachine | None:
        """The replica a test VM was made from."""
        name = test_vm.name.removesuffix(" - Test")
        found = [vm for vm in self.db.vms.find_by_name(name) if vm.replication_mode in _RECOVERY_MODES]
        return found[0] if found else None

    # -- TestReplicaSystem --------------------------------------------------------------------------------

    def submit_create(self, vm_id: str, point_id: str | None) -> tuple[Job, str]:
        """TestReplicaSystem as a JobType 102 job; returns it with the GUID the test VM will have."""
        target = self.guards.guard(Operation.TEST_REPLICA_SYSTEM, vm_id, point_id=point_id)
        jobs = self._jobs()
        test_id = str(uuid.uuid4()).upper()

        async def work(handle: JobHandle) -> dict[str, str]:
            handle.progress(5)
            return await self.create(vm_id, point_id, test_id)

        job = jobs.submit(JobType.INITIATE_TEST_REPLICA, element_id=vm_id,
                          description="", work=work,
                          message_id="TestFailoverJob", args={"vm": target.vm.name})
        return job, test_id

    async def create(self, vm_id: str, point_id: str | None, test_id: str | None = None) -> dict[str, str]:
        """Make the test VM over ``point_id`` (None = latest); its GUID is ``test_id`` (else a new one)."""
        replica = self.db.vms.get(vm_id)
        async with self.chain_guard(vm_id):
            point = self.store.point(vm_id, point_id)
            # Held by the replica until the test VM exists (a hold names an existing VM): retention
            # leaves the point and its older chain alone from now on.
            self.db.point_holds.hold(PointHold(point.point_id, vm_id, _PENDING, self.store.clock()))
        test_id = test_id or str(uuid.uuid4()).upper()
        root = replica_dir(point)  # None: a diskless replica, nothing on disk to make
        folder = (root or Path()) / TEST_DIR
        try:
            if root is not None:
                # Leftovers of a test VM removed without us (``standby vm delete``) are stale: start clean.
                await asyncio.to_thread(remove_folder_files, folder)
            disks = await asyncio.to_thread(overlay_disks, replica, point, folder)
            instance = f"{test_id.lower()}-test"
            seed = None if root is None else \
                await asyncio.to_thread(seed_disk, self.store, replica, folder, instance)
            test_vm = VirtualMachine(
                vm_id=test_id, name=name_of_test_vm(replica.name), memory_mib=replica.memory_mib,
                cpus=replica.cpus, disks=tuple(disks) + ((seed,) if seed else ()),
                nics=tuple(Nic(n.nic_id, n.mac, TEST_NETWORK) for n in replica.nics),
                kernel=replica.kernel, initrd=replica.initrd, append=replica.append,
                replication_mode=ReplicationMode.TEST_REPLICA, created_at=self.store.clock(),
            )
            self.hypervisor.check(test_vm)
            now = self.store.clock()
            with self.db.transaction():
                self.db.vms.insert(test_vm)
                self.db.point_holds.hold(PointHold(point.point_id, test_id, "test", now))
                self.db.point_holds.release(vm_id, _PENDING)
                self.db.test_failovers.record(vm_id, now, test_id)
        except BaseException:
            self.db.point_holds.release(vm_id, _PENDING)
            if root is not None:
                await asyncio.to_thread(remove_folder_files, folder)
            raise
        self.store.event(vm_id, "failover.test-created", "TestFailoverCreated", vm=replica.name,
                         test_vm=test_vm.name, point=point.point_id)
        return {"ResultingSystem": test_id, "RecoveryPoint": point.point_id}

    # -- removing a test VM ----------------------------------------------------------------------------------

    def resolve_test_vm(self, vm_id: str) -> VirtualMachine:
        """The test VM named by ``vm_id``: the test VM itself, or the replica that has one."""
        vm = self.db.vms.get(vm_id)
        if vm.replication_mode == ReplicationMode.TEST_REPLICA:
            return vm
        test = self.test_vm_of(vm) if vm.replication_mode in _RECOVERY_MODES else None
        if test is None:
            raise InvalidState(f"virtual machine {vm.name} has no test virtual machine",
                               message_id="FailoverNoTestVm", vm=vm.name)
        return test

    def submit_remove(self, vm_id: str) -> Job:
        """Remove a test VM (given it or its replica) as a JobType 103 job."""
        test = self.resolve_test_vm(vm_id)

        async def work(handle: JobHandle) -> dict[str, str]:
            handle.progress(5)
            return await self.remove(test.vm_id)

        return self._jobs().submit(JobType.REMOVE_TEST_REPLICA, element_id=test.vm_id,
                                   description="", work=work,
                                   message_id="RemoveTestFailoverJob", args={"vm": test.name})

    async def remove(self, test_vm_id: str) -> dict[str, str]:
        """Power the test VM off if it runs, forget it (its hold goes too) and delete its files."""
        test = self.db.vms.get(test_vm_id)
        if test.replication_mode != ReplicationMode.TEST_REPLICA:
            raise InvalidState(f"virtual machine {test.name} is not a test virtual machine",
                               message_id="FailoverNotTestVm", vm=test.name)
        if self.hypervisor.state(test_vm_id) is not EnabledState.DISABLED:
            await self.hypervisor.stop(test_vm_id, graceful=False)
        replica = self.replica_of(test)
        self.db.vms.delete(test_vm_id)
        await asyncio.to_thread(_remove_test_files, test)
        if replica is not None:
            self.store.event(replica.vm_id, "failover.test-removed", "TestFailoverRemoved",
                             vm=replica.name, test_vm=test.name)
        return {"RemovedSystem": test_vm_id}

    def remove_orphans(self) -> int:
        """Delete ``test/`` files of replicas that have no test VM any more; how many folders were cleaned."""
        cleaned = 0
        for vm in self.db.vms.list():
            if vm.replication_mode not in _RECOVERY_MODES or self.test_vm_of(vm) is not None:
                continue
            point = self.db.recovery_points.latest(vm.vm_id)
            root = replica_dir(point) if point is not None else None
            if root is None:
                continue
            folder = root / TEST_DIR
            if folder.is_dir() and any(folder.iterdir()):
                remove_folder_files(folder)
                cleaned += 1
        return cleaned

    def _jobs(self) -> JobManager:
        if self.jobs is None:
            raise Unavailable("test failover needs the daemon's job manager", message_id="JobManagerStopped")
        return self.jobs


def _remove_test_files(test: VirtualMachine) -> None:
    failover_images.remove([Path(d.path) for d in test.disks])
    # The seed ISO sits beside the seed overlay: clear the test folder, and only a folder named test/.
    for folder in {Path(d.path).parent for d in test.disks}:
        if folder.name == TEST_DIR:
            remove_folder_files(folder)
