"""``standby jobs list|show|wait|cancel``."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from standby.cli.client import WAIT_CHUNK_SECONDS, CliError, text
from standby.cli.output import JsonOption, emit, job_detail, jobs_table
from standby.cli.state import cli_state, client, wants_json

NAME = "jobs"
app = typer.Typer(help="Long-running operations (Msvm_ConcreteJob).", no_args_is_help=True)

_OK_STATES = {"Completed", "CompletedWithWarnings"}


@app.command("list")
def list_jobs(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the jobs the daemon keeps, newest first."""
    with client(ctx) as daemon:
        jobs = daemon.get("/api/v1/jobs")
    emit(wants_json(ctx, as_json), jobs, lambda data: jobs_table(data, cli_state(ctx).language))


@app.command("show")
def show_job(ctx: typer.Context, job_id: Annotated[str, typer.Argument(help="Job ID")],
             as_json: JsonOption = False) -> None:
    """Show one job."""
    with client(ctx) as daemon:
        job = daemon.get(f"/api/v1/jobs/{job_id}")
    emit(wants_json(ctx, as_json), job, lambda data: job_detail(data, cli_state(ctx).language))


@app.command("wait")
def wait_job(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="Job ID")],
    timeout: Annotated[float, typer.Option(min=0, help="Give up after this many seconds (0: no limit).")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Wait until a job finishes; exit 1 when it failed, was cancelled or the timeout ran out."""
    language = cli_state(ctx).language
    deadline = time.monotonic() + timeout if timeout else None
    with client(ctx, timeout=WAIT_CHUNK_SECONDS + 30) as daemon:
        job = _wait(daemon, job_id, deadline)
    emit(wants_json(ctx, as_json), job, lambda data: job_detail(data, language))
    if not job.get("terminal"):
        raise CliError(text("JobWaitTimedOut", language, f"job {job_id} is still running after {timeout:g} s",
                            job=job_id, seconds=f"{timeout:g}"))
    if job.get("state_name") not in _OK_STATES:
        raise CliError(_failure_line(job, language), code=int(job.get("error_code") or 0) or None)


def _wait(daemon: Any, job_id: str, deadline: float | None) -> Any:
    while True:
        chunk = WAIT_CHUNK_SECONDS
        if deadline is not None:
            chunk = min(chunk, max(deadline - time.monotonic(), 0.0))
        job = daemon.get(f"/api/v1/jobs/{job_id}/wait", params={"timeout": chunk})
        if job.get("terminal") or (deadline is not None and time.monotonic() >= deadline):
            return job


def _failure_line(job: dict[str, Any], language: str) -> str:
    state = str(job.get("state_text") or job.get("state_name"))
    detail = job.get("error_description") or ""
    line = f"{job.get('id')}: {state}"
    return f"{line}: {detail}" if detail else line


@app.command("cancel")
def cancel_job(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="Job ID")],
    kill: Annotated[bool, typer.Option("--kill", help="Kill (5) instead of terminate (4).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Ask a running job to stop."""
    with client(ctx) as daemon:
        answer = daemon.post(f"/api/v1/jobs/{job_id}/cancel", params={"kill": str(kill).lower()})
    emit(wants_json(ctx, as_json), answer, lambda data: job_detail(data["job"], cli_state(ctx).language))
