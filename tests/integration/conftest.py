"""Two real daemons for the tests that need hosts A and B: ``site`` (network namespaces where they can be
made, a fresh pair per test) and ``loopback_site`` (both on 127.0.0.1, one pair per module)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from standby.daemon.testing import DaemonProcess
from standby.testing.cluster import TwoHosts
from standby.testing.guestvm import GuestVm
from standby.testing.host import TestHost


def define_vm(host: TestHost, name: str, disk: str = "64M") -> GuestVm:
    """A turned-off VM with one new disk on ``host`` (through REST), as the tests' guest handle."""
    with host.control() as client:
        answer = client.post("/api/v1/vms", json={"name": name, "memory": "128M", "cpus": 1,
                                                  "disks": [{"size": disk}]})
    assert answer.status_code in (200, 201), answer.text
    return GuestVm(answer.json()["id"], answer.json()["name"])


@contextmanager
def one_daemon(prefix: str, users: dict[str, str], extra_config: str = "") -> Iterator[DaemonProcess]:
    """A daemon in a fresh folder under /tmp (short: socket paths), stopped and removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    process = DaemonProcess.start(folder / "data", users=users, extra_config=extra_config)
    try:
        yield process
    finally:
        process.stop()
        shutil.rmtree(folder, ignore_errors=True)


def run_cli(daemon: DaemonProcess, *args: str, lang: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``standby ARGS`` against ``daemon`` over its control socket, with none of the test's own ``STANDBY_*``
    or locale variables (``lang`` sets ``LANG``) and wide columns, so Rich tables do not wrap."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("STANDBY_", "LANG", "LC_"))}
    base["STANDBY_DATA_DIR"] = str(daemon.data_dir)
    base["COLUMNS"] = "200"
    if lang:
        base["LANG"] = lang
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "standby", *args], capture_output=True, text=True, env=base,
                          timeout=120, check=False)


@contextmanager
def two_hosts(network_mode: str | None = None) -> Iterator[TwoHosts]:
    """A and B, each authorized to replicate to the other; no process may outlive them."""
    hosts = TwoHosts.start(network_mode=network_mode)
    try:
        yield hosts
    finally:
        assert not hosts.close(), "processes outlived their daemons"


@pytest.fixture()
def site() -> Iterator[TwoHosts]:
    with two_hosts() as hosts:
        yield hosts


@pytest.fixture(scope="module")
def loopback_site() -> Iterator[TwoHosts]:
    with two_hosts("loopback") as hosts:
        yield hosts
