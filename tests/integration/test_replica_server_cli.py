"""``standby replica-server`` against a real daemon: each verb's effect (read back through REST and CIM), and
each refusal as an exit code and one line, with nothing changed."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pywbem

from standby.daemon.testing import DaemonProcess
from tests.integration.conftest import one_daemon, run_cli

PASSWORD = "pw-replica-server"


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with one_daemon("sbrs-", {"admin": PASSWORD}) as process:
        yield process


def cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(daemon, "replica-server", *args)


def ok(daemon: DaemonProcess, *args: str) -> Any:
    done = cli(daemon, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def refused(daemon: DaemonProcess, *args: str, exit_code: int = 1) -> str:
    done = cli(daemon, *args)
    assert done.returncode == exit_code, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert lines, "a refusal says why"
    if exit_code == 1:
        assert len(lines) == 1, lines
    return done.stderr


def _cim_entries(daemon: DaemonProcess) -> list[tuple[str, str, str]]:
    conn = pywbem.WBEMConnection(f"http://127.0.0.1:{daemon.http_port}", ("admin", PASSWORD),
                                 default_namespace="root/virtualization/v2")
    return sorted((str(i["AllowedPrimaryHostSystem"]), str(i["TrustGroup"]), str(i["ReplicaStorageLocation"]))
                  for i in conn.EnumerateInstances("Msvm_ReplicationAuthorizationSettingData"))


def test_the_replica_server_is_set_up_from_the_cli(daemon: DaemonProcess, tmp_path: Path) -> None:
    assert ok(daemon, "show")["enabled"] is False
    shown = ok(daemon, "set", "--enable", "--auth", "certificate", "--https-port", "8443")
    assert (shown["enabled"], shown["authentication"], shown["https_port"], shown["http_port"]) == (
        True, "certificate", 8443, 80)
    human = cli(daemon, "show")
    assert human.returncode == 0 and "accepts inbound replication" in human.stdout
    assert "No authorization entries" in human.stdout

    storage = str(tmp_path / "replicas")
    assert ok(daemon, "auth", "add", "hosta.lab", "--storage", storage) == {
        "host": "hosta.lab", "storage": storage, "trust_group": ""}
    assert ok(daemon, "auth", "add", "*.site.lab", "--storage", storage, "--trust-group", "site-1")[
        "trust_group"] == "site-1"
    assert ok(daemon, "auth", "set", "hosta.lab", "--trust-group", "site-1")["storage"] == storage
    assert _cim_entries(daemon) == [("*.site.lab", "site-1", storage), ("hosta.lab", "site-1", storage)]
    listed = cli(daemon, "auth", "list")
    assert listed.returncode == 0 and "hosta.lab" in listed.stdout and "site-1" in listed.stdout

    assert ok(daemon, "auth", "remove", "*.site.lab") == {"host": "*.site.lab", "removed": True}
    assert [entry["host"] for entry in ok(daemon, "auth", "list")] == ["hosta.lab"]
    assert ok(daemon, "set", "--disable")["enabled"] is False
    ok(daemon, "auth", "remove", "hosta.lab")


def test_refusals_exit_with_one_line_and_change_nothing(daemon: DaemonProcess, tmp_path: Path) -> None:
    storage = str(tmp_path / "replicas")
    ok(daemon, "auth", "add", "hostb.lab", "--storage", storage)
    before = (ok(daemon, "show"), _cim_entries(daemon))
    try:
        assert "hostb.lab" in refused(daemon, "auth", "add", "hostb.lab", "--storage", storage)
        assert "nobody.lab" in refused(daemon, "auth", "set", "nobody.lab", "--storage", storage)
        assert "nobody.lab" in refused(daemon, "auth", "remove", "nobody.lab")
        refused(daemon, "set", "--https-port", "0")  # the daemon's check: 32773
        refused(daemon, "set", exit_code=2)  # nothing to change
        refused(daemon, "set", "--auth", "smartcard", exit_code=2)
        refused(daemon, "auth", "set", "hostb.lab", exit_code=2)
        assert (ok(daemon, "show"), _cim_entries(daemon)) == before
    finally:
        ok(daemon, "auth", "remove", "hostb.lab")
