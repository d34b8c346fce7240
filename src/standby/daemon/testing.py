"""Run a real ``standby serve`` process for integration, interop and e2e tests.

    with DaemonProcess.start(data_dir, users={"admin": "pw"}) as daemon:
        daemon.control().get("/api/v1/status")             # over the control socket
        daemon.https(user="admin", password="pw").get(...)  # over HTTPS, trusting its self-signed cert
        daemon.http_port                                    # loopback CIM-XML port

The daemon gets free TCP ports, its own data directory and a config file; ``stop()`` sends SIGTERM and
waits, ``kill()`` sends SIGKILL. Its stderr (the structured log) is kept in ``<data-dir>/daemon.log``.
Keep ``data_dir`` short (``tempfile.mkdtemp(dir="/tmp")``): unix socket paths are limited to 107 bytes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from standby.daemon.passwords import hash_password

READY_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class DaemonProcess:
    """One daemon process and how to reach it."""

    data_dir: Path
    config_file: Path
    https_port: int
    http_port: int
    extra_config: str = ""
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(
        cls, data_dir: Path, *, users: Mapping[str, str] | None = None, extra_config: str = "",
        env: Mapping[str, str] | None = None,
    ) -> DaemonProcess:
        """Write a config (users given as plain passwords, hashed here) and start the daemon."""
        daemon = cls.prepare(data_dir, users=users, extra_config=extra_config, env=env)
        daemon.launch()
        return daemon

    @classmethod
    def prepare(
        cls, data_dir: Path, *, users: Mapping[str, str] | None = None, extra_config: str = "",
        env: Mapping[str, str] | None = None,
    ) -> DaemonProcess:
        """Write the config file without starting anything."""
        data_dir.mkdir(parents=True, exist_ok=True)
        https_port, http_port = free_port(), free_port()
        user_lines = "\n".join(f'"{name}" = "{hash_password(pw)}"' for name, pw in (users or {}).items())
        config_file = data_dir / "test.toml"
        config_file.write_text(
            f'[host]\nname = "testhost"\nfqdn = "testhost.example"\n'
            f'[listeners.https]\naddress = "127.0.0.1"\nport = {https_port}\n'
            f'[listeners.http]\nport = {http_port}\n'
            f"[users]\n{user_lines}\n{extra_config}\n"
            # Test daemons power their VMs off when they stop (the default leaves them for a successor).
            + ("" if "[hypervisor]" in extra_config else "[hypervisor]\nstop_vms_on_exit = true\n")
        )
        return cls(data_dir, config_file, https_port, http_port, extra_config, env=dict(env or {}))

    @property
    def socket_path(self) -> Path:
        """The control socket."""
        return self.data_dir / "control.sock"

    @property
    def log_path(self) -> Path:
        """The daemon's stderr."""
        return self.data_dir / "daemon.log"

    @property
    def cert_file(self) -> Path:
        """The (self-signed) HTTPS certificate the daemon created."""
        return self.data_dir / "tls" / "host.crt"

    def command(self) -> list[str]:
        """The command line that starts the daemon."""
        return [sys.executable, "-m", "standby", "serve", "--data-dir", str(self.data_dir),
                "--config", str(self.config_file)]

    def launch(self, *, wait: bool = True) -> None:
        """Start the process (again, after ``stop``/``kill``) and wait until it serves."""
        env = {**os.environ, **self.env}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=log, env=env,
                                            stdin=subprocess.DEVNULL)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll ``/healthz`` on the control socket until it answers; raise with the log if it dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError, OSError), self.control() as client:
                if client.get("/healthz").status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"daemon not ready after {timeout} s:\n{self.log()}")

    def control(self, *, language: str | None = None) -> httpx.Client:
        """An httpx client on the control socket."""
        headers = {"accept-language": language} if language else {}
        transport = httpx.HTTPTransport(uds=str(self.socket_path))
        return httpx.Client(transport=transport, base_url="http://standby", headers=headers, timeout=30)

    def https(self, *, user: str | None = None, password: str | None = None) -> httpx.Client:
        """An httpx client on the HTTPS listener that trusts the daemon's certificate."""
        auth = (user, password or "") if user else None
        return httpx.Client(base_url=f"https://127.0.0.1:{self.https_port}", auth=auth,
                            verify=ssl.create_default_context(cafile=str(self.cert_file)), timeout=30)

    def http(self, *, user: str | None = None, password: str | None = None) -> httpx.Client:
        """An httpx client on the loopback HTTP listener."""
        auth = (user, password or "") if user else None
        return httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", auth=auth, timeout=30)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; the exit code."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int:
        """SIGKILL and reap."""
        return self._signal(signal.SIGKILL, 30.0)

    def _signal(self, signum: int, timeout: float) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        """Everything the daemon wrote to stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()
