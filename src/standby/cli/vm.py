"""``standby vm create|import|list|show|start|stop|shutdown|kill|pause|resume|reset|delete``.

Power changes run as jobs in the daemon; the CLI waits for the job (``--no-wait`` returns at once) and exits 1
with the job's error when it failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from standby.cli.client import WAIT_CHUNK_SECONDS, CliError
from standby.cli.output import JsonOption, console, emit
from standby.cli.state import client, wants_json

NAME = "vm"
app = typer.Typer(help="Virtual machines: define, import, start, stop, delete.", no_args_is_help=True)

VmArg = Annotated[str, typer.Argument(help="VM name or GUID")]
NoWait = Annotated[bool, typer.Option("--no-wait", help="Return once the job is accepted.")]
# The machine options create and import share.
MemoryOption = Annotated[str, typer.Option(help="Memory, e.g. 256M or 1G.")]
CpusOption = Annotated[int, typer.Option(min=1, max=64, help="Virtual processors.")]
NetworkOption = Annotated[list[str] | None, typer.Option(help="A NIC on user, bridge:<br>, isolated:<name>.")]
KernelOption = Annotated[Path | None, typer.Option(help="Boot this kernel directly.")]
InitrdOption = Annotated[Path | None, typer.Option(help="Initial ramdisk for --kernel.")]
AppendOption = Annotated[str | None, typer.Option(help="Kernel command line for --kernel.")]
_OK = {"Completed", "CompletedWithWarnings"}


def vms_table(vms: list[dict[str, Any]]) -> None:
    """VMs as a table."""
    if not vms:
        console.print("No virtual machines.")
        return
    table = Table("Name", "State", "Memory", "CPUs", "Disks", "ID")
    for vm in vms:
        disks = ", ".join(_size(d["size_bytes"]) for d in vm["disks"])
        table.add_row(
            vm["name"], vm["state_name"], f"{vm['memory_mib']} MiB", str(vm["cpus"]), disks, vm["id"]
        )
    console.print(table)


def vm_detail(vm: dict[str, Any]) -> None:
    """One VM, field by field."""
    table = Table(show_header=False, box=None)
    for key in ("name", "id", "state_name", "memory_mib", "cpus", "kernel", "initrd", "append", "created_at"):
        if vm.get(key) is not None:
            table.add_row(key.replace("_", " "), str(vm[key]))
    for disk in vm["disks"]:
        table.add_row(f"disk {disk['id']}", f"{disk['path']} ({_size(disk['size_bytes'])})")
    for nic in vm["nics"]:
        table.add_row(f"nic {nic['id']}", f"{nic['mac']} on {nic['network']}")
    console.print(table)


def _size(n: int) -> str:
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n}B"


def _define(ctx: typer.Context, body: dict[str, Any], as_json: bool) -> None:
    with client(ctx) as daemon:
        vm = daemon.post("/api/v1/vms", body=body)
    emit(wants_json(ctx, as_json), vm, vm_detail)


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name of the new VM")],
    *,
    memory: MemoryOption = "256M",
    cpus: CpusOption = 1,
    disk: Annotated[
        list[str] | None, typer.Option(help="A new qcow2 disk of this size (repeatable).")
    ] = None,
    network: NetworkOption = None,
    kernel: KernelOption = None,
    initrd: InitrdOption = None,
    append: AppendOption = None,
    as_json: JsonOption = False,
) -> None:
    """Define a VM with new disks (DefineSystem)."""
    body = _body(
        name,
        memory=memory,
        cpus=cpus,
        disks=[{"size": s} for s in disk or []],
        networks=network,
        kernel=kernel,
        initrd=initrd,
        append=append,
    )
    _define(ctx, body, as_json)


@app.command("import")
def import_vm(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name of the VM")],
    *,
    disk: Annotated[list[Path], typer.Option(help="An existing qcow2 image (repeatable).")],
    memory: MemoryOption = "256M",
    cpus: CpusOption = 1,
    network: NetworkOption = None,
    kernel: KernelOption = None,
    initrd: InitrdOption = None,
    append: AppendOption = None,
    as_json: JsonOption = False,
) -> None:
    """Define a VM on existing qcow2 disks (they stay where they are and are kept on delete)."""
    disks = [{"path": str(p.absolute())} for p in disk]
    _define(
        ctx,
        _body(
            name,
            memory=memory,
            cpus=cpus,
            disks=disks,
            networks=network,
            kernel=kernel,
            initrd=initrd,
            append=append,
        ),
        as_json,
    )


def _body(
    name: str,
    *,
    memory: str,
    cpus: int,
    disks: list[dict[str, str]],
    networks: list[str] | None,
    kernel: Path | None,
    initrd: Path | None,
    append: str | None,
) -> dict[str, Any]:
    return {
        "name": name,
        "memory": memory,
        "cpus": cpus,
        "disks": disks,
        "networks": networks or [],
        "kernel": str(kernel.absolute()) if kernel else None,
        "initrd": str(initrd.absolute()) if initrd else None,
        "append": append,
    }


@app.command("list")
def list_vms(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the VMs."""
    with client(ctx) as daemon:
        vms = daemon.get("/api/v1/vms")
    emit(wants_json(ctx, as_json), vms, vms_table)


@app.command("show")
def show(ctx: typer.Context, vm: VmArg, as_json: JsonOption = False) -> None:
    """Show one VM."""
    with client(ctx) as daemon:
        data = daemon.get(f"/api/v1/vms/{vm}")
    emit(wants_json(ctx, as_json), data, vm_detail)


@app.command("delete")
def delete(ctx: typer.Context, vm: VmArg, as_json: JsonOption = False) -> None:
    """Delete a stopped VM and the disks standby created for it (DestroySystem)."""
    with client(ctx, timeout=WAIT_CHUNK_SECONDS + 30) as daemon:
        data = daemon.delete(f"/api/v1/vms/{vm}")
        if "vm" in data:  # a test VM: its test failover ends as a job (103)
            from standby.cli.failover import follow  # cli.failover adds its verbs to this module's app

            follow(daemon, data, what=f"Remove test VM {data['vm']['name']}", show=not as_json)
            data = data["vm"]
    emit(wants_json(ctx, as_json), data, lambda d: console.print(f"Deleted {d['name']} ({d['id']})."))


def _action(
    ctx: typer.Context,
    vm: str,
    action: str,
    *,
    no_wait: bool,
    as_json: bool,
    params: dict[str, Any] | None = None,
) -> None:
    with client(ctx, timeout=WAIT_CHUNK_SECONDS + 30) as daemon:
        job = daemon.post(f"/api/v1/vms/{vm}/{action}", params=params)
        while not no_wait and not job.get("terminal"):
            job = daemon.get(f"/api/v1/jobs/{job['id']}/wait", params={"timeout": WAIT_CHUNK_SECONDS})
        shown = job if no_wait else daemon.get(f"/api/v1/vms/{vm}")
    if not no_wait and job.get("state_name") not in _OK:
        detail = job.get("error_description") or job.get("state_text") or job.get("state_name")
        raise CliError(f"{action} {vm}: {detail}", code=int(job.get("error_code") or 0) or None)
    emit(
        wants_json(ctx, as_json),
        shown,
        lambda d: console.print(
            f"{action}: job {d['id']} accepted." if no_wait else f"{d['name']}: {d['state_name']}"
        ),
    )


@app.command("start")
def start(ctx: typer.Context, vm: VmArg, no_wait: NoWait = False, as_json: JsonOption = False) -> None:
    """Start a VM (RequestStateChange 2)."""
    _action(ctx, vm, "start", no_wait=no_wait, as_json=as_json)


@app.command("stop")
def stop(
    ctx: typer.Context,
    vm: VmArg,
    *,
    force: Annotated[
        bool, typer.Option("--force", help="Power off at once instead of shutting down.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for the guest before a hard stop.")
    ] = 60,
    no_wait: NoWait = False,
    as_json: JsonOption = False,
) -> None:
    """Shut a VM down through ACPI or the guest agent, then hard (4); --force powers off (3)."""
    if force:
        _action(ctx, vm, "stop", no_wait=no_wait, as_json=as_json)
    else:
        _action(ctx, vm, "shutdown", no_wait=no_wait, as_json=as_json, params={"timeout": timeout})


def _power_verb(action: str, doc: str) -> None:
    def command(ctx: typer.Context, vm: VmArg, no_wait: NoWait = False, as_json: JsonOption = False) -> None:
        _action(ctx, vm, action, no_wait=no_wait, as_json=as_json)

    command.__doc__ = doc
    app.command(action)(command)


for _verb, _doc in (("kill", "Kill the VM's QEMU process (SIGKILL)."),
                    ("pause", "Pause a VM (RequestStateChange 9)."),
                    ("resume", "Resume a paused VM."),
                    ("reset", "Reset a VM (RequestStateChange 11).")):
    _power_verb(_verb, _doc)
