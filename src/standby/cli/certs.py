"""``standby certs``: a site CA and host certificates for host-to-host mutual TLS (local files only).

    standby certs init [--dir D] [--name SITE]
    standby certs issue HOSTNAME [--ip 127.0.0.1] --ca-dir D --out DIR
    standby certs show [FILE]

Nothing here talks to the daemon: point ``[tls] ca_file`` and ``[listeners.https] cert_file/key_file`` at
the files and restart it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from standby.cli.output import JsonOption, console, emit
from standby.cli.state import cli_state, wants_json
from standby.peer import pki

NAME = "certs"
app = typer.Typer(help="Site CA and host certificates for replication between hosts.", no_args_is_help=True)


@app.command("init")
def init(
    ctx: typer.Context,
    directory: Annotated[Path | None, typer.Option("--dir", help="Where to write ca.crt and ca.key "
                                                   "[default <data-dir>/ca].")] = None,
    name: Annotated[str, typer.Option("--name", help="Site name in the CA's subject.")] = "standby",
    as_json: JsonOption = False,
) -> None:
    """Create a site CA (refuses to overwrite an existing one)."""
    chosen = directory or cli_state(ctx).target.data_dir / "ca"
    cert_path, key_path = pki.init_ca(chosen, name)
    summary = pki.summarize(pki.load_certificates(cert_path)[0])
    data = {"ca_cert": str(cert_path), "ca_key": str(key_path), **summary.as_dict()}
    emit(wants_json(ctx, as_json), data, lambda d: _created("CA", d))


@app.command("issue")
def issue(  # noqa: PLR0917 - one parameter per option
    ctx: typer.Context,
    hostname: Annotated[str, typer.Argument(help="The host's name (its first DNS SAN and CN).")],
    ca_dir: Annotated[Path, typer.Option("--ca-dir", help="Folder of ca.crt and ca.key.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write host.crt, host.key and ca.crt to.")],
    ip: Annotated[list[str] | None, typer.Option("--ip", help="An IP address SAN (repeatable).")] = None,
    dns: Annotated[list[str] | None, typer.Option("--dns", help="Another DNS SAN (repeatable).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Issue a host certificate (client and server auth) signed by the site CA."""
    cert_path, key_path = pki.issue_host(ca_dir, hostname, out, ips=ip or (), extra_names=dns or ())
    summary = pki.summarize(pki.load_certificates(cert_path)[0])
    data = {"cert": str(cert_path), "key": str(key_path), "ca_cert": str(out / pki.CA_CERT),
            **summary.as_dict()}
    emit(wants_json(ctx, as_json), data, lambda d: _created("host certificate", d))


@app.command("show")
def show(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Argument(help="A PEM file [default: the daemon's host "
                                                "certificate <data-dir>/tls/host.crt].")] = None,
    as_json: JsonOption = False,
) -> None:
    """Subject, SANs, SHA-1 thumbprint (as Hyper-V shows it) and expiry of each certificate in a file."""
    chosen = file or cli_state(ctx).target.data_dir / "tls" / "host.crt"
    summaries = [pki.summarize(cert).as_dict() for cert in pki.load_certificates(chosen)]
    emit(wants_json(ctx, as_json), summaries, _table)


def _created(what: str, data: dict[str, Any]) -> None:
    console.print(f"created {what}: {data.get('cert') or data.get('ca_cert')}")
    console.print(f"  thumbprint {data['thumbprint']}, valid until {data['not_after']}")


def _table(summaries: list[dict[str, Any]]) -> None:
    table = Table(show_header=False, box=None)
    for position, item in enumerate(summaries):
        if position:
            table.add_row("", "")
        table.add_row("Subject", item["subject"])
        table.add_row("Issuer", item["issuer"])
        sans = [*item["dns_names"], *item["ip_addresses"]]
        table.add_row("SANs", ", ".join(sans) or "-")
        table.add_row("Thumbprint", item["thumbprint"])
        table.add_row("Valid", f"{item['not_before']} .. {item['not_after']}")
        usage = [name for name, flag in (("CA", item["is_ca"]), ("server", item["server_auth"]),
                                          ("client", item["client_auth"])) if flag]
        table.add_row("Usage", ", ".join(usage) or "-")
    console.print(table)
