"""The replication rig the rows share: a real replica daemon (host B of a two-host site on loopback, mutual
TLS) and an in-process primary (our QEMU driver, ``Capture``, ``CycleRunner``, optionally the real
``Scheduler``) whose peer client presents host A's certificate.

The primary runs in this process so a row can inject guest writes through ``qemu-io`` on the device backend
(DESIGN §7) and read each cycle's result directly; everything else is the product's own code path: QMP
transaction cut, fleecing + NBD export, our NBD client, the log encoder, ``PeerClient.put_log`` over HTTPS,
and on B the peer listener, the applier (qemu-nbd writes, read-back verify, fsync, rename) and SQLite.

The primary VMs boot nothing (no kernel, a blank disk: SeaBIOS finds no boot sector and halts), so the
guest never competes with the bench for the two cores; writes come from ``qemu-io`` at the rate a row asks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import MiB, run
from standby.domain.entities import Disk, Relationship, ReplicationSettings, VirtualMachine
from standby.domain.enums import (
    EnabledState,
    RelationshipIndex,
    ReplicationHealth,
    ReplicationMode,
    ReplicationState,
)
from standby.engine.capture import Capture
from standby.engine.cycle import CycleResult, CycleRunner
from standby.hypervisor.qemu import QemuHypervisor
from standby.peer.client import PeerClient
from standby.peer.tls import PeerTls
from standby.store.sqlite import Database
from standby.testing.cluster import TwoHosts


def now() -> datetime:
    """The real clock (cycle records and points carry real times)."""
    return datetime.now(UTC)


class Site:
    """Two real daemons on loopback (A, B), started on first use and shared by the rows of one run."""

    def __init__(self) -> None:
        self._site: TwoHosts | None = None

    def get(self) -> TwoHosts:
        """The running site (started now if needed)."""
        if self._site is None:
            self._site = TwoHosts.start(network_mode="loopback")
        return self._site

    def close(self) -> None:
        """Stop both daemons and sweep the folder."""
        if self._site is not None:
            self._site.close()
            self._site = None


def pattern_file(path: Path, size: int = 4 * MiB, *, compressible: bool = True) -> Path:
    """Data for ``qemu-io write -s`` (which fills every write from the file's start): 2 KiB random, 2 KiB
    text, alternating — so any write of 4 KiB or more is half compressible (zstd-1 ≈ 2:1)."""
    text = (b"standby keeps a warm copy of a running VM's disks on another host. " * 40)[:2048]
    with path.open("wb") as out:
        for offset in range(0, size, 2048):
            out.write(text if compressible and (offset // 2048) % 2 else os.urandom(2048))
    return path


@dataclass
class PrimaryVm:
    """A VM of the in-process primary."""

    vm: VirtualMachine

    @property
    def vm_id(self) -> str:
        """Its GUID (the same on the replica)."""
        return self.vm.vm_id

    @property
    def disk(self) -> Path:
        """Its only disk's image."""
        return Path(self.vm.disks[0].path)


class Primary:
    """Host A's primary side, in this process, replicating to the site's host B."""

    def __init__(self, site: TwoHosts, folder: Path) -> None:
        self.site = site
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.db = Database.open(folder / "primary.db")
        self.hv = QemuHypervisor(folder / "run", accel="auto")
        self.capture = Capture(self.hv, folder / "run")
        tls = PeerTls(site.ca.cert_file, site.a.cert.cert_file, site.a.cert.key_file)
        self.peer = PeerClient(site.b.peer_url, tls)
        self.runner = CycleRunner(self.db, self.capture, lambda _settings: self.peer, now)

    async def close(self) -> None:
        """Power every VM off and close the connections."""
        for vm_id in list(self.hv.running()):
            with contextlib.suppress(Exception):
                await self.hv.kill(vm_id)
        await self.hv.close()
        await self.peer.aclose()
        self.db.close()

    def settings(self, *, interval: int = 30, compression: bool = True,
                 history: int = 0) -> ReplicationSettings:
        """Settings pointing at host B's peer listener."""
        b = self.site.b
        return ReplicationSettings(recovery_connection_point=b.address, recovery_port=b.peer_port,
                                   primary_connection_point=self.site.a.name, interval_seconds=interval,
                                   compression_enabled=compression, recovery_history=history)

    async def add_vm(self, name: str, size: int, *, memory_mib: int = 64, image: Path | None = None,
                     start: bool = True) -> PrimaryVm:
        """Define a VM with one qcow2 disk (a new blank one unless ``image``) and start it."""
        vm_id = str(uuid.uuid4()).upper()
        disk = image or self.folder / f"{name}-{vm_id[:8]}.qcow2"
        if image is None:
            run("qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(size))
        vm = VirtualMachine(vm_id, name, memory_mib, 1, disks=(Disk("d0", str(disk), size),),
                            replication_mode=ReplicationMode.PRIMARY, created_at=now())
        vm = self.db.vms.insert(vm)
        if start:
            await self.hv.start(vm)
            vm = self.db.vms.update(replace(vm, enabled_state=EnabledState.ENABLED))
        return PrimaryVm(vm)

    async def enable(self, pvm: PrimaryVm, settings: ReplicationSettings) -> CycleResult:
        """CreateReplicationRelationship (the replica on B) and the initial replication over the network."""
        await self.peer.create_replica(pvm.vm, settings, primary_host=self.site.a.name)
        self.db.relationships.insert(Relationship(
            pvm.vm_id, RelationshipIndex.PRIMARY, ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION,
            health=ReplicationHealth.OK, settings=settings))
        from standby.domain.cycles import CycleKind

        return await self.runner.run(pvm.vm_id, kind=CycleKind.INITIAL)

    async def cycle(self, pvm: PrimaryVm, kind: Any = None) -> CycleResult:
        """One cycle (delta unless ``kind``); a failed one raises with its detail."""
        from standby.domain.cycles import CycleKind, CycleOutcome

        result = await self.runner.run(pvm.vm_id, kind=kind or CycleKind.DELTA)
        if result.outcome is not CycleOutcome.SUCCESS:
            raise RuntimeError(f"cycle {result.sequence} of {pvm.vm.name}: {result.outcome}: {result.detail}")
        return result

    async def write(self, pvm: PrimaryVm, offset: int, length: int, source: Path | None = None) -> None:
        """Write as the guest would (``qemu-io`` on the virtio backend): from ``source`` or a byte pattern."""
        ops = self.hv.qmp(pvm.vm_id)
        data = f"-s {source}" if source else "-P 0x5a"
        out = await ops.hmp(f'qemu-io -d /machine/peripheral/disk-d0/virtio-backend '
                            f'"write -q {data} {offset} {length}"')
        if out.strip():
            raise RuntimeError(f"qemu-io write failed: {out.strip()}")

    def meter(self, pvm: PrimaryVm) -> CpuMeter:
        """CPU of this process (the primary), the VM's QEMU, and B's daemon with its qemu-nbd/qemu-img."""
        b = self.site.b.daemon.process
        assert b is not None
        return CpuMeter({"primary": os.getpid(), "qemu": self.hv.pid(pvm.vm_id), "replica": b.pid})

    def forget_replica(self, pvm: PrimaryVm) -> None:
        """Delete B's files of a replica a row no longer needs (disk space; B's rows stay)."""
        for folder in self.site.b.replica_location.glob(f"*_{pvm.vm_id}"):
            shutil.rmtree(folder, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of its children it has reaped (qemu-nbd, qemu-img), seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks  # utime stime cutime cstime


class CpuMeter:
    """CPU seconds the parts of a cycle used between ``start`` and ``stop``: what bounds the figure."""

    def __init__(self, parts: dict[str, int]) -> None:
        self.parts = parts
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        """Snapshot now."""
        self._start = {name: cpu_seconds(pid) for name, pid in self.parts.items()}

    def stop(self) -> dict[str, float]:
        """CPU seconds per part since ``start``."""
        self.used = {name: cpu_seconds(pid) - self._start[name] for name, pid in self.parts.items()}
        return self.used

    def describe(self, wall: float) -> str:
        """"CPU 1.9 of 2 cores: primary 0.4, qemu 0.3, …" for a note."""
        total = sum(self.used.values())
        parts = ", ".join(f"{name} {used / wall:.2f}" for name, used in self.used.items())
        return f"cores busy {total / wall:.2f} of {os.cpu_count()} ({parts})"
