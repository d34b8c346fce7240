"""Two real daemons for the tests that need hosts A and B: ``site`` (network namespaces where they can be
made, a fresh pair per test) and ``loopback_site`` (both on 127.0.0.1, one pair per module)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from standby.testing.cluster import TwoHosts
from standby.testing.guestvm import GuestVm
from standby.testing.host import TestHost


def define_vm(host: TestHost, name: str, disk: str = "64M") -> GuestVm:
    """A turned-off VM with one new disk on ``host`` (through REST), as the tests' guest handle."""
    with host.control() as client:
        answer = client.post("/api/v1/vms", json={"name": name, "memory": "128M", "cpus": 1,
                                                  "disks": [{"size": disk}]})
    assert answer.status_code in (200, 201), answer.text
    return GuestVm(answer.json()["id"], answer.json()["name"])


@contextmanager
def two_hosts(network_mode: str | None = None) -> Iterator[TwoHosts]:
    """A and B, each authorized to replicate to the other; no process may outlive them."""
    hosts = TwoHosts.start(network_mode=network_mode)
    try:
        yield hosts
    finally:
        assert not hosts.close(), "processes outlived their daemons"


@pytest.fixture()
def site() -> Iterator[TwoHosts]:
    with two_hosts() as hosts:
        yield hosts


@pytest.fixture(scope="module")
def loopback_site() -> Iterator[TwoHosts]:
    with two_hosts("loopback") as hosts:
        yield hosts
