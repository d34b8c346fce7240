"""``standby group create|add|remove|enable|start|failover|revert|commit|test|show`` (and ``list``,
``suspend``, ``resume``, ``resync``, ``disable``, ``test-stop``, ``destroy``, ``modify``, ``reverse``,
``planned-failover``, ``revert-planned-failover``, ``prepare-reverse``, ``cancel-update-disk-set``): VM groups
(collections) whose members replicate with one consistent cut, failed over all or nothing.

Long operations run as jobs in the daemon; the CLI follows them (``--no-wait`` returns at once) and exits 1
with the job's error — for a group failover that names the member that failed and why.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from standby.cli.failover import follow, json_refusal
from standby.cli.output import JsonOption, console, emit
from standby.cli.state import client, wants_json

NAME = "group"
app = typer.Typer(help="VM groups: replicated with one consistent cut, failed over together.",
                  no_args_is_help=True)

GroupArg = Annotated[str, typer.Argument(help="Group name or id")]
VmArg = Annotated[str, typer.Argument(help="VM name or GUID")]
NoWait = Annotated[bool, typer.Option("--no-wait", help="Return once the job is accepted.")]
PointOpt = Annotated[str | None, typer.Option("--point", help="Collection recovery point id (see: standby "
                                              "group show); the latest when omitted.")]
_CONSISTENCY = {0: "unknown", 1: "application consistent", 2: "crash consistent", 3: "group crash consistent"}


def _group(ref: str) -> str:
    return f"/api/v1/groups/{ref}"


def _action(ctx: typer.Context, ref: str, action: str, body: dict[str, Any] | None, *, what: str,
            no_wait: bool, as_json: bool, method: str = "post") -> None:
    json_out = wants_json(ctx, as_json)
    with json_refusal(json_out), client(ctx, timeout=60) as daemon:
        path = f"{_group(ref)}/{action}"
        job = daemon.put(path, body=body) if method == "put" else daemon.post(path, body=body)
        extra = {k: v for k, v in job.items() if k == "test_group"}
        if not no_wait:
            job = {**follow(daemon, job, what=what, show=not json_out), **extra}
    emit(json_out, job, lambda j: console.print(
        f"{what}: job {j['id']} accepted." if no_wait else f"{what}: done."))


@app.command("list")
def list_groups(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every group of this host."""
    with client(ctx) as daemon:
        groups = daemon.get("/api/v1/groups")

    def render(items: list[dict[str, Any]]) -> None:
        table = Table("Name", "Id", "Mode", "State", "Members", "Points")
        for g in items:
            table.add_row(g["name"], g["id"], g["mode_name"], g["state_name"],
                          ", ".join(m["name"] for m in g["members"]), str(len(g["points"])))
        console.print(table)

    emit(wants_json(ctx, as_json), groups, render)


@app.command("create")
def create(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Name of the new group")], *,
           group_id: Annotated[str | None, typer.Option("--id", help="Its id (made up when omitted)")] = None,
           as_json: JsonOption = False) -> None:
    """DefineCollection: an empty group."""
    with client(ctx) as daemon:
        group = daemon.post("/api/v1/groups", body={"name": name, "id": group_id})
    emit(wants_json(ctx, as_json), group, lambda g: console.print(f"group {g['name']} created ({g['id']})."))


@app.command("destroy")
def destroy(ctx: typer.Context, group: GroupArg) -> None:
    """DestroyCollection (its VMs stay)."""
    with client(ctx) as daemon:
        daemon.delete(_group(group))
    console.print(f"group {group} destroyed.")


@app.command("add")
def add(ctx: typer.Context, group: GroupArg, vm: VmArg, as_json: JsonOption = False) -> None:
    """AddMember."""
    with client(ctx) as daemon:
        result = daemon.put(f"{_group(group)}/members/{vm}")
    emit(wants_json(ctx, as_json), result, lambda g: console.print(f"{vm} added to {g['name']}."))


@app.command("remove")
def remove(ctx: typer.Context, group: GroupArg, vm: VmArg, as_json: JsonOption = False) -> None:
    """RemoveMember."""
    with client(ctx) as daemon:
        result = daemon.delete(f"{_group(group)}/members/{vm}")
    emit(wants_json(ctx, as_json), result, lambda g: console.print(f"{vm} removed from {group}."))


ReplicaHostOpt = Annotated[str, typer.Option("--replica-host", help="The replica (recovery) host")]
ElementNameOpt = Annotated[str | None, typer.Option("--element-name", help="ElementName of the settings "
                                                    "(default: the group's name)")]
PortOpt = Annotated[int, typer.Option("--port", help="Its peer port (0: this daemon's)")]
IntervalOpt = Annotated[int, typer.Option("--interval", help="Seconds: 30, 300, 900 (1-29 extension)")]
HistoryOpt = Annotated[int, typer.Option("--history", help="Recovery history: 0-16, up to 720")]


def _settings(group: str, replica_host: str, *, element_name: str | None, port: int, interval: int,
              history: int) -> dict[str, Any]:
    return {"element_name": element_name or group, "replica_host": replica_host, "port": port,
            "interval": interval, "history": history}


def _settings_verb(command: str, path: str, what: str, doc: str, *, method: str = "post") -> None:
    """A group verb that sends the replication settings (enable, modify, reverse)."""

    def verb(
        ctx: typer.Context, group: GroupArg, replica_host: ReplicaHostOpt, *,
        element_name: ElementNameOpt = None, port: PortOpt = 0, interval: IntervalOpt = 300,
        history: HistoryOpt = 0, no_wait: NoWait = False, as_json: JsonOption = False,
    ) -> None:
        body = _settings(group, replica_host, element_name=element_name, port=port, interval=interval,
                         history=history)
        _action(ctx, group, path, body, what=what, no_wait=no_wait, as_json=as_json, method=method)

    verb.__doc__ = doc
    app.command(command)(verb)


_settings_verb("enable", "replication", "enable replication",
               "CreateReplicationRelationship of the group: every member to the same replica host.")
_settings_verb("modify", "replication", "modify replication",
               "ModifyReplicationSettings of the group (Set-VMReplication): new settings for every member.",
               method="put")
_settings_verb("reverse", "replication/reverse", "reverse replication",
               "ReverseReplicationRelationship of a failed-over group whose failover is committed: every "
               "member replicates back to --replica-host (the old primary).")


@app.command("start")
def start(ctx: typer.Context, group: GroupArg, no_wait: NoWait = False,
        as_json: JsonOption = False) -> None:
    """StartReplication: initial replication of every member, then group-consistent cycles."""
    _action(ctx, group, "start", {"type": 1}, what="initial replication", no_wait=no_wait, as_json=as_json)


@app.command("resync")
def resync(ctx: typer.Context, group: GroupArg, *,
           include_suspended: Annotated[bool, typer.Option("--include-suspended")] = False,
           no_wait: NoWait = False, as_json: JsonOption = False) -> None:
    """Resynchronize the members that need it."""
    _action(ctx, group, "resync", {"include_suspended": include_suspended}, what="resynchronize",
            no_wait=no_wait, as_json=as_json)


@app.command("failover")
def failover(ctx: typer.Context, group: GroupArg, *, point: PointOpt = None,
             force: Annotated[bool, typer.Option("--force", help="Do not ask the primary host whether the "
                                                 "VMs still run")] = False,
             no_wait: NoWait = False, as_json: JsonOption = False) -> None:
    """InitiateFailover of every member to its point of a collection point, all or nothing."""
    _action(ctx, group, "failover", {"point": point, "force": force}, what="group failover",
            no_wait=no_wait, as_json=as_json)


@app.command("test")
def test(ctx: typer.Context, group: GroupArg, *, point: PointOpt = None, no_wait: NoWait = False,
         as_json: JsonOption = False) -> None:
    """TestReplicaCollection: a test VM of every member ('<group> - Test')."""
    _action(ctx, group, "test", {"point": point}, what="test failover", no_wait=no_wait, as_json=as_json)



@app.command("show")
def show(ctx: typer.Context, group: GroupArg, as_json: JsonOption = False) -> None:
    """Members, state, collection recovery points (with the pause of their cut) and statistics."""
    with client(ctx) as daemon:
        data = daemon.get(_group(group))

    def render(g: dict[str, Any]) -> None:
        console.print(f"[bold]{g['name']}[/] ({g['id']}): {g['mode_name']}, {g['state_name']}")
        console.print("members: " + (", ".join(f"{m['name']} ({m['id']})" for m in g["members"]) or "none"))
        stats = g.get("statistics")
        if stats:
            console.print(f"group cycles: {stats['successes']} ok, {stats['misses']} missed, "
                          f"{stats['failures'] + stats['network_failures']} failed; last pause "
                          f"{stats['last_pause_ms']:.1f} ms, longest {stats['max_pause_ms']:.1f} ms")
        table = Table("Point", "Created", "Consistency", "Pause (ms)", "Members")
        for p in g["points"]:
            table.add_row(p["id"], p["created_at"], _CONSISTENCY.get(p["consistency"], str(p["consistency"])),
                          f"{p['pause_ms']:.1f}", str(len(p["members"])))
        console.print(table)

    emit(wants_json(ctx, as_json), data, render)


def _plain_action(command: str, action: str, what: str, doc: str) -> None:
    """A group verb that takes nothing but the group (and --no-wait / --json)."""

    def verb(ctx: typer.Context, group: GroupArg, no_wait: NoWait = False,
             as_json: JsonOption = False) -> None:
        _action(ctx, group, action, None, what=what, no_wait=no_wait, as_json=as_json)

    verb.__doc__ = doc
    app.command(command)(verb)


for _command, _name, _what, _doc in (
    ("suspend", "suspend", "suspend", "SuspendReplication."),
    ("resume", "resume", "resume", "ResumeReplication."),
    ("disable", "remove", "remove replication",
     "RemoveReplicationRelationship of every member (the group stays)."),
    ("revert", "revert", "revert failover", "RevertFailover of every member."),
    ("commit", "commit", "commit failover", "CommitFailover of every member."),
    ("test-stop", "test-stop", "remove test group", "RevertTestReplicaCollection: the test VMs go."),
    ("planned-failover", "planned-failover", "planned failover",
     "InitiatePlannedFailover, on the primary with every member off: the last changes go out and the group "
     "is locked for the replica's failover."),
    ("revert-planned-failover", "revert-planned-failover", "revert planned failover",
     "RevertPlannedFailover, on the primary: undo planned-failover."),
    ("prepare-reverse", "prepare-reverse", "prepare reverse replication",
     "PrepareForReverseReplication, on the failed-over replica before 'standby group reverse'."),
    ("cancel-update-disk-set", "cancel-update-disk-set", "cancel disk set update",
     "CancelUpdateDiskSet (standby never updates a replicating group's disk set: refused)."),
):
    _plain_action(_command, _name, _what, _doc)
