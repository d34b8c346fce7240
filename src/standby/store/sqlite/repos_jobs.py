"""``db.jobs``: persisted ``Msvm_ConcreteJob`` rows (the JobManager is the only writer)."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from datetime import datetime

from standby.domain.entities import Job
from standby.domain.enums import JobState, JobType
from standby.store import codec
from standby.store.sqlite.repository import Repository, Row

_TERMINAL = tuple(int(state) for state in JobState if state.is_terminal)


class JobRepository(Repository[Job]):
    """Jobs, newest first; ``active_on`` finds the non-terminal job of an element."""

    kind = "Job"
    table = "jobs"
    key_columns = ("job_id",)
    order_by = "submitted_at DESC, job_id"
    versioned = True

    def list(
        self, *, element_id: str | None = None, states: Iterable[JobState] | None = None
    ) -> builtins.list[Job]:
        """Jobs, optionally of one element and/or in the given states, newest first."""
        clauses, params = ["1"], builtins.list[object]()
        if element_id is not None:
            clauses.append("element_id = ?")
            params.append(element_id)
        if states is not None:
            wanted = [int(s) for s in states]
            clauses.append(f"state IN ({', '.join('?' for _ in wanted)})" if wanted else "0")
            params.extend(wanted)
        return self._load_many(self._select(" AND ".join(clauses), params))

    def active_on(self, element_id: str) -> Job | None:
        """The job still New/Running (any non-terminal state) on ``element_id``, if any."""
        marks = ", ".join("?" for _ in _TERMINAL)
        rows = self._select(f"element_id = ? AND state NOT IN ({marks})", (element_id, *_TERMINAL), limit=1)
        return self._from_row(rows[0]) if rows else None

    def unfinished(self) -> builtins.list[Job]:
        """Every job not in a terminal state (what a restart finds half done)."""
        marks = ", ".join("?" for _ in _TERMINAL)
        return self._load_many(self._select(f"state NOT IN ({marks})", _TERMINAL))

    def removable(self, now: datetime) -> builtins.list[Job]:
        """Finished jobs with ``delete_on_completion`` whose ``time_before_removal`` has passed at ``now``."""
        marks = ", ".join("?" for _ in _TERMINAL)
        rows = self._select(
            f"state IN ({marks}) AND delete_on_completion = 1 AND finished_at IS NOT NULL", _TERMINAL
        )
        return [job for job in self._load_many(rows) if _expired(job, now)]

    def set_description_key(self, job_id: str, message_id: str | None, args: Mapping[str, object]) -> None:
        """Store the catalog id and arguments of the job's description."""
        self._conn.execute(
            "UPDATE jobs SET description_message_id = ?, description_args = ? WHERE job_id = ?",
            (message_id, codec.args_out(args), job_id),
        )

    def description_key(self, job_id: str) -> tuple[str | None, dict[str, object]]:
        """The catalog id and arguments of the job's description (``(None, {})`` when none was given)."""
        rows = self._conn.query(
            "SELECT description_message_id AS m, description_args AS a FROM jobs WHERE job_id = ?", (job_id,)
        )
        if not rows:
            raise self._not_found((job_id,))
        return rows[0]["m"], codec.args_in(rows[0]["a"])

    def _key(self, entity: Job) -> tuple[object, ...]:
        return (entity.job_id,)

    def _to_row(self, entity: Job) -> dict[str, object]:
        return {
            "job_id": entity.job_id,
            "job_type": int(entity.job_type),
            "state": int(entity.state),
            "submitted_at": codec.dt_out(entity.submitted_at),
            "description": entity.description,
            "element_id": entity.element_id,
            "percent_complete": entity.percent_complete,
            "error_code": entity.error_code,
            "error_message_id": entity.error_message_id,
            "error_args": codec.pairs_out(entity.error_args),
            "error_description": entity.error_description,
            "error_summary": entity.error_summary,
            "cancellable": int(entity.cancellable),
            "delete_on_completion": int(entity.delete_on_completion),
            "time_before_removal_s": codec.td_out(entity.time_before_removal),
            "started_at": codec.dt_out(entity.started_at),
            "state_changed_at": codec.dt_out(entity.state_changed_at),
            "finished_at": codec.dt_out(entity.finished_at),
            "owner": entity.owner,
            "result": codec.pairs_out(entity.result),
        }

    def _from_row(self, row: Row) -> Job:
        return Job(
            job_id=row["job_id"],
            job_type=JobType(row["job_type"]),
            state=JobState(row["state"]),
            submitted_at=codec.dt_in_required(row["submitted_at"]),
            description=row["description"],
            element_id=row["element_id"],
            percent_complete=row["percent_complete"],
            error_code=row["error_code"],
            error_message_id=row["error_message_id"],
            error_args=codec.pairs_in(row["error_args"]),
            error_description=row["error_description"],
            error_summary=row["error_summary"],
            cancellable=bool(row["cancellable"]),
            delete_on_completion=bool(row["delete_on_completion"]),
            time_before_removal=codec.td_in(row["time_before_removal_s"]),
            started_at=codec.dt_in(row["started_at"]),
            state_changed_at=codec.dt_in(row["state_changed_at"]),
            finished_at=codec.dt_in(row["finished_at"]),
            owner=row["owner"],
            result=codec.pairs_in(row["result"]),
            version=row["version"],
        )


def _expired(job: Job, now: datetime) -> bool:
    return job.finished_at is not None and job.finished_at + job.time_before_removal <= now
