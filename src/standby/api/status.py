"""``/healthz``, ``/api/v1/status`` and the host-to-host ping ``/peer/v1/ping``."""

from __future__ import annotations

from fastapi import APIRouter

from standby import __version__
from standby.api.deps import ServicesDep, UserDep
from standby.domain.enums import JobState
from standby.engine.connection import PING_PATH, SERVICE_NAME

router = APIRouter()


@router.get("/healthz", tags=["status"], summary="Liveness")
def healthz() -> dict[str, str]:
    """Answers while the daemon serves requests; needs no credentials."""
    return {"status": "ok"}


@router.get("/api/v1/status", tags=["status"], summary="Daemon status")
def status(services: ServicesDep, user: UserDep) -> dict[str, object]:
    """Version, host, uptime and how many VMs, relationships and running jobs there are."""
    now = services.clock()
    running = sum(1 for job in services.jobs.list() if job.state in (JobState.NEW, JobState.RUNNING))
    return {
        "version": __version__,
        "host": {"name": services.host.name, "fqdn": services.host.fqdn},
        "data_dir": str(services.data_dir),
        "started_at": services.started_at.isoformat(),
        "uptime_seconds": round((now - services.started_at).total_seconds(), 3),
        "user": user,
        "counts": {
            "vms": len(services.engine.inventory.vms()),
            "relationships": len(services.engine.inventory.relationships()),
            "jobs_running": running,
        },
    }


@router.get(PING_PATH, tags=["peer"], summary="Peer ping")
def peer_ping(services: ServicesDep) -> dict[str, str]:
    """What TestReplicationConnection on another host expects to find here."""
    return {
        "service": SERVICE_NAME,
        "host": services.host.name,
        "fqdn": services.host.fqdn,
        "version": __version__,
    }
