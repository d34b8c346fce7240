"""Where the test hosts live on the network: a network namespace each, or loopback addresses.

Namespaces (preferred, needs root and ``ip``): one namespace per host with a veth pair whose outer end sits on
a bridge in the root namespace. The bridge has an address too, so the test process (root namespace) reaches
every host by its address, while the hosts see only each other. ``/etc/netns/<ns>/hosts`` names every host,
so a daemon resolves its peers' host names (``ip netns exec`` mounts that file over ``/etc/hosts``).

Loopback (fallback): host *i* gets ``127.0.0.<i+1>`` — still distinct addresses, just not isolated, and host
names do not resolve (the harness always connects by address).

``STANDBY_E2E_NETWORK=loopback|netns`` forces a mode; the default tries namespaces and falls back.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

NETNS_ETC = Path("/etc/netns")
_ENV = "STANDBY_E2E_NETWORK"


class NetworkUnavailable(RuntimeError):
    """Namespaces cannot be made here (no root, no ``ip``, a kernel without them)."""


@dataclass(frozen=True, slots=True)
class HostNet:
    """One host's place on the test network."""

    name: str  # its DNS name (certificate SAN, host fqdn)
    address: str  # what its listeners bind to and peers connect to
    prefix: tuple[str, ...] = ()  # run a command "on the host": ("ip", "netns", "exec", ns) or ()
    namespace: str | None = None


@dataclass
class TestNetwork:
    """The hosts' addresses and how to undo the set-up."""

    __test__ = False  # not a pytest class

    mode: str
    hosts: list[HostNet]
    _undo: list[list[str]] = field(default_factory=list)
    _files: list[Path] = field(default_factory=list)

    @classmethod
    def create(cls, names: Sequence[str], *, mode: str | None = None) -> TestNetwork:
        """Namespaces if allowed (or forced), else loopback addresses."""
        chosen = mode or os.environ.get(_ENV) or "auto"
        if chosen not in ("auto", "netns", "loopback"):
            raise ValueError(f"{_ENV} must be auto, netns or loopback, not {chosen!r}")
        if chosen != "loopback":
            try:
                return cls._namespaces(names)
            except NetworkUnavailable:
                if chosen == "netns":
                    raise
        return cls("loopback", [HostNet(n, f"127.0.0.{i + 1}") for i, n in enumerate(names)])

    @classmethod
    def _namespaces(cls, names: Sequence[str]) -> TestNetwork:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise NetworkUnavailable("network namespaces need root and iproute2")
        tag = f"sbt{os.getpid() % 100000}"
        subnet = _free_subnet()
        net = cls("netns", [])
        try:
            bridge = f"{tag}-br"
            gateway = str(subnet.network_address + 254)
            net._ip("link", "add", bridge, "type", "bridge", undo=["link", "del", bridge])
            net._ip("addr", "add", f"{gateway}/24", "dev", bridge)
            net._ip("link", "set", bridge, "up")
            for i, name in enumerate(names):
                address = str(subnet.network_address + i + 1)
                net.hosts.append(net._add_host(tag, chr(ord("a") + i), name, address, bridge))
            net._write_hosts_files()
        except (subprocess.CalledProcessError, OSError) as exc:
            net.close()
            raise NetworkUnavailable(f"cannot make network namespaces: {exc}") from exc
        return net

    def _add_host(self, tag: str, letter: str, name: str, address: str, bridge: str) -> HostNet:
        ns, outer, inner = f"{tag}-{letter}", f"{tag}-{letter}o", f"{tag}-{letter}i"
        self._ip("netns", "add", ns, undo=["netns", "del", ns])
        self._ip("link", "add", outer, "type", "veth", "peer", "name", inner, undo=["link", "del", outer])
        self._ip("link", "set", inner, "netns", ns)
        self._ip("link", "set", outer, "master", bridge)
        self._ip("link", "set", outer, "up")
        self._ip("-n", ns, "addr", "add", f"{address}/24", "dev", inner)
        self._ip("-n", ns, "link", "set", inner, "up")
        self._ip("-n", ns, "link", "set", "lo", "up")
        return HostNet(name, address, ("ip", "netns", "exec", ns), ns)

    def _write_hosts_files(self) -> None:
        lines = "127.0.0.1 localhost\n" + "".join(f"{h.address} {h.name}\n" for h in self.hosts)
        for host in self.hosts:
            assert host.namespace is not None
            folder = NETNS_ETC / host.namespace
            folder.mkdir(parents=True, exist_ok=True)
            self._files.append(folder)
            (folder / "hosts").write_text(lines)

    def _ip(self, *args: str, undo: list[str] | None = None) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)
        if undo is not None:
            self._undo.append(undo)

    def close(self) -> None:
        """Delete every namespace, link and file this network made (safe to call twice)."""
        while self._undo:
            args = self._undo.pop()
            subprocess.run(["ip", *args], check=False, capture_output=True, timeout=30)
        while self._files:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._files.pop())

    def describe(self) -> str:
        """One line for reports: mode and addresses."""
        where = ", ".join(f"{h.name}={h.address}" for h in self.hosts)
        return f"{self.mode} ({where})"


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.213.X.0/24 that no interface of the root namespace uses yet."""
    shown = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                           check=False).stdout
    start = os.getpid() % 250
    for step in range(250):
        candidate = ipaddress.IPv4Network(f"10.213.{(start + step) % 250}.0/24")
        first_three = str(candidate.network_address).rsplit(".", 1)[0]
        if f"inet {first_three}." not in shown:
            return candidate
    raise NetworkUnavailable("no free 10.213.X.0/24 subnet")
