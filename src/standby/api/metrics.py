"""``/metrics`` in the Prometheus text format, read from the live services at each scrape."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from standby import __version__
from standby.domain.enums import JobState

if TYPE_CHECKING:
    from standby.api.deps import Services

router = APIRouter(tags=["status"])


class ServicesCollector(Collector):
    """Gauges computed from the store and the job manager when Prometheus scrapes."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def collect(self) -> Iterator[GaugeMetricFamily | InfoMetricFamily]:
        """Yield every standby metric family."""
        services = self._services
        info = InfoMetricFamily("standby", "standby daemon build and host")
        info.add_metric([], {"version": __version__, "host": services.host.name})
        yield info
        uptime = (services.clock() - services.started_at).total_seconds()
        yield GaugeMetricFamily("standby_uptime_seconds", "seconds since the daemon started", value=uptime)
        yield GaugeMetricFamily("standby_vms", "virtual machines defined on this host",
                                value=len(services.engine.inventory.vms()))
        yield GaugeMetricFamily("standby_relationships", "replication relationships on this host",
                                value=len(services.engine.inventory.relationships()))
        jobs = GaugeMetricFamily("standby_jobs", "jobs the daemon keeps, by state", labels=["state"])
        counts = Counter(job.state for job in services.jobs.list())
        for state in JobState:
            jobs.add_metric([state.name.lower()], counts.get(state, 0))
        yield jobs


def make_registry(services: Services) -> CollectorRegistry:
    """A registry of our own (not the process-global one) so tests can build many apps."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServicesCollector(services))
    return registry


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """The text exposition format."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
