"""A qemu-nbd the daemon started dies with the daemon, even when the daemon is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_PARENT = """
import sys, time
from pathlib import Path
from standby.storage.chain import NbdServer
server = NbdServer(Path(sys.argv[1]), writable=False)
print("ready", flush=True)
time.sleep(600)
"""


def _qemu_nbd_pids(image: Path) -> list[int]:
    found = subprocess.run(["pgrep", "-f", f"qemu-nbd.*{image}"], check=False, capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def test_qemu_nbd_is_killed_when_its_parent_is_sigkilled(tmp_path: Path) -> None:
    image = tmp_path / "orphan-check.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(image)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
    children = _qemu_nbd_pids(image)
    assert len(children) == 1, children

    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _qemu_nbd_pids(image) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _qemu_nbd_pids(image) == [], "qemu-nbd outlived the process that started it"
