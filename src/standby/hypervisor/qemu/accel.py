"""Choosing QEMU's accelerator: ``auto``, ``kvm`` or ``tcg``.

``/dev/kvm`` can exist and still be unable to run guests: on a nested ``kvm_pvm`` shim a stock kernel hangs
(DESIGN §7). ``auto`` therefore takes KVM only when the CPU has vmx/svm, the PVM shim is absent and
``/dev/kvm`` opens; never ``-accel kvm:tcg`` (QEMU would open KVM and the guest hangs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from standby.domain.errors import InvalidParameter

ACCELERATORS = ("auto", "kvm", "tcg")


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What the accelerator choice depends on."""

    kvm_pvm_loaded: bool
    cpu_has_virt: bool
    dev_kvm_usable: bool


def choose_accel(setting: str, facts: HostFacts) -> str:
    """The accelerator to pass to ``-accel`` for ``setting`` on a host with ``facts``."""
    if setting not in ACCELERATORS:
        raise InvalidParameter(
            f"accelerator must be one of {', '.join(ACCELERATORS)}, not {setting!r}", message_id="BadAccel"
        )
    if setting != "auto":
        return setting
    if facts.kvm_pvm_loaded or not facts.cpu_has_virt or not facts.dev_kvm_usable:
        return "tcg"
    return "kvm"


def probe_host(sys_root: Path = Path("/")) -> HostFacts:
    """Read the facts from this host (``sys_root`` lets tests point at a fake tree)."""
    cpuinfo = sys_root / "proc/cpuinfo"
    try:
        flags = {
            w for line in cpuinfo.read_text().splitlines() if line.startswith("flags") for w in line.split()
        }
    except OSError:
        flags = set()
    return HostFacts(
        kvm_pvm_loaded=(sys_root / "sys/module/kvm_pvm").exists(),
        cpu_has_virt=bool(flags & {"vmx", "svm"}),
        dev_kvm_usable=_opens(sys_root / "dev/kvm"),
    )


def _opens(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True
