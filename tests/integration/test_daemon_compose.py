"""The composition root on a real SQLite file: services, host identity, start-up recovery hooks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from standby.daemon.compose import Services, build_services
from standby.daemon.config import Config, parse_config
from standby.domain.entities import Job
from standby.domain.enums import JobState, JobType
from standby.domain.errors import StandbyError
from standby.store.sqlite import Database


def _config(data_dir: Path, name: str = "hv1") -> Config:
    return parse_config({"host": {"name": name, "fqdn": f"{name}.example"}}, data_dir=data_dir)


def test_services_are_built_and_closed(tmp_path: Path) -> None:
    async def scenario() -> None:
        services = build_services(_config(tmp_path))
        try:
            assert services.db.path == str(tmp_path / "standby.db")
            assert services.host.name == "hv1"
            assert services.connection_tester.timeout == 30.0
            assert services.jobs.list() == []
        finally:
            services.close()

    asyncio.run(scenario())
    assert (tmp_path / "standby.db").exists()


def test_host_identity_survives_restarts_and_renames(tmp_path: Path) -> None:
    async def open_host(name: str) -> tuple[str, list[str]]:
        services = build_services(_config(tmp_path, name))
        try:
            return services.host.host_id, [h.name for h in services.db.hosts.list()]
        finally:
            services.close()

    first_id, first_hosts = asyncio.run(open_host("hv1"))
    again_id, _ = asyncio.run(open_host("hv1"))
    renamed_id, renamed_hosts = asyncio.run(open_host("hv2"))
    assert first_id == again_id == renamed_id
    assert (tmp_path / "host-id").read_text().strip() == first_id
    assert first_hosts == ["hv1"]
    assert renamed_hosts == ["hv2"]


def test_recovery_ends_interrupted_jobs_then_runs_hooks_in_order(tmp_path: Path) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with Database.open(tmp_path / "standby.db") as db:
        db.jobs.insert(Job(job_id="J-RUNNING", job_type=JobType.TEST_REPLICATION_CONNECTION,
                           state=JobState.RUNNING, submitted_at=now, started_at=now, cancellable=True,
                           element_id="connection:x:1"))
    calls: list[str] = []

    def first(services: Services) -> None:
        # Hooks run after the jobs were settled.
        calls.append(f"first:{services.jobs.get('J-RUNNING').state.name}")

    def broken(services: Services) -> None:
        calls.append("broken")
        raise RuntimeError("hook failure must not stop the daemon")

    async def later(services: Services) -> None:
        await asyncio.sleep(0)
        calls.append("async")

    async def scenario() -> Job:
        services = build_services(_config(tmp_path))
        try:
            services.add_recovery_hook("first", first)
            services.add_recovery_hook("broken", broken)
            services.add_recovery_hook("async", later)
            await services.recover()
            return services.jobs.get("J-RUNNING")
        finally:
            services.close()

    job = asyncio.run(scenario())
    assert calls == ["first:EXCEPTION", "broken", "async"]
    assert job.state is JobState.EXCEPTION
    assert job.error_message_id == "JobInterruptedByRestart"


def test_closers_run_before_the_database_closes(tmp_path: Path) -> None:
    order: list[str] = []

    async def scenario() -> None:
        services = build_services(_config(tmp_path))
        services.closers.append(lambda: order.append("a"))
        services.closers.append(lambda: order.append(f"b:{len(services.db.jobs.list())}"))
        services.close()

    asyncio.run(scenario())
    assert order == ["b:0", "a"]


def test_an_unusable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StandbyError):
        build_services(_config(blocker / "data"))


def test_the_replica_side_tells_extended_replication_of_points_and_heartbeats(tmp_path: Path) -> None:
    async def scenario() -> None:
        services = build_services(_config(tmp_path))
        try:
            assert services.planned is not None and services.replica is not None
            extended, replica = services.planned.extended, services.replica
            assert extended.on_point in replica.applier.point_listeners
            assert extended.on_heartbeat in replica.heartbeat_listeners
            assert extended.chain_lock == replica.applier.lock
        finally:
            services.close()

    asyncio.run(scenario())
