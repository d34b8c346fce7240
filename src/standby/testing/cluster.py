"""Two hosts on one machine: a site CA, two daemons on their own addresses, each authorized to replicate to
the other, and a teardown that leaves no process, namespace or file behind.

    with TwoHosts.start() as site:
        site.a.cim(), site.b.rest(), site.a.cli("vm", "list")
        ...

``TwoHosts.start(authorize=False)`` leaves the recovery servers off (for the "refused" tests).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from standby.testing import cim
from standby.testing.host import TestHost
from standby.testing.network import TestNetwork
from standby.testing.pki import SiteCA

HOST_NAMES = ("hosta.standby.test", "hostb.standby.test")
#: A third host of the same site (its own certificate from the site CA) for the tests of who may do what.
THIRD_HOST_NAME = "hostc.standby.test"


@dataclass
class TwoHosts:
    """The test site: hosts ``a`` and ``b``, their network, CA and scratch folder."""

    root: Path
    network: TestNetwork
    ca: SiteCA
    a: TestHost
    b: TestHost
    c: TestHost | None = None
    leftovers: list[str] = field(default_factory=list)
    _closed: bool = False

    @classmethod
    def start(cls, *, authorize: bool = True, network_mode: str | None = None,
              extra_config: str = "", root: Path | None = None, third_host: bool = False) -> TwoHosts:
        """Make the site and start both daemons (and host ``c`` with ``third_host``, not authorized
        anywhere); on any failure, undo what was made and re-raise."""
        # Short paths: unix socket names (control socket, QMP, NBD) must fit in 108 bytes.
        folder = root or Path(tempfile.mkdtemp(prefix="sbe-", dir="/tmp"))
        names = (*HOST_NAMES, THIRD_HOST_NAME) if third_host else HOST_NAMES
        network = TestNetwork.create(names, mode=network_mode)
        try:
            ca = SiteCA.create(folder / "ca")
            a = TestHost.prepare("A", network.hosts[0], folder, ca, extra_config=extra_config)
            b = TestHost.prepare("B", network.hosts[1], folder, ca, extra_config=extra_config)
            c = TestHost.prepare("C", network.hosts[2], folder, ca, extra_config=extra_config) \
                if third_host else None
            site = cls(folder, network, ca, a, b, c)
        except BaseException:
            network.close()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        try:
            for host in site.all_hosts:
                host.start()
            if authorize:
                site.authorize()
        except BaseException:
            site.close()
            raise
        return site

    @property
    def hosts(self) -> tuple[TestHost, TestHost]:
        """Both hosts."""
        return self.a, self.b

    @property
    def all_hosts(self) -> tuple[TestHost, ...]:
        """A, B and, when started with ``third_host``, C."""
        return (self.a, self.b) if self.c is None else (self.a, self.b, self.c)

    def other(self, host: TestHost) -> TestHost:
        """The host that is not ``host``."""
        return self.b if host is self.a else self.a

    def authorize(self) -> None:
        """Each host: recovery server on (certificate auth) and an entry that admits the other host."""
        for host in self.hosts:
            self.authorize_on(host, self.other(host).name)

    def authorize_on(self, host: TestHost, primary_name: str) -> None:
        """Turn ``host``'s recovery server on and admit ``primary_name`` into its replica folder."""
        conn = host.cim()
        svc = cim.service(conn)
        cim.call(conn, svc, "ModifyServiceSettings", SettingData=cim.service_settings(host.peer_port))
        cim.call(conn, svc, "AddAuthorizationEntry",
                 AuthorizationEntry=cim.authorization_entry(primary_name, str(host.replica_location)))

    def describe(self) -> str:
        """A line for reports."""
        return f"two hosts on {self.network.describe()}, site CA {self.ca.cert_file}"

    # -- teardown ---------------------------------------------------------------------------------------

    def close(self, *, keep_files: bool = False) -> list[str]:
        """Stop both daemons (they power their VMs off), kill whatever still runs from the site's folder,
        remove the network and the folder. Returns the processes that had to be killed (should be none)."""
        if self._closed:
            return self.leftovers
        self._closed = True
        for host in self.all_hosts:
            with contextlib.suppress(Exception):
                host.stop()
        self.leftovers = kill_leftovers(self.root)
        self.network.close()
        if not keep_files:
            shutil.rmtree(self.root, ignore_errors=True)
        return self.leftovers

    def __enter__(self) -> TwoHosts:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def processes_using(folder: Path) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose command line names ``folder``."""
    needle = str(folder)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        text = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        if needle in text and state != "Z":
            found.append((int(entry.name), text))
    return found


def kill_leftovers(folder: Path, grace: float = 5.0) -> list[str]:
    """SIGTERM, then SIGKILL, every process still running from ``folder``; what was found."""
    found = processes_using(folder)
    for pid, _ in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while processes_using(folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, _ in processes_using(folder):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return [command for _, command in found]
