"""The VM life-cycle through a real daemon: pywbem (CIM-XML over loopback) and the CLI, real QEMU (TCG).

A pywbem client defines a VM from an embedded VSSD and resource settings, starts it, sees the guest write,
shuts it down, the verifier confirms the records, and destroys it. The CLI does the same with create/start/
kill/delete. SIGKILL from outside is noticed (EnabledState 3 and a crash event), bad input gets its code and
leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pywbem = pytest.importorskip("pywbem")

from standby.daemon.testing import DaemonProcess  # noqa: E402
from standby.guest import console  # noqa: E402
from standby.guest.build import GuestImage, build_guest  # noqa: E402
from standby.guest.verify import verify_image  # noqa: E402

VIRT = "root/virtualization/v2"
TIMEOUT = 180.0


@pytest.fixture(scope="module")
def guest() -> GuestImage:
    return build_guest()


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    folder = Path(tempfile.mkdtemp(prefix="sbvm-", dir="/tmp"))
    process = DaemonProcess.start(folder / "d", users={"admin": "pw"})
    try:
        if "CIM-XML mounted" not in process.log():
            pytest.skip("the CIM object model is not available in this checkout")
        yield process
    finally:
        process.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def conn(daemon: DaemonProcess) -> Any:
    return pywbem.WBEMConnection(
        f"http://127.0.0.1:{daemon.http_port}", ("admin", "pw"), default_namespace=VIRT, timeout=120
    )


def vsms(conn: Any) -> Any:
    [path] = conn.EnumerateInstanceNames("Msvm_VirtualSystemManagementService")
    return path


def rasd(classname: str, **props: Any) -> Any:
    return pywbem.CIMInstance(classname, properties=props)


def define(conn: Any, name: str, resources: list[Any], **settings: Any) -> tuple[int, dict[str, Any]]:
    vssd = pywbem.CIMInstance("Msvm_VirtualSystemSettingData", properties={"ElementName": name, **settings})
    rv, out = conn.InvokeMethod("DefineSystem", vsms(conn), SystemSettings=vssd, ResourceSettings=resources)
    return int(rv), dict(out)


def wait_job(conn: Any, job_path: Any) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        job = conn.GetInstance(job_path)
        if int(job["JobState"]) in (7, 8, 9, 10, 32768):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_path} did not finish")


def system(conn: Any, vm_id: str) -> Any:
    return conn.GetInstance(
        pywbem.CIMInstanceName(
            "Msvm_ComputerSystem",
            keybindings={"CreationClassName": "Msvm_ComputerSystem", "Name": vm_id},
            namespace=VIRT,
        )
    )


def state_change(conn: Any, vm_path: Any, requested: int) -> tuple[int, Any]:
    rv, out = conn.InvokeMethod("RequestStateChange", vm_path, RequestedState=pywbem.Uint16(requested))
    return int(rv), out.get("Job")


def wait_async(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_pywbem_defines_starts_stops_and_destroys_a_vm(
    conn: Any, daemon: DaemonProcess, guest: GuestImage
) -> None:
    resources = [
        rasd(
            "Msvm_MemorySettingData",
            ResourceType=pywbem.Uint16(4),
            VirtualQuantity=pywbem.Uint64(192),
            AllocationUnits="byte*2^20",
        ),
        rasd("Msvm_ProcessorSettingData", ResourceType=pywbem.Uint16(3), VirtualQuantity=pywbem.Uint64(1)),
        rasd(
            "Msvm_StorageAllocationSettingData",
            ResourceType=pywbem.Uint16(31),
            VirtualQuantity=pywbem.Uint64(64 << 20),
            AllocationUnits="byte",
        ),
        rasd(
            "Msvm_SyntheticEthernetPortSettingData", ResourceType=pywbem.Uint16(10), Connection=["isolated:t"]
        ),
    ]
    rv, out = define(
        conn,
        "cimvm",
        resources,
        KernelPath=str(guest.kernel),
        InitrdPath=str(guest.initrd),
        KernelCommandLine=guest.append("standby.writer=raw:/dev/vda:rate=100"),
    )
    assert rv == 0
    vm_path = out["ResultingSystem"]
    vm_id = vm_path["Name"]
    cs = system(conn, vm_id)
    assert (cs["ElementName"], int(cs["EnabledState"])) == ("cimvm", 3)
    [vssd] = [
        i
        for i in conn.EnumerateInstances("Msvm_VirtualSystemSettingData")
        if i["VirtualSystemIdentifier"] == vm_id
    ]
    assert vssd["VirtualSystemType"] == "Microsoft:Hyper-V:System:Realized"
    [disk] = [
        i
        for i in conn.EnumerateInstances("Msvm_StorageAllocationSettingData")
        if i["InstanceID"].startswith(f"Microsoft:{vm_id}\\")
    ]
    assert int(disk["VirtualQuantity"]) == 64 << 20
    image = Path(disk["HostResource"][0])
    assert image.is_file()
    [mem] = [i for i in conn.EnumerateInstances("Msvm_MemorySettingData") if vm_id in i["InstanceID"]]
    assert int(mem["VirtualQuantity"]) == 192

    # name clash: 32773, nothing new stored
    assert define(conn, "cimvm", resources[:1])[0] == 32773
    # a running VM cannot be destroyed; starting it twice is an invalid transition
    rv, job = state_change(conn, vm_path, 2)
    assert rv == 4096
    assert int(wait_job(conn, job)["JobState"]) == 7
    assert int(system(conn, vm_id)["EnabledState"]) == 2
    assert state_change(conn, vm_path, 2)[0] == 4097
    assert state_change(conn, vm_path, 6)[0] == 1  # save: not supported
    rv, _ = conn.InvokeMethod("DestroySystem", vsms(conn), AffectedSystem=vm_path)
    assert int(rv) == 32775

    log = daemon.data_dir / "run" / vm_id / "console.log"
    wait_async(lambda: (console.last_seq(console.read(log)) or 0) >= 30, "the writer")
    rv, job = state_change(conn, vm_path, 9)  # pause
    assert int(wait_job(conn, job)["JobState"]) == 7
    assert int(system(conn, vm_id)["EnabledState"]) == 9
    rv, job = state_change(conn, vm_path, 2)  # 2 on a paused VM resumes it
    assert int(wait_job(conn, job)["JobState"]) == 7
    assert int(system(conn, vm_id)["EnabledState"]) == 2
    rv, job = state_change(conn, vm_path, 4)  # shut down (guest agent / ACPI)
    assert int(wait_job(conn, job)["JobState"]) == 7
    assert int(system(conn, vm_id)["EnabledState"]) == 3

    stops = console.writer_stops(console.read(log))
    report = verify_image(image)
    assert report.exact_prefix and report.records == stops[-1] >= 31

    rv, _ = conn.InvokeMethod("DestroySystem", vsms(conn), AffectedSystem=vm_path)
    assert int(rv) == 0
    assert vm_id not in [str(n["Name"]) for n in conn.EnumerateInstanceNames("Msvm_ComputerSystem")]
    assert not image.exists()


def test_pywbem_bad_definitions_leave_nothing_behind(
    conn: Any, daemon: DaemonProcess, tmp_path: Path
) -> None:
    before = {str(n["Name"]) for n in conn.EnumerateInstanceNames("Msvm_ComputerSystem")}
    vm_dir = daemon.data_dir / "vms"
    dirs_before = set(vm_dir.iterdir()) if vm_dir.exists() else set()
    zero_disk = rasd(
        "Msvm_StorageAllocationSettingData", ResourceType=pywbem.Uint16(31), VirtualQuantity=pywbem.Uint64(0)
    )
    good_disk = rasd(
        "Msvm_StorageAllocationSettingData",
        ResourceType=pywbem.Uint16(31),
        VirtualQuantity=pywbem.Uint64(8 << 20),
    )
    missing = rasd(
        "Msvm_StorageAllocationSettingData",
        ResourceType=pywbem.Uint16(31),
        HostResource=[str(tmp_path / "missing.qcow2")],
    )
    raw = tmp_path / "raw.img"
    raw.write_bytes(bytes(1 << 20))
    not_qcow2 = rasd(
        "Msvm_StorageAllocationSettingData", ResourceType=pywbem.Uint16(31), HostResource=[str(raw)]
    )
    bad_net = rasd(
        "Msvm_SyntheticEthernetPortSettingData", ResourceType=pywbem.Uint16(10), Connection=["wifi"]
    )
    assert define(conn, "bad1", [zero_disk])[0] == 32773
    assert define(conn, "bad2", [good_disk, missing])[0] == 32779
    assert define(conn, "bad3", [good_disk, not_qcow2])[0] == 32773
    assert define(conn, "bad4", [good_disk, bad_net])[0] == 32773
    assert define(conn, "", [good_disk])[0] == 32773
    after = {str(n["Name"]) for n in conn.EnumerateInstanceNames("Msvm_ComputerSystem")}
    assert after == before
    assert (set(vm_dir.iterdir()) if vm_dir.exists() else set()) == dirs_before


def cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "standby", "--data-dir", str(daemon.data_dir), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def test_cli_create_start_crash_is_noticed_delete(daemon: DaemonProcess, guest: GuestImage) -> None:
    made = cli(
        daemon,
        "vm",
        "create",
        "clivm",
        "--memory",
        "192M",
        "--disk",
        "32M",
        "--kernel",
        str(guest.kernel),
        "--initrd",
        str(guest.initrd),
        "--append",
        guest.append(),
        "--json",
    )
    assert made.returncode == 0, made.stderr
    vm = json.loads(made.stdout)
    assert (vm["memory_mib"], vm["disks"][0]["size_bytes"]) == (192, 32 << 20)

    clash = cli(daemon, "vm", "create", "clivm", "--disk", "32M")
    assert clash.returncode == 1 and "already exists" in clash.stderr
    bad = cli(daemon, "vm", "create", "other", "--disk", "lots")
    assert bad.returncode == 1 and "bad disk size" in bad.stderr
    assert cli(daemon, "vm", "start", "nosuchvm").returncode == 1

    started = cli(daemon, "vm", "start", "clivm", "--json")
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["state_name"] == "Enabled"
    again = cli(daemon, "vm", "start", "clivm")
    assert again.returncode == 1 and "already running" in again.stderr

    pid = qemu_pid(vm["id"])
    os.kill(pid, signal.SIGKILL)  # as a crash would
    wait_async(
        lambda: json.loads(cli(daemon, "vm", "show", "clivm", "--json").stdout)["enabled_state"] == 3,
        "the crash to be noticed",
    )
    wait_async(lambda: not Path(f"/proc/{pid}").exists(), "QEMU to be reaped")
    with daemon.control() as client:
        events = client.get(f"/api/v1/vms/{vm['id']}/events").json()
    crash = [e for e in events if e["kind"] == "vm.crashed"]
    assert crash and crash[0]["message_id"] == "VmProcessDied" and "signal 9" in crash[0]["args"]["status"]

    listed = json.loads(cli(daemon, "vm", "list", "--json").stdout)
    assert [v["name"] for v in listed if v["name"] == "clivm"] == ["clivm"]
    deleted = cli(daemon, "vm", "delete", "clivm")
    assert deleted.returncode == 0, deleted.stderr
    assert not Path(vm["disks"][0]["path"]).exists()


def test_cli_import_keeps_the_image(daemon: DaemonProcess, tmp_path: Path) -> None:
    image = tmp_path / "existing.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    made = cli(daemon, "vm", "import", "imported", "--disk", str(image), "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["disks"][0] == {"id": "d0", "path": str(image), "size_bytes": 16 << 20}
    twice = cli(daemon, "vm", "import", "imported2", "--disk", str(image))
    assert twice.returncode == 1 and "already a disk" in twice.stderr
    missing = cli(daemon, "vm", "import", "ghost", "--disk", str(tmp_path / "nope.qcow2"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert cli(daemon, "vm", "delete", "imported").returncode == 0
    assert image.exists()


def qemu_pid(vm_id: str) -> int:
    """The QEMU process that runs ``vm_id`` (its command line carries ``-uuid <id>``)."""
    wanted = f"-uuid\0{vm_id.lower()}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if wanted in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    [pid] = found
    return pid
