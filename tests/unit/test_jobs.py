"""JobManager on a real SQLite store and a real asyncio loop: state paths, cancel codes, InUse, restart."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from standby.domain.enums import JobState, JobType, StateChangeCode
from standby.domain.errors import InUse, InvalidState, NotFound, Unavailable
from standby.engine.jobs import JobHandle, JobManager
from standby.store.sqlite import Database

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
VM = "6F2C1A3E-0000-4000-8000-0000000000AA"


class Clock:
    """An injected clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def db() -> Iterator[Database]:
    database = Database.memory()
    yield database
    database.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def until(predicate: object, attempts: int = 500) -> None:
    """Let the loop run until ``predicate()`` holds (bounded by attempts, not by time)."""
    assert callable(predicate)
    for _ in range(attempts):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def test_job_runs_new_running_completed(db: Database, clock: Clock) -> None:
    seen: list[JobState] = []

    async def scenario() -> None:
        manager = JobManager(db, clock)
        release = asyncio.Event()

        async def work(handle: JobHandle) -> dict[str, str]:
            seen.append(manager.get(handle.job_id).state)
            handle.progress(30)
            clock.advance(10)
            await release.wait()
            handle.progress(250)  # clamped
            return {"ResultingSystem": "ABC", "Count": 3}  # type: ignore[dict-item]

        job = manager.submit(JobType.INITIATE_FAILOVER, element_id=VM, description="Failing over", work=work)
        assert job.state is JobState.NEW and job.submitted_at == T0
        assert db.jobs.get(job.job_id).state is JobState.NEW
        await until(lambda: manager.get(job.job_id).percent_complete == 30)
        running = manager.get(job.job_id)
        assert running.state is JobState.RUNNING and running.started_at == T0
        clock.advance(5)
        release.set()
        done = await manager.wait(job.job_id, 5)
        assert done.state is JobState.COMPLETED
        assert done.percent_complete == 100
        assert done.error_code == 0 and done.error_message_id is None
        assert done.result == (("ResultingSystem", "ABC"), ("Count", "3"))
        assert done.finished_at == T0 + timedelta(seconds=15)
        assert done.state_changed_at == done.finished_at
        assert done.elapsed(T0 + timedelta(hours=1)) == timedelta(seconds=15)
        assert done.description == "Failing over" and done.element_id == VM
        assert done.time_before_removal == timedelta(minutes=5) and done.delete_on_completion

    asyncio.run(scenario())
    assert seen == [JobState.RUNNING]


def test_standby_error_ends_as_exception_with_its_code(db: Database, clock: Clock) -> None:
    async def scenario() -> None:
        manager = JobManager(db, clock)

        async def work(handle: JobHandle) -> None:
            raise InvalidState(
                "Cannot fail over: replicating", message_id="PreconditionModeState", mode="primary"
            )

        job = manager.submit(JobType.INITIATE_FAILOVER, element_id=VM, description="x", work=work)
        done = await manager.wait(job.job_id, 5)
        assert done.state is JobState.EXCEPTION
        assert done.error_code == 32775
        assert done.error_message_id == "PreconditionModeState"
        assert done.error_args == (("mode", "primary"),)
        assert done.error_description == "Cannot fail over: replicating"
        assert done.error_summary == "Initiate Failover failed."
        assert done.percent_complete == 0

    asyncio.run(scenario())


def test_unexpected_exception_is_code_32768_and_logged(
    db: Database, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        manager = JobManager(db, clock)

        async def work(handle: JobHandle) -> None:
            raise ZeroDivisionError("division by zero in the cycle")

        job = manager.submit(JobType.APPLY_CHANGE_LOG, element_id=VM, description="x", work=work)
        done = await manager.wait(job.job_id, 5)
        assert done.state is JobState.EXCEPTION
        assert done.error_code == 32768
        assert done.error_message_id == "UnexpectedError"
        assert "ZeroDivisionError: division by zero in the cycle" in done.error_description

    with caplog.at_level(logging.ERROR, logger="standby.jobs"):
        asyncio.run(scenario())
    crash = [r for r in caplog.records if r.getMessage() == "job crashed"]
    assert crash and crash[0].exc_info is not None
    assert "division by zero in the cycle" in str(crash[0].exc_info[1])


def test_work_returning_a_non_mapping_is_an_exception(db: Database, clock: Clock) -> None:
    async def scenario() -> None:
        manager = JobManager(db, clock)

        async def work(handle: JobHandle) -> object:
            return ["not", "a", "mapping"]

        job = manager.submit(JobType.START_VM, element_id=VM, description="x", work=work)  # type: ignore[arg-type]
        done = await manager.wait(job.job_id, 5)
        assert done.state is JobState.EXCEPTION and "mapping" in done.error_description

    asyncio.run(scenario())


def test_one_non_terminal_job_per_element(db: Database, clock: Clock) -> None:
    async def scenario() -> None:
        manager = JobManager(db, clock)
        release = asyncio.Event()

        async def work(handle: JobHandle) -> None:
            await release.wait()

        first = manager.submit(JobType.START_VM, element_id=VM, description="start", work=work)
        with pytest.raises(InUse) as caught:
            manager.submit(JobType.POWER_OFF_VM, element_id=VM, description="stop", work=work)
        assert caught.value.code == 32774
        assert first.job_id in str(caught.value)
        assert len(manager.list(element_id=VM)) == 1  # the refused job was not stored
        other = manager.submit(JobType.START_VM, element_id="OTHER", description="start", work=work)
        release.set()
        await manager.wait(first.job_id, 5)
        await manager.wait(other.job_id, 5)
        again = manager.submit(JobType.POWER_OFF_VM, element_id=VM, description="stop", work=work)
        assert (await manager.wait(again.job_id, 5)).state is JobState.COMPLETED
        assert len(manager.list()) == 3

    asyncio.run(scenario())


def test_terminate_lets_the_work_unwind_then_records_terminated(db: Database, clock: Clock) -> None:
    cleaned_up: list[bool] = []

    async def scenario() -> None:
        manager = JobManager(db, clock)
        started = asyncio.Event()

        async def work(handle: JobHandle) -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                cleaned_up.append(handle.cancel_requested)

        job = manager.submit(
            JobType.RESYNCHRONIZING, element_id=VM, description="x", work=work, cancellable=True
        )
        await started.wait()
        assert manager.cancel(job.job_id, kill=False) is StateChangeCode.COMPLETED
        done = await manager.wait(job.job_id, 5)
        assert done.state is JobState.TERMINATED
        assert done.error_message_id == "JobTerminated" and done.error_code == 32768
        assert done.finished_at is not None
        assert manager.cancel(job.job_id, kill=False) is StateChangeCode.INVALID_STATE_TRANSITION

    asyncio.run(scenario())
    assert cleaned_up == [True]


def test_cooperative_cancel_via_raise_if_cancelled(db: Database, clock: Clock) -> None:
    steps: list[int] = []

    async def scenario() -> None:
        manager = JobManager(db, clock)
        job_ids: list[str] = []

        async def work(handle: JobHandle) -> None:
            for step in range(1000):
                handle.raise_if_cancelled()
                steps.append(step)
                if step == 3:
                    manager.cancel(job_ids[0], kill=False)  # as if a client asked right now
                await asyncio.sleep(0)

        job = manager.submit(
            JobType.CONSISTENCY_CHECKER, element_id=VM, description="x", work=work, cancellable=True
        )
        job_ids.append(job.job_id)
        assert (await manager.wait(job.job_id, 5)).state is JobState.TERMINATED

    asyncio.run(scenario())
    assert steps == [0, 1, 2, 3]


def test_kill_records_killed_at_once(db: Database, clock: Clock) -> None:
    async def scenario() -> None:
        manager = JobManager(db, clock)
        started = asyncio.Event()

        async def work(handle: JobHandle) -> None:
            started.set()
            await asyncio.Event().wait()

        job = manager.submit(
            JobType.SENDING_INITIAL_REPLICA, element_id=VM, description="x", work=work, cancellable=True
        )
        await started.wait()
        clock.advance(7)
        assert manager.cancel(job.job_id, kill=True) is StateChangeCode.COMPLETED
        killed = manager.get(job.job_id)  # no await in between: recorded synchronously
        assert killed.state is JobState.KILLED
        assert killed.error_message_id == "JobKilled"
        assert killed.finished_at == T0 + timedelta(seconds=7)
        await until(lambda: not manager._tasks)  # the task itself is cancelled too
        assert manager.get(job.job_id).state is JobState.KILLED

    asyncio.run(scenario())


def test_cancel_codes_for_finished_not_cancellable_and_unknown(db: Database, clock: Clock) -> None:
    async def scenario() -> None:
        manager = JobManager(db, clock)
        release = asyncio.Event()

        async def work(handle: JobHandle) -> None:
            await release.wait()

        fixed = manager.submit(JobType.COMMIT_FAILOVER, element_id=VM, description="x", work=work)
        await until(lambda: manager.get(fixed.job_id).state is JobState.RUNNING)
        assert manager.cancel(fixed.job_id, kill=True) is StateChangeCode.NOT_SUPPORTED
        assert manager.cancel(fixed.job_id, kill=False) is StateChangeCode.NOT_SUPPORTED
        release.set()
        assert (await manager.wait(fixed.job_id, 5)).state is JobState.COMPLETED
        assert manager.cancel(fixed.job_id, kill=True) is StateChangeCode.INVALID_STATE_TRANSITION
        with pytest.raises(NotFound):
            manager.cancel("NO-SUCH-JOB", kill=False)
        with pytest.raises(NotFound):
            manager.get("NO-SUCH-JOB")

    asyncio.run(scenario())


def test_cancel_before_the_job_started_never_runs_the_work(db: Database, clock: Clock) -> None:
    ran: list[str] = []
    loop = asyncio.new_event_loop()
    try:
        manager = JobManager(db, clock, loop=loop)

        async def work(handle: JobHandle) -> None:
            ran.append(handle.job_id)

        # The loop is not running yet, so the job stays New until it does.
        job = manager.submit(JobType.START_VM, element_id=VM, description="x", work=work, cancellable=True)
        assert manager.get(job.job_id).state is JobState.NEW
        assert manager.cancel(job.job_id, kill=False) is StateChangeCode.COMPLETED
        done = loop.run_until_complete(manager.wait(job.job_id, 5))
    finally:
        loop.close()
    assert done.state is JobState.TERMINATED and done.started_at is None
    assert ran == []


def test_submit_from_other_threads_runs_on_the_daemon_loop(db: Database, clock: Clock) -> None:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        manager = JobManager(db, clock, loop=loop)
        threads_seen: set[int] = set()

        async def work(handle: JobHandle) -> dict[str, str]:
            threads_seen.add(threading.get_ident())
            return {"job": handle.job_id}

        outcomes: list[str] = []
        lock = threading.Lock()

        def client(n: int) -> None:
            element = "SHARED" if n % 2 else f"VM-{n}"
            try:
                job = manager.submit(JobType.START_VM, element_id=element, description=f"c{n}", work=work)
            except InUse:
                with lock:
                    outcomes.append("in-use")
                return
            done = asyncio.run_coroutine_threadsafe(manager.wait(job.job_id, 10), loop).result(15)
            with lock:
                outcomes.append(done.state.name)

        clients = [threading.Thread(target=client, args=(n,)) for n in range(12)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        assert outcomes.count("COMPLETED") >= 7  # every VM-n and at least one SHARED
        assert outcomes.count("COMPLETED") + outcomes.count("in-use") == 12
        assert threads_seen == {runner.ident}
        assert all(job.state is JobState.COMPLETED for job in manager.list())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join()
        loop.close()


def test_submit_without_a_loop_is_unavailable(db: Database, clock: Clock) -> None:
    manager = JobManager(db, clock)

    async def work(handle: JobHandle) -> None:
        return None

    with pytest.raises(Unavailable):
        manager.submit(JobType.START_VM, element_id=VM, description="x", work=work)
    assert manager.list() == []


def test_wait_returns_the_job_as_it_stands_at_timeout(db: Database, clock: Clock) -> None:
    async def scenario() -> None:
        manager = JobManager(db, clock)
        release = asyncio.Event()

        async def work(handle: JobHandle) -> None:
            await release.wait()

        job = manager.submit(JobType.START_VM, element_id=VM, description="x", work=work)
        waited = await manager.wait(job.job_id, 0.05)
        assert waited.state is JobState.RUNNING
        release.set()
        assert (await manager.wait(job.job_id)).state is JobState.COMPLETED

    asyncio.run(scenario())


def test_description_from_catalog_key(db: Database, clock: Clock) -> None:
    async def scenario() -> None:
        manager = JobManager(db, clock)

        async def work(handle: JobHandle) -> None:
            return None

        job = manager.submit(
            JobType.TEST_REPLICATION_CONNECTION,
            element_id="connection:replica:443",
            description="",
            work=work,
            message_id="JobTestReplicationConnection",
            args={"target": "replica:443"},
        )
        assert job.description == "Testing the replication connection to replica:443"
        assert manager.describe(job, "de") == "Replikationsverbindung zu replica:443 wird getestet"
        plain = manager.submit(JobType.START_VM, element_id=VM, description="Starting", work=work)
        assert manager.describe(plain, "de") == "Starting"
        await manager.wait(job.job_id, 5)

    asyncio.run(scenario())


def _interrupted_run(path: Path, clock: Clock) -> tuple[str, str]:
    """A daemon run that dies with two jobs Running (one of a type that can resume)."""
    db = Database.open(path)

    async def run() -> tuple[str, str]:
        manager = JobManager(db, clock)
        started = asyncio.Event()

        async def hang(handle: JobHandle) -> None:
            handle.progress(40)
            started.set()
            await asyncio.Event().wait()

        lost = manager.submit(JobType.INITIATE_FAILOVER, element_id="VM-1", description="x", work=hang)
        await started.wait()
        started.clear()
        resumable = manager.submit(JobType.APPLY_CHANGE_LOG, element_id="VM-2", description="y", work=hang)
        await started.wait()
        return lost.job_id, resumable.job_id

    try:
        return asyncio.run(run())  # asyncio.run cancels the hanging tasks: that is the "crash"
    finally:
        db.close()


def test_recover_after_restart_on_a_reopened_file_db(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "standby.db"
    lost_id, resumable_id = _interrupted_run(path, clock)
    db = Database.open(path)
    assert {j.job_id for j in db.jobs.unfinished()} == {lost_id, resumable_id}
    clock.advance(60)

    async def scenario() -> None:
        manager = JobManager(db, clock)
        resumed_with: list[int] = []

        async def resume(job: object, handle: JobHandle) -> dict[str, str]:
            resumed_with.append(manager.get(handle.job_id).percent_complete)
            return {"resumed": "yes"}

        manager.register_resumer(JobType.APPLY_CHANGE_LOG, resume)
        handled = await asyncio.to_thread(manager.recover_after_restart)  # as the daemon calls it
        assert {j.job_id for j in handled} == {lost_id, resumable_id}
        lost = manager.get(lost_id)
        assert lost.state is JobState.EXCEPTION
        assert lost.error_message_id == "JobInterruptedByRestart"
        assert lost.error_code == 32768
        assert "daemon stopped" in lost.error_description
        assert lost.finished_at == T0 + timedelta(seconds=60)
        resumed = await manager.wait(resumable_id, 5)
        assert resumed.state is JobState.COMPLETED and resumed.result == (("resumed", "yes"),)
        assert resumed_with == [40]
        assert manager.recover_after_restart() == []

    try:
        asyncio.run(scenario())
    finally:
        db.close()


def test_purge_expired_with_the_injected_clock(db: Database, clock: Clock) -> None:
    async def scenario() -> tuple[str, str, str]:
        manager = JobManager(db, clock)

        async def work(handle: JobHandle) -> None:
            return None

        a = manager.submit(JobType.START_VM, element_id="A", description="x", work=work)
        b = manager.submit(
            JobType.START_VM, element_id="B", description="x", work=work, delete_on_completion=False
        )
        c = manager.submit(
            JobType.START_VM,
            element_id="C",
            description="x",
            work=work,
            time_before_removal=timedelta(hours=1),
        )
        for job in (a, b, c):
            await manager.wait(job.job_id, 5)
        return a.job_id, b.job_id, c.job_id

    a, b, c = asyncio.run(scenario())
    manager = JobManager(db, clock)
    assert manager.purge_expired(T0 + timedelta(minutes=4, seconds=59)) == 0
    assert manager.purge_expired(T0 + timedelta(minutes=5)) == 1
    assert {j.job_id for j in manager.list()} == {b, c}
    clock.advance(3600)
    assert manager.purge_expired() == 1  # the clock's now
    assert [j.job_id for j in manager.list()] == [b]
    assert a not in {j.job_id for j in manager.list()}
