"""The real test guest (TCG) booted from a failover disk and from a test VM's overlay.

The chain is made by the guest itself: a first run writes records onto ``rp-1`` (the base), a second run
onto ``rp-2`` (an overlay on it), so the two points hold different, verifiable prefixes. Failing over to
``rp-1`` and booting shows exactly that prefix, the guest continues it on the failover disk only, and the
point's file stays byte for byte the same; a test VM over ``rp-2`` does the same from the newer prefix.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from standby.domain.entities import (
    Disk,
    Nic,
    RecoveryPoint,
    Relationship,
    ReplicationSettings,
    VirtualMachine,
)
from standby.domain.enums import RelationshipIndex, ReplicationMode, ReplicationState, VirtualSystemType
from standby.domain.failover import FailoverNetworkSettings
from standby.engine.failover import FailoverUseCases
from standby.engine.replication import ReplicationUseCases
from standby.guest import console
from standby.guest.build import GuestImage, build_guest
from standby.guest.verify import verify_image
from standby.hypervisor.qemu import QemuHypervisor
from standby.store.sqlite import Database
from tests.integration.test_failover_support import NOW, VM_ID, clock, file_hash

BOOT_TIMEOUT = 180.0
WRITER = "standby.writer=raw:/dev/vda:rate=200"


@pytest.fixture(scope="module")
def guest() -> GuestImage:
    return build_guest()


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sbfg-", dir="/tmp") as tmp:  # short: unix socket paths
        yield Path(tmp)


async def run_guest(hv: QemuHypervisor, vm: VirtualMachine, at_least: int) -> tuple[int, int]:
    """Boot ``vm``, let its writer get past ``at_least`` records, stop it; (first seq written, records)."""
    log = hv.run_paths(vm.vm_id).console
    offset = len(console.read(log)) if log.exists() else 0
    await hv.start(vm)
    await console.wait_for(log, console.READY, timeout=BOOT_TIMEOUT, after=offset)
    await console.wait_for_seq(log, at_least, timeout=BOOT_TIMEOUT, after=offset)
    await hv.stop(vm.vm_id, graceful=True, timeout=180)
    text = console.read(log)[offset:]
    return console.writer_starts(text)[-1], console.writer_stops(text)[-1]


def test_guest_boots_from_failover_disk_and_test_overlay(guest: GuestImage, workdir: Path) -> None:
    folder = workdir / f"g1_{VM_ID}"
    chain = folder / "disks" / "d0"
    chain.mkdir(parents=True)
    rp1, rp2 = chain / "rp-0000000001.qcow2", chain / "rp-0000000002.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(rp1), "64M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(rp1), "-F", "qcow2", str(rp2)],
                   check=True)
    db = Database.memory()
    hv = QemuHypervisor(workdir / "run", accel="auto")
    failover = FailoverUseCases(db, clock, None, hv, ReplicationUseCases(db, clock))
    base = VirtualMachine(VM_ID, "g1", 192, 1, disks=(Disk("d0", str(rp1), 64 << 20),),
                          nics=(Nic("n0", "52:54:00:0f:0f:01", "none"),), kernel=str(guest.kernel),
                          initrd=str(guest.initrd), append=guest.append(WRITER),
                          replication_mode=ReplicationMode.REPLICA, created_at=NOW)

    async def scenario() -> dict[str, object]:
        try:
            # The "primary" history: run 1 on rp-1, run 2 on rp-2 (what two applied logs would hold).
            _, first = await run_guest(hv, base, 30)
            _, second = await run_guest(hv, VirtualMachine(**{**_fields(base), "disks": (
                Disk("d0", str(rp2), 64 << 20),)}), first + 30)
            db.vms.insert(VirtualMachine(**{**_fields(base), "disks": (Disk("d0", str(rp2), 64 << 20),)}))
            db.relationships.insert(Relationship(
                VM_ID, RelationshipIndex.PRIMARY, ReplicationState.REPLICATING,
                settings=ReplicationSettings(), last_replication_time=NOW))
            for seq, image in ((1, rp1), (2, rp2)):
                db.recovery_points.insert(RecoveryPoint(f"RP{seq}", VM_ID, seq, NOW,
                                                        VirtualSystemType.REPLICA_STANDARD,
                                                        images=(("d0", str(image)),)))
            failover.set_network_settings(VM_ID, [FailoverNetworkSettings(
                VM_ID, "n0", ip_addresses=("192.0.2.10",), subnets=("24",))])
            hashes = (file_hash(rp1), file_hash(rp2))

            await failover.initiate(VM_ID, "RP1")
            failed_over = db.vms.get(VM_ID)
            assert [d.disk_id for d in failed_over.disks] == ["d0", "cidata"]  # the seed boots along
            start, after = await run_guest(hv, failed_over, first + 20)
            disk = Path(failed_over.disks[0].path)
            unchanged = (file_hash(rp1), file_hash(rp2)) == hashes
            report_failover = verify_image(disk)
            await failover.revert(VM_ID)
            reverted = not disk.exists() and db.vms.get(VM_ID).disks[0].path == str(rp2)

            test = await failover.drill.create(VM_ID, "RP2")
            test_vm = db.vms.get(test["ResultingSystem"])
            test_start, test_after = await run_guest(hv, test_vm, second + 20)
            overlay = Path(test_vm.disks[0].path)
            report_test = verify_image(overlay)
            await failover.drill.remove(test_vm.vm_id)
            return {"first": first, "second": second, "start": start, "after": after,
                    "unchanged": unchanged and (file_hash(rp1), file_hash(rp2)) == hashes,
                    "test_start": test_start, "test_after": test_after,
                    "failover_report": report_failover, "test_report": report_test, "reverted": reverted,
                    "rp1": verify_image(rp1), "rp2": verify_image(rp2)}
        finally:
            await hv.close()

    got = asyncio.run(scenario())
    first, second = int(got["first"]), int(got["second"])  # type: ignore[call-overload]
    assert second > first > 0
    # rp-1 and rp-2 hold exact prefixes of the two runs.
    assert got["rp1"].exact_prefix and got["rp1"].records == first  # type: ignore[attr-defined]
    assert got["rp2"].exact_prefix and got["rp2"].records == second  # type: ignore[attr-defined]
    # The failed-over guest found rp-1's prefix and continued it; the points did not change.
    assert got["start"] == first and int(got["after"]) >= first + 20  # type: ignore[call-overload]
    assert got["unchanged"] is True
    # The test VM found rp-2's prefix and continued it on its own overlay, which verifies as exact.
    assert got["test_start"] == second
    report = got["test_report"]
    assert report.exact_prefix and report.records == got["test_after"]  # type: ignore[attr-defined]
    failover_report = got["failover_report"]
    assert failover_report.exact_prefix  # type: ignore[attr-defined]
    assert failover_report.records == got["after"]  # type: ignore[attr-defined]
    assert got["reverted"] is True


def _fields(vm: VirtualMachine) -> dict[str, object]:
    return {name: getattr(vm, name) for name in VirtualMachine.__dataclass_fields__}
