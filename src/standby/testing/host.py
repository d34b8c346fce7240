"""One test host: a real ``standby serve`` process on its own address (or network namespace) with a site-CA
certificate, and the clients to drive it: the control socket, REST over HTTPS, pywbem over HTTPS, the CLI.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from standby.daemon.passwords import hash_password
from standby.daemon.testing import DaemonProcess, free_port
from standby.testing.network import HostNet
from standby.testing.pki import CertPair, SiteCA

USER, PASSWORD = "admin", "standby-e2e"
VIRT = "root/virtualization/v2"
#: The standard ports, used inside a namespace where every port is free: WBEM HTTPS and the peer listener.
STANDARD_HTTPS_PORT = 5989
STANDARD_PEER_PORT = 8443


@dataclass
class HostDaemon(DaemonProcess):
    """A ``DaemonProcess`` started through a command prefix (``ip netns exec NS``) on a given address."""

    address: str = "127.0.0.1"
    prefix: tuple[str, ...] = ()
    trust_file: Path | None = None  # the CA that signed its certificate (None: the certificate itself)

    def command(self) -> list[str]:
        """The daemon's command line inside the host's namespace."""
        # ``ip netns exec`` execs the command, so the launched process's pid is the daemon's own.
        return [*self.prefix, *super().command()]

    def https(self, *, user: str | None = None, password: str | None = None) -> httpx.Client:
        """An httpx client on the HTTPS listener, at the host's address, trusting its certificate."""
        auth = (user, password or "") if user else None
        return httpx.Client(base_url=f"https://{self.address}:{self.https_port}", auth=auth,
                            verify=ssl.create_default_context(cafile=str(self.trust_file or self.cert_file)),
                            timeout=60)


@dataclass
class TestHost:
    """A host of the test site: its name, address, certificate, daemon and data directory."""

    __test__ = False  # not a pytest class

    label: str  # "A", "B": for reports
    net: HostNet
    data_dir: Path
    ca: SiteCA
    cert: CertPair
    daemon: HostDaemon
    peer_port: int
    # Open pywbem sessions keep connections alive, and a stopping daemon waits for those to close.
    _cim_sessions: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)

    def trust(self, bundle: Path) -> None:
        """Verify this host's HTTPS certificate against ``bundle`` from now on (e.g. after swapping it)."""
        self.daemon.trust_file = bundle

    @classmethod
    def prepare(cls, label: str, net: HostNet, root: Path, ca: SiteCA, *, extra_config: str = "") -> TestHost:
        """Certificate, replica folder and config file; nothing runs yet."""
        data_dir = root / label.lower()
        data_dir.mkdir(parents=True, exist_ok=True)
        # The daemon uses <data-dir>/tls/host.{crt,key} when they exist instead of a self-signed pair.
        cert = ca.issue(data_dir / "tls", net.name, (net.address,))
        (data_dir / "replicas").mkdir(exist_ok=True)
        https_port = STANDARD_HTTPS_PORT if net.namespace else free_port()
        http_port = 5988 if net.namespace else free_port()
        peer_port = STANDARD_PEER_PORT if net.namespace else free_port()
        config_file = data_dir / "standby.toml"
        config_file.write_text(_config(net, (https_port, http_port, peer_port), ca.cert_file, extra_config))
        daemon = HostDaemon(data_dir, config_file, https_port, http_port, extra_config,
                            address=net.address, prefix=net.prefix, trust_file=ca.cert_file)
        return cls(label, net, data_dir, ca, cert, daemon, peer_port)

    # -- facts ------------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The host name (certificate DNS SAN, ``[host] fqdn``)."""
        return self.net.name

    @property
    def address(self) -> str:
        """Where its listeners are."""
        return self.net.address

    @property
    def https_port(self) -> int:
        """Its HTTPS port (REST and CIM-XML); replication uses ``peer_port``."""
        return self.daemon.https_port

    @property
    def peer_url(self) -> str:
        """The base URL of its peer listener (mutual TLS)."""
        return f"https://{self.address}:{self.peer_port}"

    @property
    def replica_location(self) -> Path:
        """The ReplicaStorageLocation of its authorization entries."""
        return self.data_dir / "replicas"

    def run_dir(self, vm_id: str) -> Path:
        """The QEMU run directory of a VM on this host (console log, sockets)."""
        return self.data_dir / "run" / vm_id

    def console_log(self, vm_id: str) -> Path:
        """The serial console log of a VM on this host."""
        return self.run_dir(vm_id) / "console.log"

    # -- clients ----------------------------------------------------------------------------------------

    def rest(self) -> httpx.Client:
        """REST over HTTPS with Basic auth (what a remote operator uses)."""
        return self.daemon.https(user=USER, password=PASSWORD)

    def control(self) -> httpx.Client:
        """The local control socket (what the CLI on the host uses)."""
        return self.daemon.control()

    def cim(self, namespace: str = VIRT) -> Any:
        """A pywbem connection over HTTPS, verifying the host's certificate against the site CA."""
        import pywbem

        conn = pywbem.WBEMConnection(f"https://{self.address}:{self.https_port}", (USER, PASSWORD),
                                     default_namespace=namespace,
                                     ca_certs=str(self.daemon.trust_file or self.ca.cert_file),
                                     timeout=300)
        # requests prefers REQUESTS_CA_BUNDLE from the environment over the session's CA file.
        conn.session.trust_env = False
        self._cim_sessions.add(conn)
        return conn

    def cli(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run ``standby --data-dir <dir> ARGS`` (the control socket); raise with its stderr on failure."""
        command = [sys.executable, "-m", "standby", "--data-dir", str(self.data_dir), *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("STANDBY_")}
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if check and proc.returncode != 0:
            raise CliFailed(args, proc.returncode, proc.stderr.strip() or proc.stdout.strip())
        return proc

    def cli_json(self, *args: str, timeout: float = 600) -> Any:
        """``cli(..., "--json")`` parsed."""
        out = self.cli(*args, "--json", timeout=timeout).stdout
        return json.loads(out) if out.strip() else None

    # -- life-cycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Launch the daemon and wait until it answers."""
        self.daemon.launch()

    def stop(self) -> int:
        """SIGTERM the daemon (it powers its VMs off) and wait."""
        self.close_sessions()
        return self.daemon.stop(timeout=120)

    def close_sessions(self) -> None:
        """Close the pywbem sessions still open on this host."""
        for conn in list(self._cim_sessions):
            conn.close()
        self._cim_sessions.clear()

    def kill(self) -> int:
        """SIGKILL the daemon (its QEMUs live on, as after a crash of the daemon alone)."""
        return self.daemon.kill()

    def running(self) -> bool:
        """Whether the daemon process is alive."""
        return self.daemon.process is not None and self.daemon.process.poll() is None


def peer_session(target: TestHost, cert: CertPair, *, trust: Path | None = None) -> httpx.Client:
    """An httpx client on ``target``'s peer listener presenting ``cert`` (as another host would)."""
    context = ssl.create_default_context(cafile=str(trust or target.ca.cert_file))
    context.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    return httpx.Client(base_url=target.peer_url, verify=context, trust_env=False, timeout=60)


class CliFailed(RuntimeError):
    """A CLI call exited non-zero."""

    def __init__(self, args: tuple[str, ...], code: int, message: str) -> None:
        super().__init__(f"standby {' '.join(args)} exited {code}: {message}")
        self.code = code
        self.message = message


def _config(net: HostNet, ports: tuple[int, int, int], ca_file: Path, extra: str) -> str:
    https_port, http_port, peer_port = ports
    users = f'"{USER}" = "{hash_password(PASSWORD)}"'
    short = net.name.split(".", 1)[0]
    return (
        f'[host]\nname = "{short}"\nfqdn = "{net.name}"\n'
        f'[listeners.https]\naddress = "{net.address}"\nport = {https_port}\n'
        f"[listeners.http]\nport = {http_port}\n"
        f"[tls]\nca_file = {json.dumps(str(ca_file))}\n"
        f"[peer]\nport = {peer_port}\n"
        f"[replication]\nconnection_timeout_seconds = 20\n"
        # A graceful stop powers the VMs off (the default leaves them running for the next daemon).
        f"[hypervisor]\naccel = \"auto\"\nstop_vms_on_exit = true\n"
        f"[users]\n{users}\n{extra}\n"
    )
