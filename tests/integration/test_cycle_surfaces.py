"""The primary side's REST routes and CLI verbs against a real daemon (no replica host: the enable job fails
with a clear error, bad input is refused before anything runs, and nothing changes)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from standby.daemon.testing import DaemonProcess
from tests.integration.conftest import one_daemon, run_cli


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with one_daemon("sbrep-", {"admin": "pw"}) as process:
        yield process


cli = run_cli


def test_replication_routes_and_verbs(daemon: DaemonProcess) -> None:
    with daemon.control() as client:
        vm = client.post("/api/v1/vms", json={"name": "rep1", "disks": [{"size": "16M"}]}).json()
        ref = vm["vm_id"] if "vm_id" in vm else vm["id"]
        assert client.get(f"/api/v1/vms/{ref}/replication").status_code == 404  # not replicating
        bad = client.post(f"/api/v1/vms/{ref}/replication", json={"replica": "b.example", "interval": 31})
        assert bad.status_code == 400 and "interval" in bad.json()["message"]
        window = client.post(f"/api/v1/vms/{ref}/replication",
                             json={"replica": "b.example", "bandwidth": ["8-18=fast"]})
        assert window.status_code == 400 and "HH:MM-HH:MM=RATE" in window.json()["message"]
        wrong_state = client.post(f"/api/v1/vms/{ref}/replication/suspend")
        assert wrong_state.status_code == 409  # 32775: no relationship to suspend
        unknown = client.post(f"/api/v1/vms/{ref}/replication/explode")
        assert unknown.status_code == 400

    # The replica host cannot be reached (no site CA configured): the job ends with a readable error.
    done = cli(daemon, "replication", "enable", "rep1", "--replica", "b.example:8443", "--interval", "5",
               "--bandwidth", "08:00-18:00=50M")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ca_file" in done.stderr and "Traceback" not in done.stderr
    shown = cli(daemon, "replication", "show", "rep1", "--json")
    assert shown.returncode == 1 and "does not replicate" in shown.stderr  # nothing was created
    usage = cli(daemon, "replication", "start", "rep1", "--export", "/tmp", "--seeded")
    assert usage.returncode == 2 and "exclude" in usage.stderr
    listed = json.loads(cli(daemon, "jobs", "list", "--json").stdout)
    assert any(job["type"] == 91 and job["state_name"] == "Exception" for job in listed)
