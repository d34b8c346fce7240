"""``standby failover start|complete|stop|revert|network`` and ``standby vm points``, as Hyper-V's
Start-VMFailover, Complete-VMFailover, Stop-VMFailover, RevertFailover and
Set-VMNetworkAdapterFailoverConfiguration.

Each operation runs as a job in the daemon; the CLI follows it with a progress bar on stderr (``--no-wait``
returns at once) and exits 1 with the job's error when it failed. With ``--json`` a refusal is also written
to stdout as ``{code, message}``, the body REST answers (``json_refusal``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from standby.cli.client import EXIT_FAILED, CliError, DaemonClient
from standby.cli.output import JsonOption, console, emit, err_console
from standby.cli.state import client, wants_json
from standby.cli.vm import app as vm_app

NAME = "failover"
app = typer.Typer(help="Fail replica VMs over: start (or test), complete, stop; failover IP settings.",
                  no_args_is_help=True)

VmArg = Annotated[str, typer.Argument(help="VM name or GUID")]
NoWait = Annotated[bool, typer.Option("--no-wait", help="Return once the job is accepted.")]
_OK = {"Completed", "CompletedWithWarnings"}
#: How long one wait request may block before the progress bar is redrawn.
_POLL_SECONDS = 1.0


def follow(daemon: DaemonClient, job: dict[str, Any], *, what: str, show: bool) -> dict[str, Any]:
    """Wait for a job, drawing its PercentComplete; the finished job, or ``CliError`` when it failed."""
    # Off a terminal the bar only leaves a stray blank line on stderr, which a caller reads as an error line.
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), console=err_console,
                  transient=True, disable=not show or not err_console.is_terminal) as bar:
        task = bar.add_task(what, total=100, completed=int(job.get("percent_complete") or 0))
        while not job.get("terminal"):
            job = daemon.get(f"/api/v1/jobs/{job['id']}/wait", params={"timeout": _POLL_SECONDS},
                             timeout=_POLL_SECONDS + 30)
            bar.update(task, completed=int(job.get("percent_complete") or 0))
    if job.get("state_name") not in _OK:
        detail = job.get("error_description") or job.get("state_text") or job.get("state_name")
        raise CliError(f"{what}: {detail}", code=int(job.get("error_code") or 0) or None)
    return job


@contextmanager
def json_refusal(json_out: bool) -> Iterator[None]:
    """Under ``--json``, also print a refusal (the daemon's, or a failed job's) as ``{code, message}`` on
    stdout: scripts then read the same Hyper-V code the REST error body carries. The one line on stderr and
    exit code 1 stay."""
    try:
        yield
    except CliError as exc:
        if json_out and exc.exit_code == EXIT_FAILED:
            emit(True, {"code": exc.code, "message": exc.message}, lambda _: None)
        raise


def _run(ctx: typer.Context, path: str, body: dict[str, Any] | None, *, what: str, no_wait: bool,
         as_json: bool) -> None:
    json_out = wants_json(ctx, as_json)
    with json_refusal(json_out), client(ctx, timeout=60) as daemon:
        job = daemon.post(path, body=body)
        if not no_wait:
            extra = {k: v for k, v in job.items() if k == "test_vm_id"}
            job = {**follow(daemon, job, what=what, show=not json_out), **extra}
    emit(json_out, job, lambda j: console.print(_summary(j, what, no_wait)))


def _summary(job: dict[str, Any], what: str, no_wait: bool) -> str:
    if no_wait:
        return f"{what}: job {job['id']} accepted."
    result = job.get("result") or {}
    details = ", ".join(f"{k} {v}" for k, v in result.items())
    return f"{what}: done ({details})." if details else f"{what}: done."


@app.command("start")
def start(
    ctx: typer.Context,
    vm: VmArg,
    *,
    point: Annotated[str | None, typer.Option("--point", help="Recovery point id (see: standby vm points); "
                                              "the latest when omitted.")] = None,
    test: Annotated[bool, typer.Option("--test", help="Create a test VM instead (TestReplicaSystem).")]
    = False,
    force: Annotated[bool, typer.Option("--force", help="Do not ask the primary host whether the VM still "
                                        "runs (unplanned failover only).")] = False,
    prepare: Annotated[bool, typer.Option("--prepare", help="On the primary (VM off): send the last changes "
                                          "and lock it for a planned failover.")] = False,
    no_wait: NoWait = False,
    as_json: JsonOption = False,
) -> None:
    """Fail a replica VM over to a recovery point (InitiateFailover), test it (--test), or prepare a
    planned failover on the primary (--prepare)."""
    if test and force:
        raise CliError("--force applies to a failover, not to --test", 2)
    if prepare:  # Start-VMFailover -Prepare
        if test or force or point:
            raise CliError("--prepare takes no --point, --test or --force", 2)
        _run(ctx, f"/api/v1/vms/{vm}/failover/prepare", None, what=f"preparing the planned failover of {vm}",
             no_wait=no_wait, as_json=as_json)
        return
    what = f"test failover of {vm}" if test else f"failover of {vm}"
    _run(ctx, f"/api/v1/vms/{vm}/failover", {"point": point, "test": test, "force": force}, what=what,
         no_wait=no_wait, as_json=as_json)


@app.command("complete")
def complete(ctx: typer.Context, vm: VmArg, no_wait: NoWait = False, as_json: JsonOption = False) -> None:
    """Make the failover permanent (CommitFailover): other recovery points are removed."""
    _run(ctx, f"/api/v1/vms/{vm}/failover/complete", None, what=f"completing the failover of {vm}",
         no_wait=no_wait, as_json=as_json)


@app.command("stop")
def stop(ctx: typer.Context, vm: VmArg, no_wait: NoWait = False, as_json: JsonOption = False) -> None:
    """Remove the test VM, or revert the failover (RevertFailover; the VM is powered off first)."""
    _run(ctx, f"/api/v1/vms/{vm}/failover/stop", None, what=f"stopping the failover of {vm}",
         no_wait=no_wait, as_json=as_json)


@app.command("revert")
def revert(ctx: typer.Context, vm: VmArg, no_wait: NoWait = False, as_json: JsonOption = False) -> None:
    """Undo a failover, or a planned failover prepared on the primary (RevertFailover); unlike ``stop`` it
    never removes a test VM."""
    _run(ctx, f"/api/v1/vms/{vm}/failover/revert", None, what=f"reverting the failover of {vm}",
         no_wait=no_wait, as_json=as_json)


@app.command("network")
def network(
    ctx: typer.Context,
    vm: VmArg,
    *,
    nic: Annotated[str | None, typer.Option("--nic", help="NIC id (default: the first).")] = None,
    address: Annotated[list[str] | None, typer.Option("--address", help="Static address with prefix, "
                                                      "e.g. 192.0.2.10/24 (repeatable).")] = None,
    gateway: Annotated[list[str] | None, typer.Option("--gateway", help="Default gateway (repeatable).")]
    = None,
    dns: Annotated[list[str] | None, typer.Option("--dns", help="DNS server (repeatable).")] = None,
    dhcp: Annotated[bool, typer.Option("--dhcp", help="Use DHCP for IPv4 after a failover.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show the failover IP settings, or set them for one NIC (Set-VMNetworkAdapterFailoverConfiguration)."""
    with client(ctx) as daemon:
        if address or gateway or dns or dhcp:
            body = [{"nic": nic, "dhcp": dhcp, "addresses": address or [], "gateways": gateway or [],
                     "dns": dns or []}]
            data = daemon.put(f"/api/v1/vms/{vm}/failover/network", body=body)
        else:
            data = daemon.get(f"/api/v1/vms/{vm}/failover/network")
    emit(wants_json(ctx, as_json), data, _network_table)


def _network_table(items: list[dict[str, Any]]) -> None:
    if not items:
        console.print("No failover IP settings.")
        return
    table = Table("NIC", "DHCP", "Addresses", "Gateways", "DNS")
    for item in items:
        table.add_row(item["nic"], "yes" if item["dhcp"] else "no", ", ".join(item["addresses"]),
                      ", ".join(item["gateways"]), ", ".join(item["dns"]))
    console.print(table)


@vm_app.command("points")
def points(ctx: typer.Context, vm: VmArg, as_json: JsonOption = False) -> None:
    """List a replica VM's recovery points, oldest first."""
    with client(ctx) as daemon:
        data = daemon.get(f"/api/v1/vms/{vm}/points")
    emit(wants_json(ctx, as_json), data, _points_table)


def _points_table(items: list[dict[str, Any]]) -> None:
    if not items:
        console.print("No recovery points.")
        return
    table = Table("Sequence", "Created", "Kind", "Held")
    table.add_column("ID", overflow="fold")  # a point id is typed back: never cut it short
    for item in items:
        table.add_row(str(item["sequence"]), str(item["created_at"]).replace("T", " ")[:19], item["kind"],
                      "yes" if item["held"] else "", item["id"])
    console.print(table)
