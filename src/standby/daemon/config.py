"""The daemon's configuration: a TOML file read into a frozen dataclass tree.

Every key, its default and its meaning is documented in ``docs/configuration.md``; keep the two in step.
Paths that default to places inside the data directory are resolved at load time, so the loaded ``Config``
always holds the effective values (``standby serve --show-config`` prints them back as TOML).
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from standby.daemon.passwords import PasswordHashError, parse_hash
from standby.daemon.toml_table import ConfigError, TomlTable

DEFAULT_DATA_DIR = Path("/var/lib/standby")
#: Looked for inside the data directory when ``--config`` is not given.
CONFIG_FILE_NAME = "standby.toml"
ACCEL_CHOICES = ("auto", "kvm", "tcg")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("keyvalue", "json")


@dataclass(frozen=True, slots=True)
class HostConfig:
    """How this host names itself to peers and in CIM instances."""

    name: str
    fqdn: str


@dataclass(frozen=True, slots=True)
class ControlListener:
    """The local control socket: unauthenticated, mode 0600, for the CLI on this host."""

    path: Path
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class HttpsListener:
    """HTTPS for REST, CIM-XML and peers; Basic auth except ``/healthz`` and the peer ping."""

    cert_file: Path
    key_file: Path
    enabled: bool = True
    address: str = "0.0.0.0"
    port: int = 5989


@dataclass(frozen=True, slots=True)
class HttpListener:
    """Plain HTTP for CIM-XML clients without TLS; loopback only."""

    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = 5988


MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """What a client may hold of the listeners (``[listeners.limits]``, docs/configuration.md)."""

    #: Seconds from the connection (TLS handshake included) or a request's first byte to its last header.
    header_timeout_seconds: float = 10.0
    #: Seconds a request body may pause while the daemon waits for it (streamed logs included).
    body_timeout_seconds: float = 30.0
    #: Seconds an idle keep-alive connection stays open on the HTTPS, HTTP and control listeners.
    idle_timeout_seconds: float = 5.0
    #: TCP connections of all listeners together; 0: derived from the open-file limit at start.
    max_connections: int = 0
    #: Concurrent connections from one client address on the HTTPS and HTTP listeners.
    per_client_connections: int = 64
    #: Concurrent connections from one host on the peer listener (a primary with many VMs uses several).
    peer_per_client_connections: int = 256
    #: Concurrent connections on the control socket (a budget of its own, outside ``max_connections``).
    control_connections: int = 64
    #: Largest REST (JSON) request body.
    rest_body_bytes: int = MIB
    #: Largest CIM-XML request body.
    cim_body_bytes: int = 4 * MIB
    #: Largest JSON body on the peer listener (logs are streamed and not limited).
    peer_body_bytes: int = MIB


@dataclass(frozen=True, slots=True)
class Listeners:
    """Every listener the daemon opens."""

    control: ControlListener
    https: HttpsListener
    http: HttpListener = field(default_factory=HttpListener)
    limits: ListenerLimits = field(default_factory=ListenerLimits)


@dataclass(frozen=True, slots=True)
class HypervisorConfig:
    """Which QEMU to run and with which accelerator (DESIGN §7: ``auto`` avoids the nested KVM shim)."""

    accel: str = "auto"
    qemu_binary: str = "qemu-system-x86_64"
    #: A graceful daemon stop powers the VMs off; false (default) leaves them running for the next daemon.
    stop_vms_on_exit: bool = False


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Structured logging on stderr."""

    level: str = "info"
    format: str = "keyvalue"
    access_log: bool = False


@dataclass(frozen=True, slots=True)
class JobsConfig:
    """Job housekeeping."""

    purge_interval_seconds: float = 60.0
    shutdown_grace_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    """Host-to-host settings used by replication operations."""

    connection_timeout_seconds: float = 30.0
    ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    """How this host applies the logs it receives as a replica."""

    #: Read every written range back against its frame checksum before a point counts. Off by default:
    #: every frame's xxh3 is checked before it is written, qemu-nbd answers each write with its error and
    #: flush + fsync make the point durable; the read-back doubles the replica's I/O.
    verify_writes: bool = False


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Trust between hosts: the site CA that signs every host certificate (``standby certs init``)."""

    ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """The host-to-host listener (mutual TLS, ``/peer/v1``); it runs only when ``[tls] ca_file`` is set."""

    enabled: bool = True
    address: str = "0.0.0.0"
    port: int = 8443


@dataclass(frozen=True, slots=True)
class Config:
    """The whole effective configuration."""

    data_dir: Path
    host: HostConfig
    listeners: Listeners
    users: tuple[tuple[str, str], ...] = ()
    hypervisor: HypervisorConfig = field(default_factory=HypervisorConfig)
    log: LogConfig = field(default_factory=LogConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    source: Path | None = None
    tls: TlsConfig = field(default_factory=TlsConfig)
    peer: PeerConfig = field(default_factory=PeerConfig)
    replica: ReplicaConfig = field(default_factory=ReplicaConfig)

    @property
    def users_map(self) -> dict[str, str]:
        """User name → password hash."""
        return dict(self.users)

    @property
    def database_path(self) -> Path:
        """The SQLite file of this host."""
        return self.data_dir / "standby.db"

    @property
    def lock_path(self) -> Path:
        """The pid/lock file that keeps a second daemon off this data directory."""
        return self.data_dir / "standby.pid"


def load_config(data_dir: Path | None = None, config_file: Path | None = None) -> Config:
    """Read ``config_file`` (or ``<data-dir>/standby.toml`` if present) and resolve every default.

    ``data_dir`` (from ``--data-dir``) wins over the file's ``data_dir``. Raises ``ConfigError``.
    """
    raw: dict[str, object] = {}
    source: Path | None = None
    if config_file is not None:
        raw, source = _read_toml(config_file), config_file
    elif data_dir is not None and (data_dir / CONFIG_FILE_NAME).is_file():
        source = data_dir / CONFIG_FILE_NAME
        raw = _read_toml(source)
    try:
        return parse_config(raw, data_dir=data_dir, source=source)
    except ConfigError as exc:
        if source is None:
            raise
        raise ConfigError(f"{source}: {exc}") from None


def parse_config(
    raw: Mapping[str, object], *, data_dir: Path | None = None, source: Path | None = None
) -> Config:
    """Build a ``Config`` from an already parsed TOML document."""
    top = TomlTable(raw, "")
    file_dir = top.path("data_dir", None)
    chosen = (data_dir or file_dir or DEFAULT_DATA_DIR).absolute()
    listeners = _listeners(top.table("listeners"), chosen)
    replication = _replication(top.table("replication"))
    config = Config(
        data_dir=chosen,
        host=_host(top.table("host")),
        listeners=listeners,
        users=_users(top.table("users")),
        hypervisor=_hypervisor(top.table("hypervisor")),
        log=_log(top.table("log")),
        jobs=_jobs(top.table("jobs")),
        replication=replication,
        source=source,
        tls=_tls(top.table("tls"), replication),
        peer=_peer(top.table("peer"), listeners.https.address),
        replica=_replica(top.table("replica")),
    )
    top.finish()
    _check_ports(config.listeners)
    _check_peer_port(config)
    return config


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _host(table: TomlTable) -> HostConfig:
    name = table.string("name", None) or socket.gethostname()
    fqdn = table.string("fqdn", None) or _fqdn(name)
    table.finish()
    return HostConfig(name=name, fqdn=fqdn)


def _fqdn(name: str) -> str:
    fqdn = socket.getfqdn(name)
    # getfqdn answers "localhost" style names on hosts without DNS; keep the configured name then.
    return name if fqdn.startswith("localhost") else fqdn


def _listeners(table: TomlTable, data_dir: Path) -> Listeners:
    control_t, https_t, http_t = table.table("control"), table.table("https"), table.table("http")
    limits = _limits(table.table("limits"))
    table.finish()
    control = ControlListener(
        path=control_t.path("path", None) or data_dir / "control.sock",
        enabled=control_t.boolean("enabled", True),
    )
    control_t.finish()
    https = HttpsListener(
        enabled=https_t.boolean("enabled", True),
        address=https_t.address("address", "0.0.0.0"),
        port=https_t.port("port", 5989),
        cert_file=https_t.path("cert_file", None) or data_dir / "tls" / "host.crt",
        key_file=https_t.path("key_file", None) or data_dir / "tls" / "host.key",
    )
    https_t.finish()
    http = HttpListener(
        enabled=http_t.boolean("enabled", True),
        address=http_t.address("address", "127.0.0.1"),
        port=http_t.port("port", 5988),
    )
    http_t.finish()
    if http.enabled and not _is_loopback(http.address):
        raise ConfigError(
            f"listeners.http.address: plain HTTP may only listen on loopback (127.0.0.1 or ::1), "
            f"not {http.address!r}; use the HTTPS listener for remote clients"
        )
    return Listeners(control=control, https=https, http=http, limits=limits)


def _limits(table: TomlTable) -> ListenerLimits:
    d = ListenerLimits()
    result = ListenerLimits(
        header_timeout_seconds=table.number("header_timeout_seconds", d.header_timeout_seconds, low=0.1),
        body_timeout_seconds=table.number("body_timeout_seconds", d.body_timeout_seconds, low=0.1),
        idle_timeout_seconds=table.number("idle_timeout_seconds", d.idle_timeout_seconds, low=1.0),
        max_connections=_count(table, "max_connections", d.max_connections, low=0),
        per_client_connections=_count(table, "per_client_connections", d.per_client_connections, low=1),
        peer_per_client_connections=_count(table, "peer_per_client_connections",
                                           d.peer_per_client_connections, low=1),
        control_connections=_count(table, "control_connections", d.control_connections, low=1),
        rest_body_bytes=_count(table, "rest_body_bytes", d.rest_body_bytes, low=1024),
        cim_body_bytes=_count(table, "cim_body_bytes", d.cim_body_bytes, low=1024),
        peer_body_bytes=_count(table, "peer_body_bytes", d.peer_body_bytes, low=1024),
    )
    table.finish()
    if 0 < result.max_connections < 4:
        raise ConfigError("listeners.limits.max_connections: must be 0 (from the open-file limit) "
                          "or at least 4")
    return result


def _count(table: TomlTable, key: str, default: int, *, low: int) -> int:
    value = table.number(key, float(default), low=low)
    if not value.is_integer():
        raise ConfigError(f"listeners.limits.{key}: expected a whole number, got {value:g}")
    return int(value)


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    return ipaddress.ip_address(address).is_loopback


def _check_ports(listeners: Listeners) -> None:
    https, http = listeners.https, listeners.http
    if https.enabled and http.enabled and https.port == http.port:
        raise ConfigError(f"listeners.http.port and listeners.https.port are both {http.port}")


def _users(table: TomlTable) -> tuple[tuple[str, str], ...]:
    users: list[tuple[str, str]] = []
    for name in sorted(table.keys()):
        encoded = table.string(name, None)
        if not name or ":" in name:
            raise ConfigError(f"users: invalid user name {name!r} (non-empty, no ':')")
        if encoded is None:
            continue
        try:
            parse_hash(encoded)
        except PasswordHashError as exc:
            raise ConfigError(f"users.{name}: {exc}") from None
        users.append((name, encoded))
    return tuple(users)


def _hypervisor(table: TomlTable) -> HypervisorConfig:
    result = HypervisorConfig(
        accel=table.choice("accel", "auto", ACCEL_CHOICES),
        qemu_binary=table.string("qemu_binary", None) or "qemu-system-x86_64",
        stop_vms_on_exit=table.boolean("stop_vms_on_exit", False),
    )
    table.finish()
    return result


def _log(table: TomlTable) -> LogConfig:
    result = LogConfig(
        level=table.choice("level", "info", LOG_LEVELS),
        format=table.choice("format", "keyvalue", LOG_FORMATS),
        access_log=table.boolean("access_log", False),
    )
    table.finish()
    return result


def _jobs(table: TomlTable) -> JobsConfig:
    result = JobsConfig(
        purge_interval_seconds=table.number("purge_interval_seconds", 60.0, low=1.0),
        shutdown_grace_seconds=table.number("shutdown_grace_seconds", 10.0, low=0.0),
    )
    table.finish()
    return result


def _replication(table: TomlTable) -> ReplicationConfig:
    result = ReplicationConfig(
        connection_timeout_seconds=table.number("connection_timeout_seconds", 30.0, low=0.1),
        ca_file=table.path("ca_file", None),
    )
    table.finish()
    return result


def _replica(table: TomlTable) -> ReplicaConfig:
    result = ReplicaConfig(verify_writes=table.boolean("verify_writes", False))
    table.finish()
    return result


def _tls(table: TomlTable, replication: ReplicationConfig) -> TlsConfig:
    # ``[replication] ca_file`` came first (TestReplicationConnection); it stays a fallback.
    result = TlsConfig(ca_file=table.path("ca_file", None) or replication.ca_file)
    table.finish()
    return result


def _peer(table: TomlTable, https_address: str) -> PeerConfig:
    # By default the peer listener shares the HTTPS listener's address, so hosts on different loopback
    # addresses (tests, network namespaces) can all use the standard port.
    result = PeerConfig(
        enabled=table.boolean("enabled", True),
        address=table.address("address", https_address),
        port=table.port("port", 8443),
    )
    table.finish()
    return result


def _check_peer_port(config: Config) -> None:
    peer, listeners = config.peer, config.listeners
    if not peer.enabled or config.tls.ca_file is None:
        return
    for name, enabled, port in (("https", listeners.https.enabled, listeners.https.port),
                                ("http", listeners.http.enabled, listeners.http.port)):
        if enabled and port == peer.port:
            raise ConfigError(f"peer.port and listeners.{name}.port are both {port}")


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def to_toml(config: Config) -> str:
    """The effective configuration as a TOML document ``load_config`` reads back to the same values."""
    lines = [f"data_dir = {_q(str(config.data_dir))}", ""]
    sections: list[tuple[str, list[tuple[str, object]]]] = [
        ("host", [("name", config.host.name), ("fqdn", config.host.fqdn)]),
        ("listeners.control", [("enabled", config.listeners.control.enabled),
                               ("path", config.listeners.control.path)]),
        ("listeners.https", [("enabled", config.listeners.https.enabled),
                             ("address", config.listeners.https.address),
                             ("port", config.listeners.https.port),
                             ("cert_file", config.listeners.https.cert_file),
                             ("key_file", config.listeners.https.key_file)]),
        ("listeners.http", [("enabled", config.listeners.http.enabled),
                            ("address", config.listeners.http.address),
                            ("port", config.listeners.http.port)]),
        ("listeners.limits", [(f.name, getattr(config.listeners.limits, f.name))
                              for f in fields(ListenerLimits)]),
        ("users", list(config.users)),
        ("hypervisor", [("accel", config.hypervisor.accel), ("qemu_binary", config.hypervisor.qemu_binary)]),
        ("log", [("level", config.log.level), ("format", config.log.format),
                 ("access_log", config.log.access_log)]),
        ("jobs", [("purge_interval_seconds", config.jobs.purge_interval_seconds),
                  ("shutdown_grace_seconds", config.jobs.shutdown_grace_seconds)]),
        ("replication", [("connection_timeout_seconds", config.replication.connection_timeout_seconds),
                         ("ca_file", config.replication.ca_file)]),
        ("tls", [("ca_file", config.tls.ca_file)]),
        ("peer", [("enabled", config.peer.enabled), ("address", config.peer.address),
                  ("port", config.peer.port)]),
        ("replica", [("verify_writes", config.replica.verify_writes)]),
    ]
    for name, items in sections:
        lines.append(f"[{name}]")
        for key, value in items:
            if value is None:
                lines.append(f"# {key} is not set")
                continue
            shown_key = key if _BARE_KEY.match(key) else _q(key)
            lines.append(f"{shown_key} = {_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return _q(str(value))


def _q(text: str) -> str:
    # JSON string escapes are a subset of TOML basic-string escapes.
    return json.dumps(text, ensure_ascii=False)
