"""P7: a full recovery history — 720 hourly points plus every 30 s cycle of the last hour (840 points) —
its storage overhead, and failover to the oldest point against failover to the newest.

The chain is built by the replica's own applier (``ReplicaApplier`` through ``ReplicaUseCases.put_log``)
from 840 logs of 1 MiB each, under a clock that advances one hour per log for the first 720 and 30 s per
log after that, with RecoveryHistory 720: retention runs after every apply and keeps them all (one per
clock hour, everything of the last hour). Overhead = allocated bytes of all point images ÷ bytes of data
the logs carried. Failover = the InitiateFailover job (JobManager, as P1) to the oldest point and to the
newest one (whose image has the 839 others as its backing chain); a RevertFailover after each.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import Figure, GiB, MiB, Options, median, say, scratch
from bench.logs import LocalReplica, encode, mixed
from bench.p01_failover import _not_running
from bench.rig import Site
from standby.domain.enums import JobState
from standby.engine.failover import FailoverUseCases
from standby.engine.jobs import JobManager
from standby.engine.replication import ReplicationUseCases
from standby.hypervisor.fake import FakeHypervisor
from standby.storage.logformat import LogKind

HOURLY, RECENT = 720, 120
SIZE = 16 * GiB
TARGET = 1.2


class SteppingClock:
    """A clock the bench moves: what ``now`` the applier and retention see."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


async def _build(replica: LocalReplica, clock: SteppingClock, hourly: int,
                 recent: int) -> tuple[str, list[float]]:
    vm_id = replica.create(SIZE, history=HOURLY)
    applies = []
    for seq in range(1, hourly + recent + 1):
        clock.now += timedelta(hours=1) if seq <= hourly else timedelta(seconds=30)
        kind = LogKind.INITIAL if seq == 1 else LogKind.DELTA
        log = encode(vm_id, seq, seq - 1, SIZE, [((seq * 16 * MiB) % SIZE, mixed(MiB, seq))], kind=kind,
                     at=clock.now)
        start = time.perf_counter()
        await replica.put(vm_id, seq, log)
        applies.append(time.perf_counter() - start)
        if seq % 100 == 0:
            say(f"P7: {seq} points applied (last apply {applies[-1] * 1000:.0f} ms)")
    return vm_id, applies


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
        vm_id, applies = await _build(replica, clock, hourly, recent)
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
               note=f"apply median {median(got.applies[:10]) * 1000:.0f} ms for the first 10, "
                    f"{median(got.applies[-10:]) * 1000:.0f} ms for the last 10"),
        Figure("P7", "storage: allocated ÷ data carried", got.allocated / got.data, "×",
               note=f"{got.allocated / MiB:.0f} MiB for {got.data / MiB:.0f} MiB of data; "
                    f"{overhead:.0f} KiB of qcow2 metadata per point"),
        Figure("P7", "InitiateFailover to the oldest point", oldest * 1000, "ms", newest * 1000,
               "failover to the newest", ratio, "oldest ÷ newest", f"≤ {TARGET}", ratio <= TARGET,
               [round(s * 1000, 1) for s in got.oldest]),
    ]
