"""Pure parts of the QEMU driver: accelerator choice, command line, error translation, the fake."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from standby.domain.entities import Disk, Nic, VirtualMachine
from standby.domain.enums import EnabledState
from standby.domain.errors import FileNotFound, InvalidParameter, InvalidState
from standby.hypervisor.fake import FakeHypervisor
from standby.hypervisor.port import VmEvent, VmEventKind
from standby.hypervisor.qemu.accel import HostFacts, choose_accel, probe_host
from standby.hypervisor.qemu.cmdline import RunPaths, build_command, check_vm

VM_ID = "6F3A3D0E-1C2B-4D5E-8F90-0123456789AB"


@pytest.mark.parametrize(
    ("setting", "pvm", "virt", "dev", "expected"),
    [
        ("auto", False, True, True, "kvm"),
        ("auto", True, True, True, "tcg"),  # the nested PVM shim: KVM opens but guests hang
        ("auto", False, False, True, "tcg"),  # no vmx/svm
        ("auto", False, True, False, "tcg"),  # /dev/kvm cannot be opened
        ("auto", True, False, True, "tcg"),  # this machine
        ("kvm", True, False, True, "kvm"),  # an explicit setting is obeyed
        ("tcg", False, True, True, "tcg"),
    ],
)
def test_accel_choice_table(setting: str, pvm: bool, virt: bool, dev: bool, expected: str) -> None:
    assert choose_accel(setting, HostFacts(pvm, virt, dev)) == expected


def test_accel_setting_is_validated_and_never_a_fallback_list() -> None:
    with pytest.raises(InvalidParameter, match="auto, kvm, tcg"):
        choose_accel("kvm:tcg", HostFacts(False, True, True))


def test_probe_host_reads_a_fake_tree(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("processor : 0\nflags : fpu sse2 vmx\n")
    (tmp_path / "sys/module/kvm_pvm").mkdir(parents=True)
    facts = probe_host(tmp_path)
    assert facts == HostFacts(kvm_pvm_loaded=True, cpu_has_virt=True, dev_kvm_usable=False)
    assert choose_accel("auto", facts) == "tcg"


def vm(**changes: object) -> VirtualMachine:
    base = VirtualMachine(
        vm_id=VM_ID,
        name="web,1",
        memory_mib=256,
        cpus=2,
        disks=(Disk("d0", "/images/a,b.qcow2", 1 << 30), Disk("d1", "/images/c.qcow2", 1 << 30)),
        nics=(Nic("n0", "52:54:00:12:34:56"), Nic("n1", "52:54:00:12:34:57", "isolated:test")),
    )
    fields = {f: getattr(base, f) for f in base.__slots__ if f != "__weakref__"}  # type: ignore[attr-defined]
    fields.update(changes)
    return VirtualMachine(**fields)  # type: ignore[arg-type]


def args_after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_command_line_has_controlled_node_names_and_paused_start() -> None:
    argv = build_command(vm(), RunPaths(Path("/run/sb/x")), "tcg")
    assert argv[0] == "qemu-system-x86_64"
    assert "-S" in argv and "-nodefaults" in argv
    assert args_after(argv, "-accel") == ["tcg"]
    assert args_after(argv, "-cpu") == ["max"]
    assert args_after(argv, "-m") == ["256M"] and args_after(argv, "-smp") == ["2"]
    assert args_after(argv, "-uuid") == [VM_ID.lower()]
    assert args_after(argv, "-name") == ["guest=web,,1,debug-threads=on"]  # commas doubled
    nodes = [json.loads(a) for a in args_after(argv, "-blockdev")]
    assert [(n["node-name"], n["file"]["node-name"], n["file"]["filename"]) for n in nodes] == [
        ("fmt-d0", "file-d0", "/images/a,b.qcow2"),  # JSON syntax: no escaping needed
        ("fmt-d1", "file-d1", "/images/c.qcow2"),
    ]
    devices = [a for a in args_after(argv, "-device") if a.startswith("{")]
    assert [json.loads(d) for d in devices] == [
        {"driver": "virtio-blk-pci", "drive": "fmt-d0", "id": "disk-d0", "bootindex": 1},
        {"driver": "virtio-blk-pci", "drive": "fmt-d1", "id": "disk-d1"},
    ]
    chardevs = args_after(argv, "-chardev")
    assert "socket,id=qmp,path=/run/sb/x/qmp.sock,server=on,wait=off" in chardevs
    assert "file,id=serial0,path=/run/sb/x/console.log,append=on" in chardevs
    assert "socket,id=qga0,path=/run/sb/x/qga.sock,server=on,wait=off" in chardevs
    assert "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0" in args_after(
        argv, "-device"
    )
    assert not any("kvm:tcg" in a for a in argv)


def test_networks_user_isolated_bridge_none() -> None:
    nics = (
        Nic("n0", "52:54:00:00:00:01", "user"),
        Nic("n1", "52:54:00:00:00:02", "isolated:tf"),
        Nic("n2", "52:54:00:00:00:03", "bridge:br0"),
        Nic("n3", "52:54:00:00:00:04", "none"),
    )
    argv = build_command(vm(nics=nics), RunPaths(Path("/r")), "kvm")
    assert args_after(argv, "-netdev") == [
        "user,id=net-n0",
        "user,id=net-n1,restrict=on",
        "bridge,id=net-n2,br=br0",
    ]
    net_devices = [d for d in args_after(argv, "-device") if d.startswith("virtio-net")]
    assert net_devices[0] == "virtio-net-pci,netdev=net-n0,mac=52:54:00:00:00:01,id=nic-n0,romfile="
    assert len(net_devices) == 3
    assert args_after(argv, "-cpu") == ["host"]


def test_kernel_boot_skips_disk_bootindex() -> None:
    argv = build_command(
        vm(kernel="/k/vmlinux", initrd="/k/initrd", append="console=ttyS0 a=b,c"), RunPaths(Path("/r")), "tcg"
    )
    assert args_after(argv, "-kernel") == ["/k/vmlinux"]
    assert args_after(argv, "-initrd") == ["/k/initrd"]
    assert args_after(argv, "-append") == ["console=ttyS0 a=b,c"]
    assert all("bootindex" not in d for d in args_after(argv, "-device"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"memory_mib": 8}, "memory"),
        ({"cpus": 0}, "cpus"),
        ({"disks": (), "kernel": None}, "disk or a kernel"),
        ({"disks": (Disk("d0", "/a", 1), Disk("d0", "/b", 1))}, "duplicate disk id"),
        ({"disks": (Disk("0bad", "/a", 1),)}, "disk id"),
        ({"disks": (Disk("x" * 28, "/a", 1),)}, "disk id"),  # node names are limited to 31 characters
        ({"nics": (Nic("n0", "52:54:00:00:00"),)}, "MAC"),
        ({"nics": (Nic("n0", "52:54:00:00:00:01", "bridge:"),)}, "network"),
        ({"nics": (Nic("n0", "52:54:00:00:00:01", "wifi"),)}, "network"),
        ({"nics": (Nic("n0", "52:54:00:00:00:01", "bridge:br0;rm -rf"),)}, "network"),
    ],
)
def test_bad_vm_definitions_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        check_vm(vm(**changes))


def test_socket_path_too_long_is_refused() -> None:
    with pytest.raises(InvalidParameter, match="too long"):
        build_command(vm(), RunPaths(Path("/" + "x" * 120)), "tcg")


def test_fake_hypervisor_follows_the_same_state_rules(tmp_path: Path) -> None:
    disk = tmp_path / "d.qcow2"
    disk.write_bytes(b"")
    fake = FakeHypervisor()
    events: list[VmEvent] = []
    fake.subscribe(events.append)
    good = vm(disks=(Disk("d0", str(disk), 1),))

    async def scenario() -> None:
        with pytest.raises(FileNotFound):
            await fake.start(vm())
        await fake.start(good)
        with pytest.raises(InvalidState):
            await fake.start(good)
        await fake.pause(good.vm_id)
        assert fake.state(good.vm_id) is EnabledState.QUIESCE
        await fake.resume(good.vm_id)
        fake.crash(good.vm_id)
        with pytest.raises(InvalidState):
            await fake.stop(good.vm_id)

    asyncio.run(scenario())
    assert [e.kind for e in events] == [
        VmEventKind.STARTED,
        VmEventKind.PAUSED,
        VmEventKind.RESUMED,
        VmEventKind.CRASHED,
    ]
    assert fake.state(good.vm_id) is EnabledState.DISABLED
