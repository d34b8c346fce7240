"""Building the ``qemu-system-x86_64`` command line of a VM (pure: no I/O).

Disks are qcow2 on virtio-blk, with node names we control so QMP block commands can name them:
``file-<disk_id>`` (protocol node), ``fmt-<disk_id>`` (the qcow2 node the device uses, where dirty bitmaps
live) and the device id ``disk-<disk_id>`` (``/machine/peripheral/disk-<id>`` for qemu-io "as the guest").
QEMU starts paused (``-S``): the driver connects QMP, then sends ``cont``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from standby.domain.entities import Disk, Nic, VirtualMachine
from standby.domain.errors import InvalidParameter

QEMU_BINARY = "qemu-system-x86_64"
AGENT_PORT_NAME = "org.qemu.guest_agent.0"
#: QEMU keeps node names in 32 bytes with the NUL; ``fmt-`` takes 4 of them.
_DISK_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,26}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
#: A unix socket path must fit ``sun_path`` (108 bytes with the NUL).
MAX_SOCKET_PATH = 107


@dataclass(frozen=True, slots=True)
class RunPaths:
    """The files of one running VM, all in its run directory."""

    root: Path

    @property
    def qmp(self) -> Path:
        """The QMP control socket."""
        return self.root / "qmp.sock"

    @property
    def agent(self) -> Path:
        """The qemu-guest-agent channel (virtio-serial)."""
        return self.root / "qga.sock"

    @property
    def console(self) -> Path:
        """The serial console log."""
        return self.root / "console.log"


def fmt_node(disk_id: str) -> str:
    """The qcow2 (format) node name of a disk: where bitmaps go and what the device uses."""
    return f"fmt-{disk_id}"


def file_node(disk_id: str) -> str:
    """The protocol (file) node name under a disk's qcow2 node."""
    return f"file-{disk_id}"


def device_id(disk_id: str) -> str:
    """The virtio-blk device id of a disk."""
    return f"disk-{disk_id}"


def _opt(value: str) -> str:
    # QEMU's key=value option syntax escapes a comma by doubling it.
    return value.replace(",", ",,")


def build_command(vm: VirtualMachine, paths: RunPaths, accel: str, binary: str = QEMU_BINARY) -> list[str]:
    """The full argv that runs ``vm`` with ``accel`` (``kvm`` or ``tcg``), paused until ``cont``."""
    check_vm(vm)
    for sock in (paths.qmp, paths.agent):
        if len(str(sock)) > MAX_SOCKET_PATH:
            raise InvalidParameter(f"run directory path too long for a unix socket: {sock}")
    argv = [binary, "-name", f"guest={_opt(vm.name)},debug-threads=on", "-uuid", vm.vm_id.lower()]
    argv += ["-nodefaults", "-no-user-config", "-display", "none", "-S", "-msg", "timestamp=on"]
    argv += ["-machine", "q35", "-accel", accel, "-cpu", "host" if accel == "kvm" else "max"]
    argv += ["-m", f"{vm.memory_mib}M", "-smp", str(vm.cpus)]
    argv += ["-chardev", f"socket,id=qmp,path={_opt(str(paths.qmp))},server=on,wait=off"]
    argv += ["-mon", "chardev=qmp,mode=control"]
    argv += [
        "-chardev",
        f"file,id=serial0,path={_opt(str(paths.console))},append=on",
        "-serial",
        "chardev:serial0",
    ]
    argv += ["-device", "virtio-serial-pci,id=vser0"]
    argv += ["-chardev", f"socket,id=qga0,path={_opt(str(paths.agent))},server=on,wait=off"]
    argv += ["-device", f"virtserialport,bus=vser0.0,chardev=qga0,name={AGENT_PORT_NAME}"]
    for index, disk in enumerate(vm.disks):
        argv += _disk_args(disk, boot=index == 0 and vm.kernel is None)
    for nic in vm.nics:
        argv += _nic_args(nic)
    argv += _kernel_args(vm)
    return argv


def _disk_args(disk: Disk, *, boot: bool) -> list[str]:
    node = {
        "driver": "qcow2",
        "node-name": fmt_node(disk.disk_id),
        "file": {"driver": "file", "node-name": file_node(disk.disk_id), "filename": disk.path},
    }
    device: dict[str, object] = {
        "driver": "virtio-blk-pci",
        "drive": fmt_node(disk.disk_id),
        "id": device_id(disk.disk_id),
    }
    if boot:
        device["bootindex"] = 1
    return ["-blockdev", json.dumps(node), "-device", json.dumps(device)]


def _nic_args(nic: Nic) -> list[str]:
    if nic.network == "none":
        return []
    netdev = f"net-{nic.nic_id}"
    kind, _, name = nic.network.partition(":")
    if kind == "user":
        backend = f"user,id={netdev}"
    elif kind == "bridge":
        backend = f"bridge,id={netdev},br={name}"
    else:  # isolated: user networking with no route out (restrict=on); the guest only sees itself
        backend = f"user,id={netdev},restrict=on"
    # romfile= (empty) skips the iPXE option ROM: nothing boots from the network, and TCG boots faster.
    device = f"virtio-net-pci,netdev={netdev},mac={nic.mac},id=nic-{nic.nic_id},romfile="
    return ["-netdev", backend, "-device", device]


def _kernel_args(vm: VirtualMachine) -> list[str]:
    if vm.kernel is None:
        return []
    argv = ["-kernel", vm.kernel]
    if vm.initrd:
        argv += ["-initrd", vm.initrd]
    if vm.append:
        argv += ["-append", vm.append]
    return argv


def check_vm(vm: VirtualMachine) -> None:
    """Raise ``InvalidParameter`` for anything QEMU would reject or misread."""
    if vm.memory_mib < 16:
        raise InvalidParameter(
            f"memory must be at least 16 MiB, not {vm.memory_mib} MiB", message_id="BadMemory"
        )
    if not 1 <= vm.cpus <= 64:
        raise InvalidParameter(f"cpus must be 1..64, not {vm.cpus}", message_id="BadCpus")
    if not vm.disks and vm.kernel is None:
        raise InvalidParameter("a VM needs a disk or a kernel to boot", message_id="NothingToBoot")
    seen: set[str] = set()
    for disk in vm.disks:
        if not _DISK_ID.match(disk.disk_id) or disk.disk_id in seen:
            raise InvalidParameter(f"bad or duplicate disk id {disk.disk_id!r}", message_id="BadDiskId")
        seen.add(disk.disk_id)
    for nic in vm.nics:
        _check_nic(nic)


def _check_nic(nic: Nic) -> None:
    if not _DISK_ID.match(nic.nic_id):
        raise InvalidParameter(f"bad NIC id {nic.nic_id!r}", message_id="BadNicId")
    if not _MAC.match(nic.mac):
        raise InvalidParameter(f"bad MAC address {nic.mac!r}", message_id="BadMac")
    kind, _, name = nic.network.partition(":")
    ok = (kind in ("user", "none") and not name) or (kind in ("bridge", "isolated") and _IFNAME.match(name))
    if not ok:
        raise InvalidParameter(
            f"network must be user, none, bridge:<name> or isolated:<name>, not {nic.network!r}",
            message_id="BadNetwork",
        )
