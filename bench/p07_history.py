"""P7: a full recovery history — 720 hourly points plus every 30 s cycle of the last hour (840 points) —
its storage overhead, and failover to the oldest point against failover to the newest.

Each point carries 1 MiB; a clock advances one hour per point for the first 720 and 30 s after that, with
RecoveryHistory 720. The first point and the last three are applied by the replica's own applier
(``ReplicaApplier`` through ``ReplicaUseCases.put_log``, timed to the answer; retention runs after each answer
and is awaited before anything else, so the count kept is retention's verdict); the 836 between are laid out
exactly as the applier lays them out (one qcow2 overlay per point, rp-N backed by rp-(N-1), plus the store
rows) with qemu-img/qemu-io, because a real apply opens the whole chain and 840 of them take ~40 min here
(closing note). Overhead = allocated bytes of all point images ÷ bytes of data the points carry. Failover =
the InitiateFailover job (JobManager, as P1) to the oldest point and to the newest one (whose image has the
839 others as its backing chain); a RevertFailover after each. The newest one is also held to P1's target
(≤ 1 s) at that depth.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import Figure, GiB, MiB, Options, median, run, say, scratch
from bench.logs import LocalReplica, encode, mixed
from bench.p01_failover import _not_running
from bench.rig import Site
from standby.domain.entities import RecoveryPoint
from standby.domain.enums import JobState, VirtualSystemType
from standby.domain.replica import point_file_name
from standby.engine.apply import disk_folder
from standby.engine.failover import FailoverUseCases
from standby.engine.jobs import JobManager
from standby.engine.replication import ReplicationUseCases
from standby.hypervisor.fake import FakeHypervisor
from standby.storage.logformat import LogKind

HOURLY, RECENT = 720, 120
SIZE = 16 * GiB
TARGET = 1.2
#: Points applied for real at the end of the chain (the apply time at depth).
TAIL = 3


class SteppingClock:
    """A clock the bench moves: what ``now`` the applier and retention see."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


async def _build(replica: LocalReplica, clock: SteppingClock, hourly: int, recent: int,
                 folder: Path) -> tuple[str, list[float]]:
    """The first point and the last ``TAIL`` through the applier (timed); the ones between laid out as the
    applier lays them out (qemu-img + qemu-io + an unsafe rebase per point, and the store rows), because
    each real apply opens the whole chain (see the closing note) and 840 of them take ~40 min."""
    vm_id = replica.create(SIZE, history=HOURLY)
    total = hourly + recent
    applies = [await _apply(replica, clock, vm_id, 1, hourly)]
    source = folder / "pattern"
    source.write_bytes(mixed(MiB))
    site = replica.db.replicas.get(vm_id)
    chain = disk_folder(site, "d0")
    head = replica.db.recovery_points.latest(vm_id)
    assert head is not None
    for seq in range(2, total - TAIL + 1):
        clock.now += _step(seq, hourly)
        image = chain / point_file_name(seq)
        run("qemu-img", "create", "-q", "-f", "qcow2", str(image), str(SIZE))
        run("qemu-io", "-f", "qcow2", "-c", f"write -q -s {source} {_offset(seq)} {MiB}", str(image))
        run("qemu-img", "rebase", "-u", "-b", point_file_name(seq - 1), "-F", "qcow2", str(image))
        head = replica.db.recovery_points.insert(RecoveryPoint(
            str(uuid.uuid4()).upper(), vm_id, seq, clock.now, VirtualSystemType.REPLICA_STANDARD,
            images=(("d0", str(image)),), parent_id=head.point_id))
        if seq % 200 == 0:
            say(f"P7: {seq} points laid out")
    for seq in range(total - TAIL + 1, total + 1):
        applies.append(await _apply(replica, clock, vm_id, seq, hourly))
    return vm_id, applies


async def _apply(replica: LocalReplica, clock: SteppingClock, vm_id: str, seq: int, hourly: int) -> float:
    clock.now += _step(seq, hourly)
    kind = LogKind.INITIAL if seq == 1 else LogKind.DELTA
    log = encode(vm_id, seq, seq - 1, SIZE, [(_offset(seq), mixed(MiB, seq))], kind=kind, at=clock.now)
    start = time.perf_counter()
    await replica.put(vm_id, seq, log, settle=False)
    elapsed = time.perf_counter() - start  # to the answer: the apply; retention follows it
    await replica.settled(vm_id)  # the next step (and the count of points kept) sees retention's verdict
    return elapsed


def _step(seq: int, hourly: int) -> timedelta:
    return timedelta(hours=1) if seq <= hourly else timedelta(seconds=30)


def _offset(seq: int) -> int:
    return (seq * 16 * MiB) % SIZE


async def _failovers(replica: LocalReplica, vm_id: str, point_id: str | None, repeat: int) -> list[float]:
    jobs = JobManager(replica.db, replica.clock)
    failover = FailoverUseCases(replica.db, replica.clock, jobs, FakeHypervisor(),
                                ReplicationUseCases(replica.db, replica.clock), primary_probe=_not_running)
    loop = asyncio.get_running_loop()
    out = []
    for _ in range(repeat):
        start = loop.time()
        done = await jobs.wait(failover.submit_initiate(vm_id, point_id).job_id, 300)
        out.append(loop.time() - start)
        if done.state != JobState.COMPLETED:
            raise RuntimeError(f"InitiateFailover ended {done.state.name}: {done.error_description}")
        if (await jobs.wait(failover.submit_revert(vm_id).job_id, 300)).state != JobState.COMPLETED:
            raise RuntimeError("RevertFailover did not complete")
    return out


def _allocated(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("rp-*.qcow2"))


@dataclass
class History:
    """What the row measured."""

    points: int
    applies: list[float]
    newest: list[float]
    oldest: list[float]
    allocated: int
    data: int


async def _measure(folder: Path, repeat: int, hourly: int, recent: int) -> History:
    clock = SteppingClock(datetime(2026, 1, 1, tzinfo=UTC))
    replica = LocalReplica(folder, clock)
    try:
        vm_id, applies = await _build(replica, clock, hourly, recent, folder)
        points = replica.db.recovery_points.list(vm_id=vm_id)
        oldest = min(points, key=lambda p: p.sequence)
        newest = await _failovers(replica, vm_id, None, repeat)
        old = await _failovers(replica, vm_id, oldest.point_id, repeat)
        return History(len(points), applies, newest, old, _allocated(folder / "replicas"),
                       (hourly + recent) * MiB)
    finally:
        replica.close()


def run_row(site: Site, opts: Options) -> list[Figure]:
    """The row's figures."""
    hourly, recent = (72, 12) if opts.quick else (HOURLY, RECENT)
    repeat = 3 if opts.quick else max(5, opts.repeat)
    with scratch("p7") as folder:
        say(f"P7: applying {hourly} + {recent} logs into one chain")
        got = asyncio.run(_measure(folder, repeat, hourly, recent))
    newest, oldest = median(got.newest), median(got.oldest)
    ratio = oldest / newest
    overhead = (got.allocated - got.data) / got.points / 1024
    return [
        Figure("P7", f"recovery points kept ({hourly} hourly + {recent} of the last hour)", float(got.points),
               "points", target=f"{hourly + recent}", met=got.points == hourly + recent,
               note=f"apply {got.applies[0] * 1000:.0f} ms for the first point, median "
                    f"{median(got.applies[1:]) * 1000:.0f} ms for the last {TAIL} (chain depth "
                    f"{got.points})"),
        Figure("P7", "storage: allocated ÷ data carried", got.allocated / got.data, "×",
               note=f"{got.allocated / MiB:.0f} MiB for {got.data / MiB:.0f} MiB of data; "
                    f"{overhead:.0f} KiB of qcow2 metadata per point"),
        Figure("P7", "InitiateFailover to the oldest point", oldest * 1000, "ms", newest * 1000,
               "failover to the newest", ratio, "oldest ÷ newest", f"≤ {TARGET}", ratio <= TARGET,
               [round(s * 1000, 1) for s in got.oldest]),
        # P1's target at depth: the newest point's image has every other point under it.
        Figure("P7", f"InitiateFailover to the newest point (chain depth {got.points})", newest * 1000, "ms",
               target="≤ 1 s", met=newest <= 1.0, samples=[round(s * 1000, 1) for s in got.newest]),
    ]
