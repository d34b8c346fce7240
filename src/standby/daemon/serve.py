"""``standby serve``: one asyncio loop, one ASGI app, one uvicorn server per listener.

Before the loop starts, ``allocator.tune`` fixes glibc's malloc thresholds (logs stream through buffers of
64 KiB to a few MiB; with the default, dynamic thresholds most of them were fresh, page-faulting memory).

Start-up: set the umask to 0077 (every file and directory the daemon makes is its owner's only), raise the
soft open-file limit to the hard one (at most 65536), take the pid lock of the data directory, bind every
listener (so a busy port fails before any state changes), build the services, recover interrupted work, then
serve. The control socket is created with mode 0600; TCP listening sockets get TCP_NODELAY set explicitly
(accepted sockets inherit it).

Every listener accepts through ``daemon.listen.GuardedServer``: a connection budget below the open-file
limit with a per-client cap (``edge.limits``), header and body read deadlines (``edge.guard``), body size
limits per route (``edge.bodylimit`` for REST and peer JSON, the CIM-XML app's own for ``/cimom``); see
``[listeners.limits]`` in docs/configuration.md.

Shutdown on SIGTERM/SIGINT: stop accepting, let requests and running jobs finish for
``[jobs] shutdown_grace_seconds``, kill the cancellable jobs still running (the others are marked by
``recover_after_restart`` at the next start), close the database, release the lock. A second signal skips
the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import re
import resource
import signal
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import uvicorn
from starlette.routing import Route

from standby import __version__
from standby.api.app import create_app
from standby.cimxml import create_app as create_cimxml_app
from standby.daemon import allocator, group_wiring, primary_wiring
from standby.daemon.compose import Services, build_services
from standby.daemon.config import Config
from standby.daemon.listen import GuardedServer, Guarding
from standby.daemon.lockfile import PidLock
from standby.daemon.tls import ensure_certificate
from standby.domain.enums import JobState
from standby.domain.errors import Unavailable
from standby.edge.asgi import ASGIApp
from standby.edge.audit import audited
from standby.edge.bodylimit import BodyLimit, Exempt
from standby.edge.gate import AuthGuard, ListenerGate, ListenerKind, Verifier
from standby.edge.guard import Deadlines, GuardedHttpToolsProtocol
from standby.edge.limits import ConnectionBudget, Door, Doors, connection_cap
from standby.hypervisor.qemu.driver import QemuHypervisor
from standby.peer.app import KEEP_ALIVE as PEER_KEEP_ALIVE
from standby.peer.app import PeerHttpToolsProtocol, create_peer_app
from standby.peer.routes import PeerServices

CIMOM_PATH = "/cimom"
#: The soft open-file limit the daemon raises itself to when the hard limit allows (the shipped unit sets
#: both to this): systemd's default soft limit of 1024 is what a flood of 1,008 connections exhausted.
WANTED_NOFILE = 65536
log = logging.getLogger("standby.daemon")


@dataclass
class Listener:
    """One bound socket and how to serve it."""

    kind: ListenerKind | Literal["peer"]
    sock: socket.socket
    where: str
    tls: bool = False


@dataclass(frozen=True, slots=True)
class Guards:
    """The shared connection budget, the doors of the listeners, the read deadlines and the password
    check's limiter and pool (one for every listener)."""

    budget: ConnectionBudget
    doors: Doors
    deadlines: Deadlines
    auth: AuthGuard

    def door(self, kind: ListenerKind | Literal["peer"]) -> Door:
        """The door of a listener kind."""
        return {"control": self.doors.control, "https": self.doors.public, "http": self.doors.http,
                "peer": self.doors.peer}[kind]


def run(config: Config) -> int:
    """Serve until a signal arrives; the process exit code (0 after a graceful stop)."""
    allocator.tune()
    return asyncio.run(serve(config))


async def serve(config: Config) -> int:
    """The daemon's main coroutine (see the module docstring)."""
    os.umask(0o077)  # the data dir holds keys, disk images and the database: nothing is for other users
    nofile = raise_file_limit(WANTED_NOFILE)
    _make_data_dir(config.data_dir)
    with PidLock(config.lock_path):
        _prepare_tls(config)
        listeners = bind_listeners(config)
        try:
            services = build_services(config)
        except BaseException:
            _close_listeners(config, listeners)
            raise
        try:
            await services.recover()
            return await _serve(config, services, listeners, make_guards(config, nofile))
        finally:
            services.close()
            _close_listeners(config, listeners)
            log.info("daemon stopped", extra={"fields": {"pid": os.getpid()}})


async def _serve(config: Config, services: Services, listeners: list[Listener], guards: Guards) -> int:
    limits = config.listeners.limits
    fastapi_app = create_app(services)
    # The CIM-XML app answers ``POST /cimom`` itself: routed unchanged (a Mount would strip the prefix).
    cimom = create_cimxml_app(services.object_manager, services.verifier, host_name=services.config.host.fqdn,
                              max_body=limits.cim_body_bytes)
    fastapi_app.router.routes.append(Route(CIMOM_PATH, endpoint=cimom, include_in_schema=False))
    log.info("CIM-XML mounted", extra={"fields": {"path": CIMOM_PATH}})
    # ``/cimom`` has its own (larger) limit, checked by the CIM-XML app before it parses anything.
    cimom_route = Exempt("POST", re.compile(re.escape(CIMOM_PATH)))
    app = BodyLimit(fastapi_app, limits.rest_body_bytes, exempt=[cimom_route])
    servers = [_peer_server(config, services, guards) if listener.kind == "peer"
               else _server(config, app, listener, services.verifier, guards) for listener in listeners]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, signum, stop, servers)
    tasks = [asyncio.create_task(server.serve(sockets=[lst.sock]), name=f"serve-{lst.kind}")
             for server, lst in zip(servers, listeners, strict=True)]
    purger = asyncio.create_task(_purge_loop(services), name="purge-jobs")
    primary_wiring.start(services)  # replication cycles, after start-up recovery
    group_wiring.start(services)  # group cycles of replicating collections
    log.info("daemon started", extra={"fields": {
        "version": __version__, "pid": os.getpid(), "data_dir": str(config.data_dir),
        "listeners": ",".join(f"{lst.kind}={lst.where}" for lst in listeners)}})
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in tasks if t in done]
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    purger.cancel()
    stopper.cancel()
    await group_wiring.stop(services)
    await primary_wiring.stop(services)
    await _drain_jobs(services, config.jobs.shutdown_grace_seconds, forced=any(s.force_exit for s in servers))
    hypervisor = services.hypervisor
    if isinstance(hypervisor, QemuHypervisor):
        if config.hypervisor.stop_vms_on_exit:
            await hypervisor.close()
        else:  # the VMs keep running; the next daemon re-attaches to them
            await hypervisor.detach()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)
    if failed and not stop.is_set():
        log.error("a listener stopped unexpectedly", extra={"fields": {"listener": failed[0].get_name()}})
        return 1
    return 0


def _on_signal(signum: int, stop: asyncio.Event, servers: list[GuardedServer]) -> None:
    if stop.is_set():
        for server in servers:
            server.force_exit = True
        log.warning("second signal: stopping without grace period")
        return
    log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
    stop.set()


async def _drain_jobs(services: Services, grace: float, *, forced: bool) -> None:
    """Wait up to ``grace`` s for running jobs, then kill the cancellable rest."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (0.0 if forced else grace)
    for listed in services.jobs.list():
        if listed.state.is_terminal:
            continue
        remaining = max(deadline - loop.time(), 0.0)
        job = listed
        with contextlib.suppress(Exception):
            job = await services.jobs.wait(listed.job_id, remaining)
        if job.state.is_terminal:
            continue
        if job.cancellable:
            services.jobs.cancel(job.job_id, True)
            with contextlib.suppress(Exception):
                await services.jobs.wait(job.job_id, 2.0)
        log.warning("job still running at shutdown", extra={"fields": {
            "job": job.job_id, "state": JobState(job.state).name, "cancellable": job.cancellable}})


async def _purge_loop(services: Services) -> None:
    interval = services.config.jobs.purge_interval_seconds
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(services.jobs.purge_expired, services.clock())
        except Exception:
            log.exception("purging finished jobs failed")


def raise_file_limit(wanted: int) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` towards ``wanted`` as far as the hard limit allows; the soft limit
    then in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft if soft != resource.RLIM_INFINITY else wanted


def make_guards(config: Config, nofile: int) -> Guards:
    """The connection budget and deadlines for the configured limits and the open-file limit ``nofile``."""
    limits = config.listeners.limits
    cap = limits.max_connections or connection_cap(nofile)
    doors = Doors.for_cap(cap, per_client=limits.per_client_connections,
                          peer_per_client=limits.peer_per_client_connections,
                          control=limits.control_connections)
    log.info("listener limits", extra={"fields": {
        "open_files": nofile, "connections": cap, "public_connections": doors.public.ceiling,
        "per_client": limits.per_client_connections, "control": limits.control_connections,
        "header_timeout": limits.header_timeout_seconds, "body_timeout": limits.body_timeout_seconds}})
    return Guards(ConnectionBudget(logging.getLogger("standby.listeners")), doors,
                  Deadlines(limits.header_timeout_seconds, limits.body_timeout_seconds), AuthGuard())


def _server(config: Config, app: ASGIApp, listener: Listener, verifier: Verifier,
            guards: Guards) -> GuardedServer:
    assert listener.kind != "peer"
    https = config.listeners.https
    pair = (str(https.cert_file), str(https.key_file)) if listener.tls else None
    gated = ListenerGate(app, listener.kind, verifier, guard=guards.auth)
    uv_config = _uvicorn_config(config, gated, GuardedHttpToolsProtocol,
                                math.ceil(config.listeners.limits.idle_timeout_seconds), pair)
    guarding = Guarding(GuardedHttpToolsProtocol, guards.door(listener.kind), guards.budget, guards.deadlines)
    return GuardedServer(uv_config, guarding)


def _peer_server(config: Config, services: Services, guards: Guards) -> GuardedServer:
    """The host-to-host listener: TLS with a required client certificate from the site CA, ``/peer/v1``."""
    https = config.listeners.https
    assert config.tls.ca_file is not None
    peer = PeerServices(services.replica, services.planned.target, services.groups.planned_move,
                        services.host)
    app = audited(create_peer_app(peer, https.cert_file, max_body=config.listeners.limits.peer_body_bytes),
                  "peer")
    pair = (str(https.cert_file), str(https.key_file))
    uv_config = _uvicorn_config(config, app, PeerHttpToolsProtocol, PEER_KEEP_ALIVE, pair,
                                client_ca=str(config.tls.ca_file))
    return GuardedServer(uv_config, Guarding(PeerHttpToolsProtocol, guards.doors.peer, guards.budget,
                                             guards.deadlines))


def _uvicorn_config(config: Config, app: ASGIApp, protocol: type[GuardedHttpToolsProtocol], keep_alive: int,
                    tls: tuple[str, str] | None, *, client_ca: str | None = None) -> uvicorn.Config:
    """What every listener's uvicorn server shares: no websockets, no lifespan, our logging, no server or
    proxy headers, the jobs' grace at shutdown. ``tls``: certificate and key files (None: plain);
    ``client_ca``: require a client certificate of that CA."""
    return uvicorn.Config(
        app,
        http=protocol,
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=config.log.access_log,
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=keep_alive,
        timeout_graceful_shutdown=max(int(config.jobs.shutdown_grace_seconds), 1),
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
        ssl_ca_certs=client_ca,
        ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca else ssl.CERT_NONE,
    )


def _make_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = path / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise Unavailable(f"cannot use the data directory {path}: {reason}", message_id="DataDirUnusable",
                          path=str(path), reason=reason) from None


def _prepare_tls(config: Config) -> None:
    https = config.listeners.https
    if not https.enabled:
        return
    thumbprint = ensure_certificate(https.cert_file, https.key_file, [config.host.fqdn, config.host.name])
    if thumbprint:
        log.warning("created a self-signed HTTPS certificate", extra={"fields": {
            "cert": str(https.cert_file), "thumbprint": thumbprint}})


def bind_listeners(config: Config) -> list[Listener]:
    """Bind every enabled listener now, so a busy port or bad path fails with one clear error."""
    listeners: list[Listener] = []
    try:
        if config.listeners.control.enabled:
            path = config.listeners.control.path
            listeners.append(Listener("control", _bind_unix(path), str(path)))
        https, http = config.listeners.https, config.listeners.http
        if https.enabled:
            listeners.append(Listener("https", _bind_tcp(https.address, https.port),
                                      f"{https.address}:{https.port}", tls=True))
        if http.enabled:
            listeners.append(Listener("http", _bind_tcp(http.address, http.port),
                                      f"{http.address}:{http.port}"))
        peer = config.peer
        if peer.enabled and config.tls.ca_file is not None:  # peers need the site CA to be verified
            listeners.append(Listener("peer", _bind_tcp(peer.address, peer.port),
                                      f"{peer.address}:{peer.port}", tls=True))
    except BaseException:
        _close_listeners(config, listeners)
        raise
    return listeners


def _bind_unix(path: Path) -> socket.socket:
    # We hold the data directory's lock, so a socket file left here belongs to a dead daemon.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # never visible with wider permissions, not even briefly
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise Unavailable(f"cannot create the control socket {path}: {exc.strerror}",
                          message_id="ListenFailed", where=str(path), reason=str(exc.strerror)) from None
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _bind_tcp(address: str, port: int) -> socket.socket:
    host = "127.0.0.1" if address == "localhost" else address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise Unavailable(f"cannot listen on {address}:{port}: {reason}", message_id="ListenFailed",
                          where=f"{address}:{port}", reason=reason) from None
    # asyncio only sets TCP_NODELAY when sock.proto == IPPROTO_TCP, and create_server leaves proto 0; accepted
    # sockets inherit it from the listener (without it every response waits ~40 ms for a delayed ACK).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def _close_listeners(config: Config, listeners: list[Listener]) -> None:
    for listener in listeners:
        with contextlib.suppress(OSError):
            listener.sock.close()
        if listener.kind == "control":
            with contextlib.suppress(FileNotFoundError):
                config.listeners.control.path.unlink()
