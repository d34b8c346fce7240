"""``/api/v1/jobs``: list, get, cancel and wait for jobs (Msvm_ConcreteJob in REST form)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import JSONResponse

from standby import i18n
from standby.api.deps import LanguageDep, ServicesDep
from standby.domain.entities import Job
from standby.domain.enums import JobState, StateChangeCode
from standby.domain.errors import InvalidState, NotSupported
from standby.engine.service import Outcome

if TYPE_CHECKING:
    from standby.api.deps import Services

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])

#: Longest a single ``wait`` request may block; clients loop for longer waits.
MAX_WAIT_SECONDS = 3600.0


def job_url(job_id: str) -> str:
    """The REST address of a job (what 202 answers point to)."""
    return f"/api/v1/jobs/{job_id}"


def job_json(job: Job, language: str, now: datetime, description: str | None = None) -> dict[str, object]:
    """A job as JSON, texts in ``language`` (``description``: already translated, else the stored one)."""
    description = job.description if description is None else description
    return {
        "id": job.job_id,
        "url": job_url(job.job_id),
        "type": int(job.job_type),
        "type_name": i18n.job_type_text(job.job_type, language),
        "state": int(job.state),
        "state_name": _state_name(job.state),
        "state_text": i18n.job_state_text(job.state, language),
        "terminal": job.state.is_terminal,
        "description": description,
        "element_id": job.element_id,
        "percent_complete": job.percent_complete,
        "error_code": job.error_code,
        "error_description": _error_description(job, language),
        "error_summary": job.error_summary,
        "cancellable": job.cancellable,
        "owner": job.owner,
        "submitted_at": _iso(job.submitted_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "elapsed_seconds": job.elapsed(now).total_seconds(),
        "result": dict(job.result),
    }


def _state_name(state: JobState) -> str:
    return "".join(part.capitalize() for part in state.name.split("_"))


def _error_description(job: Job, language: str) -> str:
    if not job.error_message_id:
        return job.error_description
    return i18n.error_text(job.error_message_id, language, job.error_description, code=job.error_code or None,
                           **dict(job.error_args))


def _render(services: Services, job: Job, language: str) -> dict[str, object]:
    return job_json(job, language, services.clock(), services.jobs.describe(job, language))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@router.get("", summary="List jobs")
def list_jobs(services: ServicesDep, language: LanguageDep) -> list[dict[str, object]]:
    """Every job the daemon still keeps, newest first."""
    now = services.clock()
    jobs = sorted(services.jobs.list(), key=lambda j: j.submitted_at, reverse=True)
    return [job_json(job, language, now, services.jobs.describe(job, language)) for job in jobs]


@router.get("/{job_id}", summary="Get one job")
def get_job(job_id: str, services: ServicesDep, language: LanguageDep) -> dict[str, object]:
    """One job; 404 when unknown."""
    return _render(services, services.jobs.get(job_id), language)


@router.post("/{job_id}/cancel", summary="Cancel a running job")
def cancel_job(
    job_id: str,
    services: ServicesDep,
    language: LanguageDep,
    kill: Annotated[bool, Query(description="kill (5) instead of terminate (4)")] = False,
) -> JSONResponse:
    """Ask a running job to stop; 409 when it already ended, 501 when it cannot be cancelled."""
    code = services.jobs.cancel(job_id, kill)
    if code == StateChangeCode.INVALID_STATE_TRANSITION:
        raise InvalidState(f"job {job_id} has already finished", message_id="JobAlreadyFinished", job=job_id)
    if code == StateChangeCode.NOT_SUPPORTED:
        raise NotSupported(f"job {job_id} cannot be cancelled", message_id="JobNotCancellable", job=job_id)
    if code not in (StateChangeCode.COMPLETED, StateChangeCode.TRANSITION_STARTED):
        raise InvalidState(f"job {job_id} could not be cancelled (code {int(code)})",
                           message_id="JobCancelFailed", job=job_id, code=str(int(code)))
    job = services.jobs.get(job_id)
    body = {"code": int(code), "job": _render(services, job, language)}
    return JSONResponse(body, status_code=200 if job.state.is_terminal else 202)


@router.get("/{job_id}/wait", summary="Wait for a job to finish")
async def wait_job(
    job_id: str,
    services: ServicesDep,
    language: LanguageDep,
    timeout: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS, description="seconds")] = 30.0,
) -> dict[str, object]:
    """The job once it is terminal, or as it stands when ``timeout`` runs out (check ``terminal``)."""
    services.jobs.get(job_id)  # 404 before waiting
    job = await services.jobs.wait(job_id, timeout)
    return _render(services, job, language)


def respond(services: Services, outcome: Outcome, language: str, done: dict[str, Any] | None = None,
            **extra: Any) -> JSONResponse:
    """An engine entry's outcome in REST form: 202 with the job and its URL, or 200 with ``done``."""
    if outcome.job is None:
        return JSONResponse({**(done or {"done": True}), **extra})
    body: dict[str, Any] = job_json(outcome.job, language, services.clock(),
                                    services.jobs.describe(outcome.job, language))
    body.update(extra)
    return JSONResponse(body, status_code=202, headers={"location": job_url(outcome.job.job_id)})
