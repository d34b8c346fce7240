"""``JobManager``: long operations as persisted ``Msvm_ConcreteJob`` rows (hyperv-api §7, ARCHITECTURE
"Jobs").

A job is written as New, then its ``work`` coroutine runs on the daemon's event loop: Running → Completed,
Exception (with the error's return code and catalog id), or Terminated / Killed when cancelled. Every state
change is persisted, so any thread (CIM workers, REST, CLI) can read a job from the store, and a restarted
daemon finds what was interrupted (``recover_after_restart``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from standby import i18n
from standby.domain.clock import Clock
from standby.domain.entities import DEFAULT_TIME_BEFORE_REMOVAL, Job
from standby.domain.enums import JobState, JobType, ReturnCode, StateChangeCode
from standby.domain.errors import InUse, NotFound, StandbyError, Unavailable
from standby.store.errors import StaleWrite
from standby.store.port import Store

log = logging.getLogger("standby.jobs")

Result = Mapping[str, Any] | None
Work = Callable[["JobHandle"], Awaitable[Result]]
#: Continues an interrupted job of one JobType after a restart; raising ends the job as Exception.
Resumer = Callable[[Job, "JobHandle"], Awaitable[Result]]

#: How often ``wait`` re-reads a job it cannot be notified about (one finished by another thread).
_POLL_SECONDS = 0.2
_CAS_RETRIES = 8


class JobHandle:
    """What a job's ``work`` gets: its id, progress reporting and cancellation checks."""

    def __init__(self, manager: JobManager, job_id: str) -> None:
        self._manager = manager
        self.job_id = job_id

    def progress(self, percent: int) -> None:
        """Record ``PercentComplete`` (clamped to 0-100)."""
        self._manager._progress(self.job_id, percent)

    @property
    def cancel_requested(self) -> bool:
        """Whether a client asked to terminate or kill this job."""
        return self._manager._cancel_requested(self.job_id) is not None

    def raise_if_cancelled(self) -> None:
        """Raise ``asyncio.CancelledError`` when a client cancelled the job; call it between steps."""
        if self.cancel_requested:
            raise asyncio.CancelledError(f"job {self.job_id} was cancelled")


class JobManager:
    """Runs and persists jobs; thread-safe (``submit``/``cancel``/``get`` may be called from any thread)."""

    def __init__(self, db: Store, clock: Clock, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._db = db
        self._clock = clock
        self._loop = loop
        if self._loop is None:
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
        self._lock = threading.RLock()
        self._resumers: dict[JobType, Resumer] = {}
        self._owned: set[str] = set()  # submitted or resumed here and not finished yet
        self._requested: dict[str, JobState] = {}  # job id → TERMINATED / KILLED asked for
        self._tasks: dict[str, asyncio.Task[None]] = {}  # touched on the loop thread only
        self._done: dict[str, asyncio.Event] = {}  # touched on the loop thread only

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run jobs on ``loop`` from now on (the daemon's loop)."""
        self._loop = loop

    # -- submitting ---------------------------------------------------------------------------------------

    def submit(
        self,
        job_type: JobType,
        *,
        element_id: str,
        description: str,
        work: Work,
        cancellable: bool = False,
        message_id: str | None = None,
        args: Mapping[str, object] | None = None,
        owner: str = "",
        delete_on_completion: bool = True,
        time_before_removal: timedelta = DEFAULT_TIME_BEFORE_REMOVAL,
    ) -> Job:
        """Persist a New job and start ``work(handle)`` on the event loop; returns the New job.

        ``message_id``/``args`` are the catalog key of the description (for other languages). Raises
        ``InUse`` (32774) when a job is still New/Running on ``element_id``, ``Unavailable`` without a loop.
        """
        loop = self._require_loop()
        now = self._clock()
        job = Job(
            job_id=str(uuid.uuid4()).upper(),
            job_type=JobType(job_type),
            state=JobState.NEW,
            submitted_at=now,
            description=description or _english(message_id, args),
            element_id=element_id,
            cancellable=cancellable,
            delete_on_completion=delete_on_completion,
            time_before_removal=time_before_removal,
            state_changed_at=now,
            owner=owner,
        )
        with self._lock, self._db.transaction():
            active = self._db.jobs.active_on(element_id)
            if active is not None:
                raise InUse(
                    f"job {active.job_id} is still running on {element_id}",
                    message_id="JobBusyOnElement",
                    job=active.job_id,
                    element=element_id,
                )
            self._db.jobs.insert(job)
            if message_id:
                self._db.jobs.set_description_key(job.job_id, message_id, args or {})
            self._owned.add(job.job_id)
        self._schedule(loop, job, work)
        fields = {"job": job.job_id, "type": int(job_type), "element": element_id}
        log.info("job submitted", extra={"fields": fields})
        return job

    def register_resumer(self, job_type: JobType, resumer: Resumer) -> None:
        """Let interrupted jobs of ``job_type`` continue after a restart instead of failing."""
        self._resumers[JobType(job_type)] = resumer

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
        if self._loop is None or self._loop.is_closed():
            raise Unavailable("the job manager has no running event loop", message_id="JobManagerStopped")
        return self._loop

    def _schedule(self, loop: asyncio.AbstractEventLoop, job: Job, work: Work) -> None:
        try:
            if _running_loop() is loop:
                self._start(job.job_id, work)
            else:
                loop.call_soon_threadsafe(self._start, job.job_id, work)
        except RuntimeError as exc:  # the loop closed between the check and now
            error = Unavailable("the job manager has no running event loop", message_id="JobManagerStopped")
            self._fail(job.job_id, error)
            raise error from exc

    def _start(self, job_id: str, work: Work) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._run(job_id, work), name=f"job-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda done: self._forget(job_id, done))

    def _forget(self, job_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.pop(job_id, None)
        with self._lock:
            self._owned.discard(job_id)
            requested = self._requested.pop(job_id, None)
        if task.cancelled() and requested is not None:
            # Cancelled before its first step, so _run never saw it: record the end here.
            with contextlib.suppress(StandbyError):
                self._end_cancelled(job_id, requested)

    # -- running ------------------------------------------------------------------------------------------

    async def _run(self, job_id: str, work: Work) -> None:
        try:
            await self._run_work(job_id, work)
        except StandbyError:
            # Recording the outcome failed (e.g. the store closed at shutdown); restart recovery settles it.
            log.exception("could not record the end of a job", extra={"fields": {"job": job_id}})

    async def _run_work(self, job_id: str, work: Work) -> None:
        handle = JobHandle(self, job_id)
        try:
            if self._cancel_requested(job_id) is not None:
                raise asyncio.CancelledError
            if self._mark_running(job_id) is None:
                return  # it ended before it started (killed while New)
            result = _result_pairs(await work(handle))
        except asyncio.CancelledError:
            requested = self._cancel_requested(job_id)
            if requested is None:
                raise  # the loop is shutting down: leave the job for recover_after_restart
            self._end_cancelled(job_id, requested)
        except StandbyError as exc:
            fields = {"job": job_id, "code": int(exc.code), "error": str(exc)}
            log.warning("job failed", extra={"fields": fields})
            self._fail(job_id, exc)
        except Exception as exc:
            log.exception("job crashed", extra={"fields": {"job": job_id}})
            text = f"{type(exc).__name__}: {exc}"
            error = StandbyError(f"unexpected error: {text}", message_id="UnexpectedError", error=text)
            self._fail(job_id, error)
        else:
            self._complete(job_id, result)

    def _mark_running(self, job_id: str) -> Job | None:
        def change(job: Job, now: datetime) -> Job:
            return dataclasses.replace(job, state=JobState.RUNNING, started_at=now, state_changed_at=now)

        return self._transition(job_id, change)

    def _complete(self, job_id: str, result: tuple[tuple[str, str], ...]) -> None:
        def change(job: Job, now: datetime) -> Job:
            return self._ended(job, now, JobState.COMPLETED, percent_complete=100, result=result)

        self._transition(job_id, change)

    def _fail(self, job_id: str, error: StandbyError) -> None:
        def change(job: Job, now: datetime) -> Job:
            job_type = i18n.job_type_text(job.job_type, "en")
            summary = i18n.translate("JobFailedSummary", "en", job_type=job_type)
            return self._ended(
                job,
                now,
                JobState.EXCEPTION,
                error_code=int(error.code),
                error_message_id=error.message_id,
                error_args=tuple((str(k), str(v)) for k, v in error.args_map.items()),
                error_description=str(error),
                error_summary=summary,
            )

        self._transition(job_id, change)

    def _end_cancelled(self, job_id: str, state: JobState) -> None:
        message_id = "JobKilled" if state is JobState.KILLED else "JobTerminated"

        def change(job: Job, now: datetime) -> Job:
            text = i18n.translate(message_id, "en")
            return self._ended(
                job,
                now,
                state,
                error_code=int(ReturnCode.FAILED),
                error_message_id=message_id,
                error_description=text,
                error_summary=text,
            )

        self._transition(job_id, change)

    @staticmethod
    def _ended(job: Job, now: datetime, state: JobState, **fields: Any) -> Job:
        return dataclasses.replace(job, state=state, state_changed_at=now, finished_at=now, **fields)

    def _transition(self, job_id: str, change: Callable[[Job, datetime], Job]) -> Job | None:
        """Apply ``change`` to a non-terminal job with compare-and-swap; None when it already ended."""
        with self._lock:
            for _ in range(_CAS_RETRIES):
                job = self._db.jobs.find(job_id)
                if job is None or job.state.is_terminal:
                    return None
                new = change(job, self._clock())
                try:
                    stored = self._db.jobs.update(new)
                except StaleWrite:
                    continue  # another process wrote the row; re-read and re-apply
                if stored.state.is_terminal:
                    self._notify(job_id)
                    log.info("job ended", extra={"fields": {"job": job_id, "state": stored.state.name}})
                return stored
        raise InUse(f"job {job_id} keeps changing under us", message_id="StaleWrite", kind="Job", key=job_id)

    def _notify(self, job_id: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if _running_loop() is loop:
            self._set_done(job_id)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._set_done, job_id)

    def _set_done(self, job_id: str) -> None:
        event = self._done.pop(job_id, None)
        if event is not None:
            event.set()

    def _progress(self, job_id: str, percent: int) -> None:
        value = max(0, min(100, int(percent)))

        def change(job: Job, now: datetime) -> Job:
            return dataclasses.replace(job, percent_complete=value)

        current = self._db.jobs.find(job_id)
        if current is not None and current.percent_complete != value:
            self._transition(job_id, change)

    def _cancel_requested(self, job_id: str) -> JobState | None:
        with self._lock:
            return self._requested.get(job_id)

    # -- queries and control ------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job; raises ``NotFound`` (32773)."""
        return self._db.jobs.get(job_id)

    def list(self, *, element_id: str | None = None) -> list[Job]:
        """Every kept job (optionally of one element), newest first."""
        return self._db.jobs.list(element_id=element_id)

    def describe(self, job: Job, language: str) -> str:
        """The job's description in ``language`` (its catalog key when submitted with one)."""
        message_id, args = self._db.jobs.description_key(job.job_id)
        if message_id is None:
            return job.description
        return i18n.translate(message_id, language, **args)

    def cancel(self, job_id: str, kill: bool) -> StateChangeCode:
        """Terminate (``kill=False``, RequestedState 4) or kill (5) a job.

        Returns 0 when the job was cancellable and still New/Running, 4097 when it already ended, 1 when it
        cannot be cancelled. Terminate lets the work unwind (``finally`` blocks run) and then records
        Terminated; kill records Killed at once. Raises ``NotFound`` for an unknown id.
        """
        target = JobState.KILLED if kill else JobState.TERMINATED
        with self._lock:
            job = self.get(job_id)
            if job.state.is_terminal:
                return StateChangeCode.INVALID_STATE_TRANSITION
            if not job.cancellable:
                return StateChangeCode.NOT_SUPPORTED
            if self._requested.get(job_id) is not JobState.KILLED:
                self._requested[job_id] = target
            owned = job_id in self._owned
        log.info("job cancel requested", extra={"fields": {"job": job_id, "kill": kill}})
        if kill or not owned:
            # Killed jobs end at once; a job no task of ours runs has nobody else to record its end.
            self._end_cancelled(job_id, target)
        if not owned:
            with self._lock:
                self._requested.pop(job_id, None)
        if owned and self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._cancel_task, job_id)
        return StateChangeCode.COMPLETED

    def _cancel_task(self, job_id: str) -> None:
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once it ended, or as it stands when ``timeout`` seconds passed (check ``state``)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + max(timeout, 0.0)
        job = self.get(job_id)
        while not job.state.is_terminal:
            remaining = _POLL_SECONDS if deadline is None else min(deadline - loop.time(), _POLL_SECONDS)
            if remaining <= 0:
                return job
            if loop is self._loop:
                event = self._done.setdefault(job_id, asyncio.Event())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), remaining)
            else:
                await asyncio.sleep(remaining)
            job = self.get(job_id)
        return job

    # -- start-up and housekeeping ------------------------------------------------------------------------

    def recover_after_restart(self) -> builtins.list[Job]:
        """End every New/Running job left by a previous run as Exception (``JobInterruptedByRestart``).

        Jobs whose JobType has a resumer continue instead (Running again, the resumer as their work).
        Returns the jobs as they are afterwards. Safe to call from a worker thread.
        """
        handled: builtins.list[Job] = []
        for job in self._db.jobs.unfinished():
            with self._lock:
                if job.job_id in self._owned:
                    continue
            resumer = self._resumers.get(job.job_type)
            if resumer is not None and self._loop is not None and not self._loop.is_closed():
                handled.append(self._resume(job, resumer))
                continue
            text = i18n.translate("JobInterruptedByRestart", "en")
            self._fail(job.job_id, StandbyError(text, message_id="JobInterruptedByRestart"))
            handled.append(self.get(job.job_id))
            log.warning("job interrupted by restart", extra={"fields": {"job": job.job_id}})
        return handled

    def _resume(self, job: Job, resumer: Resumer) -> Job:
        assert self._loop is not None
        with self._lock:
            self._owned.add(job.job_id)

        async def work(handle: JobHandle) -> Result:
            return await resumer(job, handle)

        loop = self._loop
        if _running_loop() is loop:
            self._start(job.job_id, work)
        else:
            loop.call_soon_threadsafe(self._start, job.job_id, work)
        log.info("job resumed after restart", extra={"fields": {"job": job.job_id}})
        return job

    def purge_expired(self, now: datetime | None = None) -> int:
        """Delete finished jobs with ``delete_on_completion`` older than their ``time_before_removal``."""
        removed = 0
        for job in self._db.jobs.removable(now if now is not None else self._clock()):
            with contextlib.suppress(NotFound):
                self._db.jobs.delete(job.job_id)
                removed += 1
        return removed


def _result_pairs(result: object) -> tuple[tuple[str, str], ...]:
    if result is None:
        return ()
    if not isinstance(result, Mapping):
        raise TypeError(f"a job's work must return a mapping of results or None, not {type(result).__name__}")
    return tuple((str(key), str(value)) for key, value in result.items())


def _english(message_id: str | None, args: Mapping[str, object] | None) -> str:
    return i18n.translate(message_id, "en", **(args or {})) if message_id else ""


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
