"""Fixtures of the end-to-end tests: one shared test-guest build, and a fresh two-host site per test whose
teardown must find no process left behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from standby.guest.build import GuestImage, build_guest
from standby.testing.cluster import TwoHosts


@pytest.fixture(scope="session")
def guest() -> GuestImage:
    """The test guest (built once, cached across runs)."""
    return build_guest()


@pytest.fixture
def site() -> Iterator[TwoHosts]:
    """Hosts A and B, each authorized to replicate to the other."""
    hosts = TwoHosts.start()
    try:
        yield hosts
    finally:
        leftovers = hosts.close()
        assert not leftovers, f"processes outlived their daemons: {leftovers}"

