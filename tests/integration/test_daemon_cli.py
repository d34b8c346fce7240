"""The ``standby`` CLI against a real daemon: --json, jobs verbs, --host with Basic auth, German output."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from standby.daemon.testing import DaemonProcess, free_port
from tests.integration.conftest import one_daemon, run_cli

PASSWORD = "pw-cli"


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with one_daemon("sbcli-", {"admin": PASSWORD},
                    "[replication]\nconnection_timeout_seconds = 600\n") as process:
        yield process


@pytest.fixture
def silent_peer() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


cli = run_cli


def start_connection_test(daemon: DaemonProcess, port: int) -> str:
    with daemon.control() as client:
        response = client.post("/api/v1/replication/test-connection",
                               json={"recovery_connection_point": "127.0.0.1", "recovery_server_port": port})
    assert response.status_code == 202
    job_id: str = response.json()["id"]
    return job_id


def test_status_json_and_table(daemon: DaemonProcess) -> None:
    result = cli(daemon, "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["host"]["name"] == "testhost"
    assert status["user"] == "local"
    table = cli(daemon, "status")
    assert table.returncode == 0
    assert "Running jobs" in table.stdout
    assert "testhost (testhost.example)" in table.stdout
    root_flag = cli(daemon, "--json", "status")
    assert json.loads(root_flag.stdout)["version"] == "0.1.0"


def test_wait_for_a_job_that_completes(daemon: DaemonProcess) -> None:
    job_id = start_connection_test(daemon, daemon.https_port)
    result = cli(daemon, "jobs", "wait", job_id, "--timeout", "60", "--json")
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["id"] == job_id
    assert job["state_name"] == "Completed"
    assert job["result"]["RecoveryHost"] == "testhost"
    listed = json.loads(cli(daemon, "jobs", "list", "--json").stdout)
    assert job_id in [j["id"] for j in listed]
    shown = cli(daemon, "jobs", "show", job_id)
    assert "Test Replication Connection" in shown.stdout
    assert "RecoveryHost = testhost" in shown.stdout


def test_wait_for_a_failing_job_exits_1(daemon: DaemonProcess) -> None:
    job_id = start_connection_test(daemon, free_port())
    result = cli(daemon, "jobs", "wait", job_id)
    assert result.returncode == 1
    assert result.stderr.startswith(f"standby: {job_id}: Exception: ")
    assert "refused the connection" in result.stderr
    german = cli(daemon, "jobs", "wait", job_id, lang="de_DE.UTF-8")
    assert german.returncode == 1
    assert "hat die Verbindung abgelehnt" in german.stderr


def test_wait_timeout_then_cancel(daemon: DaemonProcess, silent_peer: int) -> None:
    job_id = start_connection_test(daemon, silent_peer)
    waited = cli(daemon, "jobs", "wait", job_id, "--timeout", "0.5")
    assert waited.returncode == 1
    assert f"job {job_id} is still running after 0.5 s" in waited.stderr
    cancelled = cli(daemon, "jobs", "cancel", job_id, "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    answer = json.loads(cancelled.stdout)
    assert answer["code"] == 0
    final = json.loads(cli(daemon, "jobs", "wait", job_id, "--timeout", "30", "--json").stdout)
    assert final["state_name"] == "Terminated"
    again = cli(daemon, "jobs", "cancel", job_id)
    assert again.returncode == 1
    assert again.stderr.strip() == f"standby: job {job_id} has already finished"


def test_kill_a_running_job(daemon: DaemonProcess, silent_peer: int) -> None:
    job_id = start_connection_test(daemon, silent_peer)
    killed = cli(daemon, "jobs", "cancel", job_id, "--kill", "--json")
    assert killed.returncode == 0, killed.stderr
    assert json.loads(killed.stdout)["job"]["state_name"] == "Killed"


def test_german_output(daemon: DaemonProcess) -> None:
    missing = cli(daemon, "jobs", "show", "NO-SUCH-JOB", lang="de_DE.UTF-8")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "standby: Job NO-SUCH-JOB ist nicht vorhanden."
    status = cli(daemon, "status", lang="de_DE.UTF-8")
    assert "Laufende Aufträge" in status.stdout
    assert "Virtuelle Computer" in status.stdout
    job_id = start_connection_test(daemon, daemon.https_port)
    shown = cli(daemon, "jobs", "wait", job_id, "--timeout", "60", lang="de_DE.UTF-8")
    assert shown.returncode == 0
    assert "Replikationsverbindung zu 127.0.0.1" in shown.stdout
    assert "Beschreibung" in shown.stdout


def test_remote_host_with_basic_auth(daemon: DaemonProcess) -> None:
    url = f"https://127.0.0.1:{daemon.https_port}"
    ok = cli(daemon, "--host", url, "--user", "admin", "--ca-file", str(daemon.cert_file), "status", "--json",
             env={"STANDBY_PASSWORD": PASSWORD})
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["user"] == "admin"
    wrong = cli(daemon, "--host", url, "--user", "admin", "--insecure", "status",
                env={"STANDBY_PASSWORD": "nope"})
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == "standby: authentication failed: check --user and STANDBY_PASSWORD"
    untrusted = cli(daemon, "--host", url, "--user", "admin", "status", env={"STANDBY_PASSWORD": PASSWORD})
    assert untrusted.returncode == 3
    assert "TLS error" in untrusted.stderr


def test_refused_verbs_say_what_rest_says(daemon: DaemonProcess) -> None:
    """On a VM that does not replicate, the newer verbs are refused: one line with the text of the REST
    error body, exit 1, and under --json the same code REST answers for the same call."""
    made = cli(daemon, "vm", "create", "plain1", "--disk", "16M", "--json")
    assert made.returncode == 0, made.stderr
    vm_id = json.loads(made.stdout)["id"]
    calls = [
        (("replication", "import", "plain1", "/nonexistent"), "/api/v1/vms/plain1/replication/import",
         {"location": "/nonexistent"}),
        (("replication", "state", "plain1", "7"), "/api/v1/vms/plain1/replication/state",
         {"requested": 7, "relationship": "primary"}),
        (("replication", "failback", "plain1"), "/api/v1/vms/plain1/replication/failback", None),
        (("failover", "revert", "plain1"), "/api/v1/vms/plain1/failover/revert", None),
    ]
    try:
        with daemon.control() as rest, daemon.control(language="de") as rest_de:
            for args, path, body in calls:
                answer = rest.post(path, json=body)
                assert 400 <= answer.status_code < 500, answer.text
                refusal = answer.json()
                assert refusal["name"] == "InvalidState"  # a VM that does not replicate: the wrong state
                shown = cli(daemon, *args)
                assert (shown.returncode, shown.stdout) == (1, ""), shown.stderr
                assert shown.stderr == f"standby: {refusal['message']}\n"
                as_json = cli(daemon, *args, "--json")
                assert as_json.returncode == 1
                assert json.loads(as_json.stdout) == {"code": refusal["code"], "message": refusal["message"]}
            german = cli(daemon, "replication", "import", "plain1", "/nonexistent", lang="de_DE.UTF-8")
            expected = rest_de.post(calls[0][1], json=calls[0][2]).json()["message"]
            assert german.returncode == 1
            assert german.stderr == f"standby: {expected}\n"
            assert "nicht möglich" in expected
    finally:
        with daemon.control() as rest:
            rest.delete(f"/api/v1/vms/{vm_id}")
