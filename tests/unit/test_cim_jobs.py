"""Msvm_ConcreteJob over the real JobManager on a real loop: properties, GetError, RequestStateChange."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pywbem import CIMDateTime, CIMInstanceName

from standby.cim.backend import RequestContext
from standby.domain.entities import Job
from standby.domain.enums import JobState, JobType
from standby.domain.errors import InvalidState
from standby.engine.jobs import JobHandle, JobManager
from tests.unit.test_cim_support import CLUSTER, VIRT, World, make_world, parse_embedded, service_path


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.close()


@pytest.fixture
def world(loop: asyncio.AbstractEventLoop) -> World:
    return make_world(loop=loop, world_clock=lambda: datetime.now(UTC))


def _jobs(world: World) -> JobManager:
    return world.runtime.engine.jobs


def _wait(world: World, loop: asyncio.AbstractEventLoop, job: Job) -> Job:
    future = asyncio.run_coroutine_threadsafe(_jobs(world).wait(job.job_id, 10), loop)
    return future.result(timeout=15)


def _path(job: Job, namespace: str = VIRT) -> CIMInstanceName:
    return CIMInstanceName("Msvm_ConcreteJob", {"InstanceID": job.job_id}, namespace=namespace)


def _failing(world: World, loop: asyncio.AbstractEventLoop) -> Job:
    async def work(handle: JobHandle) -> None:
        handle.progress(40)
        raise InvalidState("the relationship is suspended", message_id="PreconditionModeState",
                           operation="initiate_failover", mode="replica", state="suspended", required="x")

    job = _jobs(world).submit(JobType.INITIATE_FAILOVER, element_id="VM-1", description="Fail over web01",
                              work=work)
    return _wait(world, loop, job)


def _blocked(world: World, *, cancellable: bool) -> tuple[Job, threading.Event]:
    release = threading.Event()

    async def work(handle: JobHandle) -> None:
        while not release.is_set():
            handle.raise_if_cancelled()
            await asyncio.sleep(0.01)

    job = _jobs(world).submit(JobType.RESYNCHRONIZING, element_id="VM-2", description="resync",
                              work=work, cancellable=cancellable)
    return job, release


def test_failed_job_properties(world: World, loop: asyncio.AbstractEventLoop) -> None:
    job = _failing(world, loop)
    for ns in (VIRT, CLUSTER):
        instance = world.om.get_instance(_path(job, ns), RequestContext())
        assert instance["JobState"] == JobState.EXCEPTION and instance["ErrorCode"] == 32775
        assert instance["JobType"] == 97 and instance["PercentComplete"] == 40
        assert instance["OperationalStatus"] == [6] and instance["StatusDescriptions"] == ["Error"]
        assert "suspended" in instance["ErrorDescription"]
        assert instance["ErrorSummaryDescription"]
        submitted = instance["TimeSubmitted"]
        assert isinstance(submitted, CIMDateTime) and not submitted.is_interval
        assert instance["ElapsedTime"].is_interval
        assert str(instance["TimeBeforeRemoval"]) == "00000000000500.000000:000"
        assert instance["DeleteOnCompletion"] is True and instance["Cancellable"] is False


def test_error_texts_follow_the_request_language(world: World, loop: asyncio.AbstractEventLoop) -> None:
    job = _failing(world, loop)
    english = world.om.get_instance(_path(job), RequestContext(language="en"))
    german = world.om.get_instance(_path(job), RequestContext(language="de"))
    assert german["ErrorSummaryDescription"] != english["ErrorSummaryDescription"]
    assert german["ErrorSummaryDescription"] == "Ungültiger Status für diesen Vorgang"
    assert german["ErrorDescription"] != english["ErrorDescription"]
    assert german["JobStatus"] != english["JobStatus"]


def test_get_error_returns_an_embedded_msvm_error(world: World, loop: asyncio.AbstractEventLoop) -> None:
    job = _failing(world, loop)
    code, out = world.invoke(_path(job), "GetError")
    assert code == 0
    error = parse_embedded(str(out["Error"]))
    assert error.classname == "Msvm_Error"
    assert error["MessageID"] == "PreconditionModeState" and error["OwningEntity"] == "standby"
    assert "suspended" in error["Message"] and error["CIMStatusCode"] == 1
    assert error["ErrorSource"] == str(_path(job))
    code, out = world.invoke(_path(job), "GetErrorEx")
    assert code == 0 and [parse_embedded(e)["MessageID"] for e in out["Errors"]] == ["PreconditionModeState"]


def test_completed_job_has_no_error_and_cannot_be_cancelled(world: World,
                                                             loop: asyncio.AbstractEventLoop) -> None:
    async def work(handle: JobHandle) -> dict[str, str]:
        return {"ResultingSystem": "X"}

    job = _wait(world, loop, _jobs(world).submit(JobType.REMOVE_TEST_REPLICA, element_id="VM-3",
                                                 description="done", work=work))
    instance = world.om.get_instance(_path(job), RequestContext())
    assert instance["JobState"] == JobState.COMPLETED and instance["ErrorCode"] == 0
    assert instance["OperationalStatus"] == [2] and instance["ErrorDescription"] == ""
    assert world.invoke(_path(job), "GetError") == (0, {"Error": None})
    assert world.invoke(_path(job), "GetErrorEx") == (0, {"Errors": []})
    assert world.invoke(_path(job), "RequestStateChange", RequestedState="4")[0] == 4097


def test_terminate_a_cancellable_job(world: World, loop: asyncio.AbstractEventLoop) -> None:
    job, release = _blocked(world, cancellable=True)
    try:
        assert world.invoke(_path(job), "RequestStateChange", RequestedState="4")[0] == 0
        assert _wait(world, loop, job).state == JobState.TERMINATED
    finally:
        release.set()


def test_kill_a_cancellable_job(world: World, loop: asyncio.AbstractEventLoop) -> None:
    job, release = _blocked(world, cancellable=True)
    try:
        assert world.invoke(_path(job), "RequestStateChange", RequestedState="5")[0] == 0
        assert _wait(world, loop, job).state == JobState.KILLED
    finally:
        release.set()


def test_non_cancellable_and_other_states_are_not_supported(world: World,
                                                            loop: asyncio.AbstractEventLoop) -> None:
    job, release = _blocked(world, cancellable=False)
    try:
        assert world.invoke(_path(job), "RequestStateChange", RequestedState="4")[0] == 1
        for other in ("2", "3", "6", "40000"):
            assert world.invoke(_path(job), "RequestStateChange", RequestedState=other)[0] == 1
        assert world.invoke(_path(job), "RequestStateChange", RequestedState="x")[0] == 5  # invalid parameter
        instance = world.om.get_instance(_path(job), RequestContext())
        assert instance["JobState"] in (JobState.NEW, JobState.RUNNING)
    finally:
        release.set()
    assert _wait(world, loop, job).state == JobState.COMPLETED


def test_job_started_by_a_method_is_returned_as_a_reference(world: World,
                                                             loop: asyncio.AbstractEventLoop) -> None:
    code, out = world.invoke(service_path(), "TestReplicationConnection", RecoveryConnectionPoint="127.0.0.1",
                             RecoveryServerPortNumber="1", AuthenticationType="2",
                             CertificateThumbPrint="AB" * 20, BypassProxyServer="FALSE")
    assert code == 4096
    ref = out["Job"]
    assert isinstance(ref, CIMInstanceName) and ref.classname == "Msvm_ConcreteJob"
    job = _wait(world, loop, _jobs(world).get(str(ref.keybindings["InstanceID"])))
    assert job.state == JobState.EXCEPTION and job.job_type == JobType.TEST_REPLICATION_CONNECTION
    code, out = world.invoke(ref, "GetError")
    assert code == 0 and parse_embedded(str(out["Error"]))["Message"]


def test_connection_test_without_a_connection_point_is_refused(world: World) -> None:
    code, out = world.invoke(service_path(), "TestReplicationConnection", RecoveryConnectionPoint="",
                             RecoveryServerPortNumber="443")
    assert code == 32773 and out == {"Job": None}
    assert world.db.jobs.list() == []
