"""``standby replication enable|start|import|suspend|resume|cancel|state|remove|resync|measure|show|reset|
reverse|continue|failback|authorize|test-connection`` — named after Enable-VMReplication,
Start-/Import-VMInitialReplication, Suspend-/Resume-/Remove-VMReplication, Measure-VMReplication,
Get-VMReplication, Set-VMReplicationAuthorizationEntry and Test-VMReplicationConnection. Long operations run
as jobs in the daemon, followed with a progress bar. ``--relationship extended`` picks a replica VM's
extended relationship where REST takes ``?relationship=``."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from standby.cli.client import CliError
from standby.cli.failover import follow, json_refusal
from standby.cli.output import JsonOption, console, emit
from standby.cli.state import client, wants_json

NAME = "replication"
app = typer.Typer(help="Replicate VMs to another host: enable, start, suspend, resume, resync, measure, "
                  "remove, reverse; test a connection, authorize a primary.", no_args_is_help=True)

VmArg = Annotated[str, typer.Argument(help="VM name or GUID")]
NoWait = Annotated[bool, typer.Option("--no-wait", help="Return once the job is accepted.")]
AtOption = Annotated[str | None, typer.Option("--at", help="UTC start time (ISO 8601), at most 7 days "
                                                           "ahead.")]


class Relationship(StrEnum):
    """Which of a VM's relationships: a replica VM that replicates on has an extended one."""

    PRIMARY = "primary"
    EXTENDED = "extended"


RelationshipOpt = Annotated[Relationship, typer.Option(
    "--relationship", case_sensitive=False, help="primary, or extended (a replica's onward replication).")]


def _path(vm: str, tail: str = "", relationship: Relationship = Relationship.PRIMARY) -> str:
    # The query rides in the path: the client's delete() takes no params, and a primary call stays the
    # exact request it always was.
    query = "" if relationship is Relationship.PRIMARY else f"?relationship={relationship.value}"
    return f"/api/v1/vms/{vm}/replication{tail}{query}"


def _at(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--at {text!r} is not an ISO 8601 time (e.g. 2025-01-31T22:00)",
                       exit_code=2) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def _job(ctx: typer.Context, method: str, path: str, body: dict[str, Any] | None, *, what: str,
         no_wait: bool, as_json: bool) -> None:
    json_out = wants_json(ctx, as_json)
    with json_refusal(json_out), client(ctx, timeout=60) as daemon:
        job = daemon.delete(path) if method == "delete" else getattr(daemon, method)(path, body=body)
        if not no_wait:
            job = follow(daemon, job, what=what, show=not json_out)
    result = job.get("result") or {}
    details = ", ".join(f"{k} {v}" for k, v in result.items())
    emit(json_out, job, lambda j: console.print(f"{what}: {'accepted' if no_wait else 'done'}"
                                                + (f" ({details})." if details else ".")))


@app.command("enable")
def enable(
    ctx: typer.Context,
    vm: VmArg,
    *,
    replica: Annotated[str, typer.Option("--replica", help="Replica host[:port] (its peer listener).")],
    interval: Annotated[int, typer.Option("--interval", help="Seconds: 30, 300, 900, or 1-29.")] = 300,
    history: Annotated[int, typer.Option("--history", help="Recovery history in hours (0-720).")] = 0,
    app_consistent_hours: Annotated[int, typer.Option("--app-consistent-hours")] = 0,
    no_compression: Annotated[bool, typer.Option("--no-compression")] = False,
    disk: Annotated[list[str] | None, typer.Option("--disk", help="Replicate only this disk (repeat).")]
    = None,
    bandwidth: Annotated[list[str] | None, typer.Option(
        "--bandwidth", help='Limit per time window, e.g. "08:00-18:00=50M" (bytes/s; repeat).')] = None,
    auto_resync: Annotated[bool, typer.Option("--auto-resync")] = False,
    no_wait: NoWait = False,
    as_json: JsonOption = False,
) -> None:
    """Enable replication of a VM to a replica host (CreateReplicationRelationship)."""
    host, _, port = replica.rpartition(":") if replica.count(":") == 1 else (replica, "", "")
    body: dict[str, Any] = {
        "replica": host or replica, "interval": interval, "history": history,
        "app_consistent_hours": app_consistent_hours, "compression": not no_compression,
        "disks": list(disk or []), "bandwidth": list(bandwidth or []), "auto_resync": auto_resync,
    }
    if port:
        if not port.isdigit():
            raise CliError(f"--replica {replica!r}: the port must be a number", exit_code=2)
        body["port"] = int(port)
    _job(ctx, "post", _path(vm), body, what=f"enable replication of {vm}", no_wait=no_wait, as_json=as_json)


@app.command("start")
def start(
    ctx: typer.Context,
    vm: VmArg,
    *,
    export: Annotated[str | None, typer.Option("--export", help="Export the initial copy to this folder.")]
    = None,
    seeded: Annotated[bool, typer.Option("--seeded", help="The replica already holds a copy: compare "
                                         "block hashes and send only differences.")] = False,
    at: AtOption = None,
    no_wait: NoWait = False,
    as_json: JsonOption = False,
) -> None:
    """Start initial replication (StartReplication): network, --export DIR, or --seeded."""
    if export and seeded:
        raise CliError("--export and --seeded exclude each other", exit_code=2)
    kind = "export" if export else "seeded" if seeded else "network"
    body = {"type": kind, "export_dir": export, "at": _at(at)}
    _job(ctx, "post", _path(vm, "/start"), body, what=f"initial replication of {vm}", no_wait=no_wait,
         as_json=as_json)


def _state_verb(action: str, doc: str) -> None:
    def command(ctx: typer.Context, vm: VmArg, no_wait: NoWait = False, as_json: JsonOption = False) -> None:
        _job(ctx, "post", _path(vm, f"/{action}"), None, what=f"{action} replication of {vm}",
             no_wait=no_wait, as_json=as_json)

    command.__doc__ = doc
    app.command(action)(command)


_state_verb("suspend", "Suspend replication (RequestReplicationStateChange 7).")
_state_verb("resume", "Resume replication (RequestReplicationStateChange 3).")
_state_verb("cancel", "Cancel initial replication (1) or a resynchronization (9), whichever runs.")
_state_verb("cancel-initial", "Cancel initial replication (RequestReplicationStateChange 1).")
_state_verb("cancel-resync", "Cancel a resynchronization (RequestReplicationStateChange 9).")


@app.command("state")
def state(
    ctx: typer.Context,
    vm: VmArg,
    requested: Annotated[int, typer.Argument(help="1 cancel initial replication, 2 become a replica, "
                                             "3 resume, 4 prepare for failover, 7 suspend, 9 cancel "
                                             "resynchronization.")],
    *,
    relationship: RelationshipOpt = Relationship.PRIMARY,
    no_wait: NoWait = False,
    as_json: JsonOption = False,
) -> None:
    """Any replication state change by its Hyper-V number (RequestReplicationStateChangeEx)."""
    body = {"requested": requested, "relationship": relationship.value}
    _job(ctx, "post", _path(vm, "/state"), body, what=f"replication state {requested} of {vm}",
         no_wait=no_wait, as_json=as_json)


@app.command("import")
def import_initial(
    ctx: typer.Context,
    vm: VmArg,
    location: Annotated[str, typer.Argument(
        help="The folder the primary exported to (standby replication start --export), as the daemon's "
             "host sees it.")],
    no_wait: NoWait = False,
    as_json: JsonOption = False,
) -> None:
    """On the replica: apply an exported initial replication (Import-VMInitialReplication)."""
    _job(ctx, "post", _path(vm, "/import"), {"location": location},
         what=f"importing the initial replication of {vm}", no_wait=no_wait, as_json=as_json)


@app.command("resync")
def resync(ctx: typer.Context, vm: VmArg, at: AtOption = None, no_wait: NoWait = False,
           as_json: JsonOption = False) -> None:
    """Resynchronize: compare block hashes with the replica and send only differing blocks."""
    _job(ctx, "post", _path(vm, "/resync"), {"at": _at(at)}, what=f"resynchronize {vm}", no_wait=no_wait,
         as_json=as_json)


@app.command("remove")
def remove(ctx: typer.Context, vm: VmArg, relationship: RelationshipOpt = Relationship.PRIMARY,
           no_wait: NoWait = False, as_json: JsonOption = False) -> None:
    """Remove replication on both hosts (the replica VM stays)."""
    _job(ctx, "delete", _path(vm, relationship=relationship), None, what=f"remove replication of {vm}",
         no_wait=no_wait, as_json=as_json)


@app.command("show")
def show(ctx: typer.Context, vm: VmArg, relationship: RelationshipOpt = Relationship.PRIMARY,
         as_json: JsonOption = False) -> None:
    """The VM's relationship: state, health, replica, interval, last replication."""
    json_out = wants_json(ctx, as_json)
    with json_refusal(json_out), client(ctx) as daemon:
        data = daemon.get(_path(vm, relationship=relationship))
    emit(json_out, data, _show_table)


def _show_table(data: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key in ("name", "vm_id", "state_name", "health", "replica", "port", "interval", "history",
                "compression", "disks", "bandwidth", "sequence", "last_replication_time"):
        value = data.get(key)
        table.add_row(key.replace("_", " "), ", ".join(map(str, value)) if isinstance(value, list)
                      else "" if value is None else str(value))
    console.print(table)


@app.command("measure")
def measure(ctx: typer.Context, vm: VmArg, relationship: RelationshipOpt = Relationship.PRIMARY,
            as_json: JsonOption = False) -> None:
    """Replication statistics of the current monitoring window (Measure-VMReplication)."""
    json_out = wants_json(ctx, as_json)
    with json_refusal(json_out), client(ctx) as daemon:
        data = daemon.get(_path(vm, "/statistics", relationship))
    emit(json_out, data, _measure_table)


def _measure_table(data: dict[str, Any]) -> None:
    table = Table("statistic", "value")
    for key, value in data.items():
        table.add_row(key.replace("_", " "), _cell(key, value))
    console.print(table)


def _cell(key: str, value: Any) -> str:
    if key == "issues":
        return "; ".join(issue["message"] for issue in value) or "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return "-" if value is None else str(value)


@app.command("reset")
def reset(ctx: typer.Context, vm: VmArg, relationship: RelationshipOpt = Relationship.PRIMARY,
          as_json: JsonOption = False) -> None:
    """Start a new statistics window (Reset-VMReplicationStatistics)."""
    json_out = wants_json(ctx, as_json)
    with json_refusal(json_out), client(ctx) as daemon:
        data = daemon.post(_path(vm, "/statistics/reset", relationship))
    emit(json_out, data, lambda _: console.print("statistics reset."))


# -- reverse and extended replication -------------------------------------------------------------------


@app.command("reverse")
def reverse(
    ctx: typer.Context,
    vm: VmArg,
    *,
    replica: Annotated[str | None, typer.Option(
        "--replica", help="New replica host[:port]; the old primary when omitted.")] = None,
    interval: Annotated[int | None, typer.Option("--interval", help="Seconds (default: unchanged).")] = None,
    history: Annotated[int | None, typer.Option("--history", help="Recovery history in hours.")] = None,
    no_wait: NoWait = False,
    as_json: JsonOption = False,
) -> None:
    """Reverse replication of a failed-over VM (ReverseReplicationRelationship): it becomes the primary."""
    body: dict[str, Any] = {"interval": interval, "history": history}
    if replica:
        host, _, port = replica.rpartition(":") if replica.count(":") == 1 else (replica, "", "")
        body["replica"] = host or replica
        if port:
            body["port"] = _port(port)
    _job(ctx, "post", _path(vm, "/reverse"), body, what=f"reversing the replication of {vm}",
         no_wait=no_wait, as_json=as_json)


@app.command("continue")
def continue_extended(ctx: typer.Context, vm: VmArg, no_wait: NoWait = False,
                      as_json: JsonOption = False) -> None:
    """After a committed failover, keep the extended replication going from here
    (ChangeReplicationModeToPrimary, Resume-VMReplication -Continue)."""
    _job(ctx, "post", _path(vm, "/continue"), None, what=f"continuing the extended replication of {vm}",
         no_wait=no_wait, as_json=as_json)


@app.command("failback")
def failback(ctx: typer.Context, vm: VmArg, no_wait: NoWait = False, as_json: JsonOption = False) -> None:
    """InitiateFailback, for external replication providers: the daemon refuses it. Fail back with
    'standby replication reverse' on the failed-over VM instead."""
    _job(ctx, "post", _path(vm, "/failback"), None, what=f"failback of {vm}", no_wait=no_wait,
         as_json=as_json)


@app.command("authorize")
def authorize(
    ctx: typer.Context,
    vm: VmArg,
    *,
    host: Annotated[str, typer.Option("--host", help="The primary host the entry admits (may use *).")],
    storage: Annotated[str, typer.Option("--storage", help="ReplicaStorageLocation: the folder its replica "
                                         "VMs go to (the daemon refuses none).")] = "",
    trust_group: Annotated[str, typer.Option(
        "--trust-group", help="Hosts whose entries name the same group may act on each other's replicas; "
        "without one the entry shares no group.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Bind a replica VM to the authorization entry of its primary host, made when missing
    (SetAuthorizationEntry)."""
    json_out = wants_json(ctx, as_json)
    body = {"host": host, "storage": storage, "trust_group": trust_group}
    with json_refusal(json_out), client(ctx) as daemon:
        data = daemon.put(_path(vm, "/authorization"), body=body)
    emit(json_out, data, lambda d: console.print(
        f"{vm} authorized for {d['host']} (trust group {d['trust_group'] or 'of its own'}"
        + (f", storage {d['storage']})." if d.get("storage") else ").")))


@app.command("test-connection")
def test_connection(
    ctx: typer.Context,
    host: Annotated[str, typer.Argument(help="The recovery (replica) host's name or address.")],
    *,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Its peer (mutual TLS) port.")]
    = 8443,
    thumbprint: Annotated[str, typer.Option("--thumbprint", help="Certificate thumbprint to expect.")] = "",
    no_wait: NoWait = False,
    as_json: JsonOption = False,
) -> None:
    """Check that a replica host answers and accepts this host (Test-VMReplicationConnection)."""
    body = {"recovery_connection_point": host, "recovery_server_port": port,
            "certificate_thumbprint": thumbprint}
    _job(ctx, "post", "/api/v1/replication/test-connection", body, what=f"connection test to {host}:{port}",
         no_wait=no_wait, as_json=as_json)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise CliError(f"{text!r} is not a port number", exit_code=2)
    return int(text)
