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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from standby.cim.backend import ObjectManager
from standby.daemon.config import Config
from standby.daemon.passwords import PasswordVerifier
from standby.engine.connection import ReplicationConnectionTester
from standby.engine.jobs import JobManager
from standby.store.sqlite import Database

log = logging.getLogger("standby.daemon")

Clock = Callable[[], datetime]
RecoveryHook = Callable[["Services"], Awaitable[None] | None]


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
    #: Seam for helper D's QEMU driver (``hypervisor.port.Hypervisor``); None until it is wired in.
    hypervisor: Any | None = None
    #: Seam for helper C's ``cim.object_manager``; None until it is wired in (then ``/cimom`` is served).
    object_manager: ObjectManager | None = None
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
                ca_file=config.replication.ca_file,
            ),
            started_at=clock(),
        )
        services.hypervisor = _build_hypervisor(services)
        services.object_manager = _build_object_manager(services)
    except BaseException:
        database.close()
        raise
    return services


def _build_hypervisor(services: Services) -> Any | None:
    """Seam: helper D's QEMU driver, built from ``config.hypervisor`` once ``hypervisor/qemu`` provides it."""
    return None


def _build_object_manager(services: Services) -> ObjectManager | None:
    """Seam: helper C's ``cim.object_manager``, built from the services once it exists."""
    return None
