"""Failover through a real daemon: the CLI (``standby failover …``, ``standby vm points``) over the control
socket, and the REST routes' answers to bad input. The replica (a real qcow2 chain and its rows) is put in
the daemon's store before it starts, as the replica applier would have left it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from standby.daemon.testing import DaemonProcess
from standby.store.sqlite import Database
from tests.integration.test_failover_support import VM_ID, Replica, images_identical, make_replica

TIMEOUT = 120


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[DaemonProcess, Replica]]:
    folder = Path(tempfile.mkdtemp(prefix="sbfo-", dir="/tmp"))
    daemon = DaemonProcess.prepare(folder / "d", users={"admin": "pw"})
    db = Database.open(daemon.data_dir / "standby.db")
    replica = make_replica(folder / "replicas", db)
    db.close()
    daemon.launch()
    try:
        yield daemon, replica
    finally:
        daemon.stop()
        shutil.rmtree(folder, ignore_errors=True)


def cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "standby", "--data-dir", str(daemon.data_dir), *args]
    env = {**os.environ, "COLUMNS": "200"}  # wide enough for whole GUIDs in tables
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False, env=env)


def cli_json(daemon: DaemonProcess, *args: str) -> Any:
    done = cli(daemon, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def vm_json(daemon: DaemonProcess, ref: str = "web01") -> Any:
    with daemon.control() as http:
        return http.get(f"/api/v1/vms/{ref}").json()


def test_cli_points_failover_stop_test_complete(site: tuple[DaemonProcess, Replica]) -> None:
    daemon, replica = site
    points = cli_json(daemon, "vm", "points", "web01")
    assert [p["sequence"] for p in points] == [1, 2, 3]
    assert {p["kind"] for p in points} == {"Standard"} and not any(p["held"] for p in points)
    table = cli(daemon, "vm", "points", "web01")
    assert table.returncode == 0 and points[0]["id"] in table.stdout

    # IP settings for after the failover.
    stored = cli_json(daemon, "failover", "network", "web01", "--address", "192.0.2.10/24",
                      "--gateway", "192.0.2.1", "--dns", "192.0.2.53")
    assert stored == [{"nic": "n0", "protocol": 4098, "dhcp": False, "addresses": ["192.0.2.10/24"],
                       "gateways": ["192.0.2.1"], "dns": ["192.0.2.53"]}]
    bad = cli(daemon, "failover", "network", "web01", "--address", "192.0.2.999/24")
    assert bad.returncode == 1 and "not an IP address" in bad.stderr

    # Test failover: a test VM appears, stop removes it.
    job = cli_json(daemon, "failover", "start", "web01", "--test")
    assert job["state_name"] == "Completed" and job["type"] == 102
    test_vm = vm_json(daemon, job["test_vm_id"])
    assert test_vm["name"] == "web01 - Test" and test_vm["replication_mode"] == 3
    again = cli(daemon, "failover", "start", "web01", "--test")
    assert again.returncode == 1
    job = cli_json(daemon, "failover", "stop", "web01")
    assert job["type"] == 103
    with daemon.control() as http:
        assert http.get(f"/api/v1/vms/{test_vm['id']}").status_code == 404

    # Deleting the test VM as any other VM (`standby vm delete`, REST DELETE) ends the test failover the
    # same way: its overlays go and the recovery point is no longer held.
    job = cli_json(daemon, "failover", "start", "web01", "--test")
    test_folder = replica.folder / "test"
    assert any(test_folder.iterdir())
    assert any(p["held"] for p in cli_json(daemon, "vm", "points", "web01"))
    deleted = cli(daemon, "vm", "delete", job["test_vm_id"])
    assert deleted.returncode == 0, deleted.stderr
    assert "Deleted web01 - Test" in deleted.stdout
    assert not any(test_folder.iterdir())
    assert not any(p["held"] for p in cli_json(daemon, "vm", "points", "web01"))

    # Failover to the middle point, stop (revert), then to the latest, complete.
    job = cli_json(daemon, "failover", "start", "web01", "--point", points[1]["id"])
    assert job["type"] == 97 and job["result"]["RecoveryPoint"] == points[1]["id"]
    disks = vm_json(daemon)["disks"]
    assert [d["id"] for d in disks] == ["d0", "cidata"]
    assert images_identical(Path(disks[0]["path"]), replica.image(1))
    assert cli_json(daemon, "vm", "points", "web01")[1]["held"] is True
    assert cli_json(daemon, "failover", "stop", "web01")["type"] == 98
    assert vm_json(daemon)["disks"][0]["path"] == str(replica.image(2))

    done = cli(daemon, "failover", "start", "web01")
    assert done.returncode == 0, done.stderr
    assert "failover of web01: done" in done.stdout
    job = cli_json(daemon, "failover", "complete", "web01")
    assert job["type"] == 99 and job["result"]["DroppedPoints"] == "2"
    assert [p["sequence"] for p in cli_json(daemon, "vm", "points", "web01")] == [3]
    refused = cli(daemon, "failover", "stop", "web01")
    assert refused.returncode == 1 and refused.stderr.strip()


def test_rest_answers_bad_requests_clearly(site: tuple[DaemonProcess, Replica]) -> None:
    daemon, _ = site
    with daemon.control() as http:
        missing = http.post("/api/v1/vms/nosuchvm/failover", json={})
        assert missing.status_code == 404 and missing.json()["code"] == 32773
        bad_point = http.post(f"/api/v1/vms/{VM_ID}/failover", json={"point": "nope"})
        assert bad_point.status_code in (400, 409) and bad_point.json()["code"] in (32773, 32775)
        flags = http.post(f"/api/v1/vms/{VM_ID}/failover", json={"test": True, "force": True})
        assert flags.status_code == 400
        body = http.put(f"/api/v1/vms/{VM_ID}/failover/network", json=[{"addresses": ["192.0.2.1"]}])
        assert body.status_code == 400 and "prefix length" in body.json()["message"]
        schema = http.post(f"/api/v1/vms/{VM_ID}/failover", json={"force": "maybe"})
        assert schema.status_code == 400
