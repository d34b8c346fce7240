"""The composition root: build every service of the daemon from its configuration.

``build_services(config)`` opens the store, creates the job manager and the use cases, and returns them as
``Services``; ``serve.py`` wires them to the listeners, ``api.app.create_app`` to routes. Nothing else
constructs these objects, so swapping an implementation is a change here only.

Start-up recovery: ``Services.recover()`` first ends jobs a previous daemon left running
(``JobManager.recover_after_restart``), then runs the registered recovery hooks in order. A use case that
keeps intent state (spec: "an intent state is written before side effects") registers its hook here with
one line, ``services.add_recovery_hook("name", hook)``, inside ``build_services``; a hook is
``hook(services)`` returning None or an awaitable. A failing hook is logged and does not stop the daemon.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from standby.cim.backend import ObjectManager
from standby.daemon.config import Config
from standby.daemon.passwords import PasswordVerifier
from standby.domain.entities import Host
from standby.engine.connection import ReplicationConnectionTester
from standby.engine.jobs import JobManager
from standby.store.sqlite import Database

log = logging.getLogger("standby.daemon")

Clock = Callable[[], datetime]
RecoveryHook = Callable[["Services"], Awaitable[None] | None]
#: Holds this host's GUID inside the data directory.
HOST_ID_FILE = "host-id"


def utc_now() -> datetime:
    """The daemon's clock: aware UTC now."""
    return datetime.now(UTC)


@dataclass(eq=False)
class Services:
    """Everything the daemon's surfaces (REST, CIM-XML, CLI via REST) call."""

    config: Config
    clock: Clock
    db: Database
    jobs: JobManager
    verifier: PasswordVerifier
    connection_tester: ReplicationConnectionTester
    started_at: datetime
    host: Host
    #: Helper D's QEMU driver (``hypervisor.port.Hypervisor``); None while it is not importable.
    hypervisor: Any | None = None
    #: Helper D's VM life-cycle use cases (``engine.vms.VmUseCases``); None without a hypervisor.
    vms: Any | None = None
    #: Helper C's ``cim.object_manager``; None while it is not importable (then ``/cimom`` is not served).
    object_manager: ObjectManager | None = None
    #: Helper P's primary side of replication (``daemon/primary_wiring.Primary``); None without a hypervisor.
    primary: Any | None = None
    #: Helper F's failover use cases (``engine.failover.FailoverUseCases``); None without a hypervisor.
    failover: Any | None = None
    #: Helper R's replica side (``engine.replica.ReplicaUseCases``): the peer routes call it.
    replica: Any | None = None
    #: Helper PF's planned failover, reverse and extended replication (``engine.planned.PlannedServices``).
    planned: Any | None = None
    #: Helper G's collections and redundancy sets (``daemon/group_wiring.Groups``).
    groups: Any | None = None
    recovery_hooks: list[tuple[str, RecoveryHook]] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def add_recovery_hook(self, name: str, hook: RecoveryHook) -> None:
        """Run ``hook(services)`` at start-up, after jobs are recovered, in registration order."""
        self.recovery_hooks.append((name, hook))

    async def recover(self) -> None:
        """Start-up recovery: interrupted jobs first, then every hook."""
        await asyncio.to_thread(self.jobs.recover_after_restart)
        for name, hook in self.recovery_hooks:
            try:
                outcome = hook(self)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                log.exception("recovery hook failed", extra={"fields": {"hook": name}})
            else:
                log.info("recovery hook done", extra={"fields": {"hook": name}})

    def close(self) -> None:
        """Release what the services hold (closers in reverse order, the database last)."""
        for closer in reversed(self.closers):
            try:
                closer()
            except Exception:
                log.exception("closing a service failed")
        self.db.close()


def build_services(
    config: Config, *, clock: Clock = utc_now, loop: asyncio.AbstractEventLoop | None = None,
    db: Database | None = None,
) -> Services:
    """Open the store and build every service (call it on the daemon's event loop, or pass ``loop``)."""
    database = db if db is not None else Database.open(config.database_path)
    try:
        jobs = JobManager(database, clock, loop=loop)
        services = Services(
            config=config,
            clock=clock,
            db=database,
            jobs=jobs,
            verifier=PasswordVerifier(config.users_map),
            connection_tester=ReplicationConnectionTester(
                jobs,
                timeout=config.replication.connection_timeout_seconds,
                ca_file=config.tls.ca_file,
                client_cert=(config.listeners.https.cert_file, config.listeners.https.key_file),
            ),
            started_at=clock(),
            host=local_host(config, database),
        )
        services.hypervisor = _build_hypervisor(services)
        services.vms = _build_vms(services)
        services.primary = _build_primary(services)
        services.replica = _build_replica(services)
        services.failover = _build_failover(services)
        services.planned = _build_planned(services)
        services.groups = _build_groups(services)
        services.object_manager = _build_object_manager(services)
    except BaseException:
        database.close()
        raise
    return services


def local_host(config: Config, db: Database) -> Host:
    """This host's identity: a GUID kept in ``<data-dir>/host-id`` and its row in ``db.hosts``."""
    id_file = config.data_dir / HOST_ID_FILE
    try:
        host_id = id_file.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        host_id = ""
    if not host_id:
        host_id = str(uuid.uuid4()).upper()
        id_file.write_text(host_id + "\n", encoding="ascii")
    host = Host(host_id=host_id, name=config.host.name, fqdn=config.host.fqdn)
    stored = db.hosts.find(host_id)
    if stored is None:
        db.hosts.insert(host)
    elif stored != host:
        db.hosts.update(host)  # renamed host: keep the identity, take the new names
    return host


def _build_hypervisor(services: Services) -> Any | None:
    """Helper D's QEMU driver (None while ``hypervisor.qemu.driver`` is not there)."""
    try:
        from standby.hypervisor.qemu.driver import QemuHypervisor
    except ModuleNotFoundError as exc:
        log.info("no hypervisor driver yet", extra={"fields": {"missing": exc.name}})
        return None
    config = services.config
    return QemuHypervisor(config.data_dir / "run", accel=config.hypervisor.accel,
                          binary=config.hypervisor.qemu_binary)


def _build_vms(services: Services) -> Any | None:
    """Helper D's VM use cases over the hypervisor; they mark VMs lost while the daemon was down."""
    if services.hypervisor is None:
        return None
    from standby.engine.vms import VmUseCases
    from standby.hypervisor.qemu.images import QemuImages

    vms = VmUseCases(services.db, services.hypervisor, services.clock,
                     vm_dir=services.config.data_dir / "vms", images=QemuImages(), jobs=services.jobs)
    services.add_recovery_hook("vms", _recover_vms)
    return vms


def _recover_vms(services: Services) -> None:
    if services.vms is not None:
        services.vms.recover()


def _build_failover(services: Services) -> Any | None:
    """Helper F's failover use cases (``daemon/failover_wiring.py``)."""
    from standby.daemon.failover_wiring import build

    return build(services)


def _build_replica(services: Services) -> Any | None:
    """Helper R's replica side (``peer/wiring.py``): applier, retention, replica use cases."""
    from standby.peer.wiring import build

    return build(services)


def _build_planned(services: Services) -> Any:
    """Helper PF's planned failover, reverse and extended replication (``engine.planned.build``)."""
    from standby.daemon.primary_wiring import peer_factory
    from standby.engine.planned import build

    primary = services.primary
    return build(services.db, services.clock, services.jobs, primary.runner if primary else None,
                 peer_factory(services) if primary else None, host_name=services.config.host.fqdn,
                 lock=services.replica.applier.lock if services.replica else None,
                 point_listeners=services.replica.applier.point_listeners if services.replica else None,
                 heartbeat_listeners=services.replica.heartbeat_listeners if services.replica else None)


def _build_groups(services: Services) -> Any:
    """Helper G's collections and redundancy sets (``daemon/group_wiring.py``)."""
    from standby.daemon.group_wiring import build

    return build(services)


def _build_primary(services: Services) -> Any | None:
    """Helper P's primary side of replication (``daemon/primary_wiring.py``)."""
    from standby.daemon.primary_wiring import build

    primary = build(services)
    if primary is not None and services.hypervisor is not None:  # helper Y: last cycle at a clean stop
        services.hypervisor.subscribe(primary.scheduler.on_vm_event)
    return primary


def _build_object_manager(services: Services) -> ObjectManager | None:
    """Helper C's CIM object model over these services (None while ``cim.object_manager`` is not there)."""
    try:
        from standby.cim.object_manager import build_object_manager
        from standby.cim.runtime import CimRuntime
        from standby.cim.schema import load_schema
        from standby.engine.collections import CollectionUseCases
        from standby.engine.replication import ReplicationUseCases
    except ModuleNotFoundError as exc:
        log.info("no CIM object model yet", extra={"fields": {"missing": exc.name}})
        return None
    db, clock = services.db, services.clock
    runtime = CimRuntime(
        db=db,
        clock=clock,
        host=services.host,
        schema=load_schema(),
        replication=ReplicationUseCases(db, clock,
                                        certificate_path=services.config.listeners.https.cert_file),
        collections=CollectionUseCases(db, clock),
        jobs=services.jobs,
        connection_tester=services.connection_tester,
        services=services,
    )
    return build_object_manager(runtime)
