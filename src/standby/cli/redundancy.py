"""``standby redundancy list|failover``: redundancy sets (a VM and its replica; hosts that replicate to each
other) and Msvm_RedundancySet.Failover with its codes (0 done, 1 not supported, 2 failed, 3 busy, 4 bad
parameter). A code other than 0 exits 1."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from standby.cli.client import CliError
from standby.cli.output import JsonOption, console, emit
from standby.cli.state import client, wants_json

NAME = "redundancy"
app = typer.Typer(help="Redundancy sets and their failover.", no_args_is_help=True)


@app.command("list")
def list_sets(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every redundancy set with its members, the active one marked."""
    with client(ctx) as daemon:
        sets = daemon.get("/api/v1/redundancy-sets")

    def render(items: list[dict[str, Any]]) -> None:
        table = Table("Set", "Name", "Type", "Status", "Members")
        for rs in items:
            members = ", ".join(f"*{m}" if m == rs["active"] else m for m in rs["members"])
            table.add_row(rs["id"], rs["name"], rs["type_name"], rs["status_name"], members)
        console.print(table)

    emit(wants_json(ctx, as_json), sets, render)


@app.command("failover")
def failover(
    ctx: typer.Context,
    set_id: Annotated[str, typer.Argument(help="Redundancy set id (see: standby redundancy list)")],
    source: Annotated[str, typer.Option("--from", help="The active member")],
    target: Annotated[str, typer.Option("--to", help="The member that takes over")],
    as_json: JsonOption = False,
) -> None:
    """Make --to the active member (VM set: failover of the VM; host set: of every VM between them)."""
    with client(ctx, timeout=660) as daemon:
        answer = daemon.post(f"/api/v1/redundancy-sets/{set_id}/failover",
                             body={"from": source, "to": target})
    emit(wants_json(ctx, as_json), answer,
         lambda a: console.print(f"failover of {set_id}: {a['code']} ({a['name']})"))
    if int(answer["code"]) != 0:
        raise CliError(f"failover of {set_id} answered {answer['code']} ({answer['name']})")
