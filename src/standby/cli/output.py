"""CLI output: Rich tables for people, ``--json`` for scripts, one-line errors on stderr.

Sub-apps (``cli/vm.py``, ``cli/guest.py``) use the same pieces: take ``as_json: JsonOption = False`` on
every verb, call ``emit(ctx, data, render)`` and let ``CliError`` carry failures.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from standby.cli.client import text

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

#: Labels the CLI prints, by catalog id, with their English text (the catalog has the German).
LABELS: dict[str, str] = {
    "CliJobId": "ID",
    "CliJobType": "Type",
    "CliJobState": "State",
    "CliJobProgress": "Progress",
    "CliJobElement": "Element",
    "CliJobSubmitted": "Submitted",
    "CliJobStarted": "Started",
    "CliJobFinished": "Finished",
    "CliJobElapsed": "Elapsed",
    "CliJobDescription": "Description",
    "CliJobError": "Error",
    "CliJobResult": "Result",
    "CliJobCancellable": "Cancellable",
    "CliNoJobs": "No jobs.",
    "CliVersion": "Version",
    "CliHost": "Host",
    "CliUptime": "Uptime",
    "CliVms": "Virtual machines",
    "CliRelationships": "Replication relationships",
    "CliRunningJobs": "Running jobs",
    "CliDataDir": "Data directory",
    "CliYes": "yes",
    "CliNo": "no",
}


def label(key: str, language: str) -> str:
    """A label in ``language`` (English when the catalog lacks it)."""
    return text(key, language, LABELS.get(key, key))


def emit(as_json: bool, data: Any, render: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON, or hand it to ``render`` for people."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    else:
        render(data)


def print_error(message: str) -> None:
    """One line on stderr, prefixed with the program name."""
    err_console.print(f"standby: {message}", markup=False)


def jobs_table(jobs: Sequence[Mapping[str, Any]], language: str) -> None:
    """The ``jobs list`` table."""
    if not jobs:
        console.print(label("CliNoJobs", language))
        return
    table = Table(box=None, header_style="bold")
    columns = ("CliJobId", "CliJobType", "CliJobState", "CliJobProgress", "CliJobElement", "CliJobSubmitted")
    for key in columns:
        table.add_column(label(key, language))
    for job in jobs:
        table.add_row(
            str(job["id"]), str(job.get("type_name") or job.get("type")), _state(job, language),
            f"{job.get('percent_complete', 0)}%", str(job.get("element_id") or ""),
            _short_time(job.get("submitted_at")),
        )
    console.print(table)


def job_detail(job: Mapping[str, Any], language: str) -> None:
    """``jobs show``: one job as label/value lines."""
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, str]] = [
        ("CliJobId", str(job["id"])),
        ("CliJobType", f"{job.get('type_name')} ({job.get('type')})"),
        ("CliJobState", f"{_state(job, language)} ({job.get('state')})"),
        ("CliJobProgress", f"{job.get('percent_complete', 0)}%"),
        ("CliJobDescription", str(job.get("description") or "")),
        ("CliJobElement", str(job.get("element_id") or "")),
        ("CliJobCancellable", label("CliYes" if job.get("cancellable") else "CliNo", language)),
        ("CliJobSubmitted", _short_time(job.get("submitted_at"))),
        ("CliJobStarted", _short_time(job.get("started_at"))),
        ("CliJobFinished", _short_time(job.get("finished_at"))),
        ("CliJobElapsed", f"{float(job.get('elapsed_seconds') or 0):.1f} s"),
    ]
    if job.get("error_code"):
        rows.append(("CliJobError", f"{job.get('error_description')} ({job.get('error_code')})"))
    for key, value in (job.get("result") or {}).items():
        rows.append(("CliJobResult", f"{key} = {value}"))
    for key, value in rows:
        table.add_row(label(key, language), value)
    console.print(table)


def status_view(status: Mapping[str, Any], language: str) -> None:
    """``standby status``."""
    counts = status.get("counts", {})
    host = status.get("host", {})
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row(label("CliVersion", language), str(status.get("version")))
    table.add_row(label("CliHost", language), f"{host.get('name')} ({host.get('fqdn')})")
    table.add_row(label("CliDataDir", language), str(status.get("data_dir")))
    table.add_row(label("CliUptime", language), _duration(float(status.get("uptime_seconds") or 0)))
    table.add_row(label("CliVms", language), str(counts.get("vms", 0)))
    table.add_row(label("CliRelationships", language), str(counts.get("relationships", 0)))
    table.add_row(label("CliRunningJobs", language), str(counts.get("jobs_running", 0)))
    console.print(table)


def _state(job: Mapping[str, Any], language: str) -> str:
    # The daemon already answers in the CLI's language (Accept-Language).
    return str(job.get("state_text") or job.get("state_name") or job.get("state"))


def _short_time(value: object) -> str:
    if not value:
        return "-"
    return str(value).replace("T", " ")[:19]


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    prefix = f"{days}d " if days else ""
    return f"{prefix}{hours:02d}:{minutes:02d}:{secs:02d}"
