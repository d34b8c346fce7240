"""InitiateFailover job time on sparse 1 GiB and 16 GiB chains (not a test; run on demand).

    .venv/bin/python -m tests.integration.bench_failover [--repeat 10]

For each size: a 5-point chain (each point writes 8 MiB with qemu-io), then ``repeat`` times an
InitiateFailover job through the real JobManager (split-brain probe answering "not running") followed by a
RevertFailover job, and as often the job body alone (awaited without a job). Prints medians and maxima; the
overlay is constant time, so both sizes should match.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from standby.domain.entities import Relationship, VirtualMachine
from standby.domain.enums import JobState
from standby.engine.failover import FailoverUseCases
from standby.engine.jobs import JobManager
from standby.engine.replication import ReplicationUseCases
from standby.hypervisor.fake import FakeHypervisor
from standby.store.sqlite import Database
from tests.integration.test_failover_support import VM_ID, clock, make_replica

_WRITES = tuple((0x10 + i, i * (64 << 20), 8 << 20) for i in range(5))


async def _measure(size: str, repeat: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory(prefix="sbbench-", dir="/tmp") as tmp:
        db = Database.memory()
        make_replica(Path(tmp), db, size=size, writes=_WRITES)
        jobs = JobManager(db, clock)

        async def not_running(vm: VirtualMachine, relationship: Relationship) -> bool | None:
            return False

        failover = FailoverUseCases(db, clock, jobs, FakeHypervisor(), ReplicationUseCases(db, clock),
                                    primary_probe=not_running)
        run_times, client_times = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            job = failover.submit_initiate(VM_ID, None)
            done = await jobs.wait(job.job_id, 60)
            client_times.append(time.perf_counter() - t0)
            assert done.state == JobState.COMPLETED, done.error_description
            revert = failover.submit_revert(VM_ID)
            assert (await jobs.wait(revert.job_id, 60)).state == JobState.COMPLETED
            # The job body alone, without the job bookkeeping around it.
            t1 = time.perf_counter()
            await failover.initiate(VM_ID, None)
            run_times.append(time.perf_counter() - t1)
            await failover.revert(VM_ID)
        return run_times, client_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    for size in ("1024M", "16384M"):
        work, client = asyncio.run(_measure(size, args.repeat))
        print(f"InitiateFailover on a {int(size[:-1]) >> 10} GiB chain ({args.repeat} runs): job submit to "
              f"finished median {statistics.median(client) * 1000:.1f} ms (max {max(client) * 1000:.1f}); "
              f"work alone median {statistics.median(work) * 1000:.1f} ms (max {max(work) * 1000:.1f})")


if __name__ == "__main__":
    main()
