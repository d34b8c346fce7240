"""``standby replica-server show|set`` and ``standby replica-server auth list|add|set|remove`` — this host
as a replica server, named after Get/Set-VMReplicationServer and
Get/New/Set/Remove-VMReplicationAuthorizationEntry (REST ``/api/v1/replica-server``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from standby.cli.failover import json_refusal
from standby.cli.output import JsonOption, console, emit
from standby.cli.state import client, wants_json

NAME = "replica-server"
PATH = "/api/v1/replica-server"
app = typer.Typer(help="This host as a replica server: accept inbound replication, and from which primary "
                  "hosts (authorization entries).", no_args_is_help=True)
auth = typer.Typer(help="Authorization entries: which primary hosts may replicate here, into which folder.",
                   no_args_is_help=True)
app.add_typer(auth, name="auth")

HostArg = Annotated[str, typer.Argument(help="Primary host name, or a pattern: *.domain or *")]


def _server_view(data: dict[str, Any]) -> None:
    state = "accepts inbound replication" if data["enabled"] else "does not accept inbound replication"
    console.print(f"This host {state} (authentication: {data['authentication']}, HTTP port "
                  f"{data['http_port']}, HTTPS port {data['https_port']}).")
    _entries_view(data["authorization"])


def _entries_view(entries: list[dict[str, str]]) -> None:
    if not entries:
        console.print("No authorization entries: no primary host may replicate here.")
        return
    table = Table("Primary host", "Storage", "Trust group")
    for entry in entries:
        table.add_row(entry["host"], entry["storage"], entry["trust_group"] or "(its own)")
    console.print(table)


@app.command("show")
def show(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The replica-server settings and the authorization entries (Get-VMReplicationServer)."""
    with client(ctx) as daemon:
        data = daemon.get(PATH)
    emit(wants_json(ctx, as_json), data, _server_view)


@app.command("set")
def set_server(
    ctx: typer.Context,
    *,
    enable: Annotated[bool | None, typer.Option(
        "--enable/--disable", help="Accept inbound replication (RecoveryServerEnabled).")] = None,
    authentication: Annotated[str | None, typer.Option(
        "--auth", help="kerberos, certificate or both (AllowedAuthenticationType).")] = None,
    https_port: Annotated[int | None, typer.Option("--https-port", help="HttpsPort (certificate).")] = None,
    http_port: Annotated[int | None, typer.Option("--http-port", help="HttpPort (Kerberos).")] = None,
    thumbprint: Annotated[str | None, typer.Option("--thumbprint", help="CertificateThumbprint.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Change the replica-server settings given; the others stay (Set-VMReplicationServer)."""
    if authentication is not None and authentication not in ("kerberos", "certificate", "both"):
        raise typer.BadParameter(f"{authentication!r}: use kerberos, certificate or both",
                                 param_hint="--auth")
    body = {key: value for key, value in (("enabled", enable), ("authentication", authentication),
                                          ("https_port", https_port), ("http_port", http_port),
                                          ("certificate_thumbprint", thumbprint)) if value is not None}
    if not body:
        raise typer.BadParameter("give at least one setting to change", param_hint="options")
    json_out = wants_json(ctx, as_json)
    with json_refusal(json_out), client(ctx) as daemon:
        data = daemon.put(PATH, body=body)
    emit(json_out, data, _server_view)


@auth.command("list")
def list_entries(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every authorization entry (Get-VMReplicationAuthorizationEntry)."""
    with client(ctx) as daemon:
        data = daemon.get(PATH + "/authorization")
    emit(wants_json(ctx, as_json), data, _entries_view)


def _entry_line(entry: dict[str, str], verb: str) -> None:
    group = entry["trust_group"] or "of its own"
    console.print(f"{entry['host']} {verb}: replicas go to {entry['storage']} (trust group {group}).")


@auth.command("add")
def add(
    ctx: typer.Context,
    host: HostArg,
    *,
    storage: Annotated[str, typer.Option("--storage", help="ReplicaStorageLocation: where its replica VMs "
                                         "go.")],
    trust_group: Annotated[str, typer.Option(
        "--trust-group", help="Hosts whose entries name the same group may act on each other's replicas; "
        "without one the entry shares no group.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Admit a primary host (New-VMReplicationAuthorizationEntry)."""
    json_out = wants_json(ctx, as_json)
    with json_refusal(json_out), client(ctx) as daemon:
        data = daemon.post(PATH + "/authorization",
                           body={"host": host, "storage": storage, "trust_group": trust_group})
    emit(json_out, data, lambda d: _entry_line(d, "admitted"))


@auth.command("set")
def set_entry(
    ctx: typer.Context,
    host: HostArg,
    *,
    storage: Annotated[str | None, typer.Option("--storage", help="A new ReplicaStorageLocation.")] = None,
    trust_group: Annotated[str | None, typer.Option("--trust-group", help="A new trust group (\"\" for "
                                                    "none).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Change an entry's storage or trust group (Set-VMReplicationAuthorizationEntry)."""
    body = {key: value for key, value in (("storage", storage), ("trust_group", trust_group))
            if value is not None}
    if not body:
        raise typer.BadParameter("give --storage or --trust-group", param_hint="options")
    json_out = wants_json(ctx, as_json)
    with json_refusal(json_out), client(ctx) as daemon:
        data = daemon.put(f"{PATH}/authorization/{host}", body=body)
    emit(json_out, data, lambda d: _entry_line(d, "changed"))


@auth.command("remove")
def remove(ctx: typer.Context, host: HostArg, as_json: JsonOption = False) -> None:
    """Stop admitting a primary host (Remove-VMReplicationAuthorizationEntry); its replicas stay."""
    json_out = wants_json(ctx, as_json)
    with json_refusal(json_out), client(ctx) as daemon:
        daemon.delete(f"{PATH}/authorization/{host}")
    emit(json_out, {"host": host, "removed": True}, lambda d: console.print(f"{d['host']} removed."))
