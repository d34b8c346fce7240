"""The log line of a failed replication cycle names the exception's type (some carry no message), and a
cancelled cycle (a stopping daemon or scheduler) is not logged as a failure."""

from __future__ import annotations

import asyncio
import logging

import pytest

from standby.domain.cycles import CycleOutcome
from tests.unit.test_cycle import make_world


def test_a_failure_without_a_message_is_logged_with_its_type(caplog: pytest.LogCaptureFixture) -> None:
    world = make_world()
    world.capture.write(0, b"\x21" * 65536)
    world.peer.fail = TimeoutError()  # type: ignore[assignment]  # str() of it is ""
    with caplog.at_level(logging.WARNING, logger="standby.engine.cycle"):
        result = world.run()
    assert result.outcome is CycleOutcome.FAILURE and result.detail == "TimeoutError"
    [record] = [r for r in caplog.records if "replication cycle" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.getMessage().endswith("failed: TimeoutError: ")


def test_a_cancelled_cycle_is_not_logged_as_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    world = make_world()
    world.capture.write(0, b"\x21" * 65536)
    world.peer.fail = asyncio.CancelledError()  # type: ignore[assignment]
    with caplog.at_level(logging.INFO, logger="standby.engine.cycle"), pytest.raises(asyncio.CancelledError):
        world.run()
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if "replication cycle" in r.getMessage()]
    assert messages == [(logging.INFO, f"replication cycle of {world.rel().vm_id} cancelled")]
    assert world.capture.calls[-1].startswith("abort")  # the cut is given back as before
