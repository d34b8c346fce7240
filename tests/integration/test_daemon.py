"""A real ``standby serve`` process: listeners, auth, REST, jobs across restarts, graceful stop."""

from __future__ import annotations

import json
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from standby.daemon.testing import DaemonProcess, free_port

USERS = {"admin": "pw-admin"}


def _short_dir() -> Path:
    # Unix socket paths must stay under 108 bytes; pytest's tmp_path can be longer.
    return Path(tempfile.mkdtemp(prefix="sbd-", dir="/tmp"))


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    folder = _short_dir()
    process = DaemonProcess.start(folder / "data", users=USERS)
    try:
        yield process
    finally:
        process.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def own_daemon() -> Iterator[DaemonProcess]:
    """A daemon this test may kill and restart; a running connection test never finishes on its own."""
    folder = _short_dir()
    process = DaemonProcess.prepare(
        folder / "data", users=USERS,
        extra_config="[replication]\nconnection_timeout_seconds = 600\n[jobs]\nshutdown_grace_seconds = 1\n",
    )
    try:
        yield process
    finally:
        process.kill()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def silent_peer() -> Iterator[int]:
    """A loopback port that accepts TCP connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def _start_connection_test(client: httpx.Client, port: int) -> dict[str, object]:
    response = client.post("/api/v1/replication/test-connection",
                           json={"recovery_connection_point": "127.0.0.1", "recovery_server_port": port})
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/api/v1/jobs/{response.json()['id']}"
    job: dict[str, object] = response.json()
    return job


def _wait_for_state(client: httpx.Client, job_id: str, state: str, timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, object] = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["state_name"] == state or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_status_over_the_control_socket(daemon: DaemonProcess) -> None:
    with daemon.control() as client:
        status = client.get("/api/v1/status").json()
    assert status["version"] == "0.1.0"
    assert status["host"] == {"name": "testhost", "fqdn": "testhost.example"}
    assert status["user"] == "local"
    assert status["uptime_seconds"] >= 0
    assert set(status["counts"]) == {"vms", "relationships", "jobs_running"}


def test_control_socket_and_lock_file(daemon: DaemonProcess) -> None:
    assert stat.S_IMODE(daemon.socket_path.stat().st_mode) == 0o600
    assert stat.S_ISSOCK(daemon.socket_path.stat().st_mode)
    assert daemon.process is not None
    assert (daemon.data_dir / "standby.pid").read_text().strip() == str(daemon.process.pid)


def test_https_needs_basic_auth_except_healthz(daemon: DaemonProcess) -> None:
    with daemon.https() as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        refused = anonymous.get("/api/v1/status")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert refused.json()["code"] == 32769
        assert anonymous.get("/peer/v1/ping").json()["service"] == "standby"
    with daemon.https(user="admin", password="wrong") as wrong:
        assert wrong.get("/api/v1/status").status_code == 401
    with daemon.https(user="nobody", password="pw-admin") as unknown:
        assert unknown.get("/api/v1/jobs").status_code == 401
    with daemon.https(user="admin", password="pw-admin") as admin:
        status = admin.get("/api/v1/status")
        assert status.status_code == 200
        assert status.json()["user"] == "admin"


def test_plain_http_is_loopback_and_cim_only(daemon: DaemonProcess) -> None:
    with daemon.http(user="admin", password="pw-admin") as client:
        assert client.get("/healthz").status_code == 200
        rest = client.get("/api/v1/status")
        assert rest.status_code == 404
        assert "HTTPS" in rest.json()["message"]
    # Bound to loopback only: the same port on another local address is not served.
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.split(":")[1], 16) == daemon.http_port:
            assert local.split(":")[0] == "0100007F"


def test_openapi_and_metrics(daemon: DaemonProcess) -> None:
    with daemon.control() as client:
        schema = client.get("/api/v1/openapi.json").json()
        metrics = client.get("/metrics")
    assert schema["info"]["title"] == "standby"
    for path in ("/api/v1/status", "/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/cancel",
                 "/api/v1/jobs/{job_id}/wait", "/api/v1/replication/test-connection", "/healthz"):
        assert path in schema["paths"], path
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "standby_uptime_seconds " in metrics.text
    assert 'standby_jobs{state="running"}' in metrics.text
    assert 'standby_info{host="testhost",version="0.1.0"} 1.0' in metrics.text


def test_errors_are_json_with_code_and_language(daemon: DaemonProcess) -> None:
    with daemon.control() as client:
        missing = client.get("/api/v1/jobs/no-such-job")
        invalid = client.post("/api/v1/replication/test-connection", json={"recovery_server_port": "x"})
        kerberos = client.post("/api/v1/replication/test-connection",
                               json={"recovery_connection_point": "h", "recovery_server_port": 1,
                                     "authentication_type": 1})
    assert missing.status_code == 404
    assert missing.json()["code"] == 32773
    assert missing.json()["name"] == "NotFound"
    assert "no-such-job" in missing.json()["message"]
    assert invalid.status_code == 400
    assert invalid.json()["code"] == 32773
    assert "recovery_connection_point" in invalid.json()["message"]
    assert kerberos.status_code == 501
    assert kerberos.json()["name"] == "NotSupported"
    with daemon.control(language="de-DE,de;q=0.9") as german:
        answer = german.get("/api/v1/jobs/no-such-job")
    assert answer.status_code == 404
    assert answer.headers["content-language"] == "de"
    assert answer.json()["message"] != missing.json()["message"]


def test_connection_test_against_itself_completes(daemon: DaemonProcess) -> None:
    with daemon.control() as client:
        job = _start_connection_test(client, daemon.https_port)
        done = client.get(f"/api/v1/jobs/{job['id']}/wait", params={"timeout": 60}).json()
    assert done["type"] == 115
    assert done["state_name"] == "Completed", done
    assert done["result"]["RecoveryHost"] == "testhost"
    assert len(done["result"]["ServerCertificateThumbprint"]) == 40


def test_connection_test_to_a_closed_port_ends_in_exception(daemon: DaemonProcess) -> None:
    port = free_port()
    with daemon.control() as client:
        job = _start_connection_test(client, port)
        done = client.get(f"/api/v1/jobs/{job['id']}/wait", params={"timeout": 60}).json()
    assert done["state_name"] == "Exception"
    assert done["error_code"] == 32777
    assert "refused" in done["error_description"]


def test_a_second_daemon_on_the_same_data_dir_is_refused(daemon: DaemonProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "standby", "serve", "--data-dir", str(daemon.data_dir),
         "--config", str(daemon.config_file)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1
    assert daemon.process is not None
    assert f"pid {daemon.process.pid}" in result.stderr
    assert "Traceback" not in result.stderr
    with daemon.control() as client:  # the first one is unharmed
        assert client.get("/healthz").status_code == 200


def test_jobs_survive_a_daemon_restart(own_daemon: DaemonProcess, silent_peer: int) -> None:
    own_daemon.launch()
    with own_daemon.control() as client:
        job = _start_connection_test(client, silent_peer)
        running = _wait_for_state(client, str(job["id"]), "Running")
    assert running["state_name"] == "Running", running
    assert own_daemon.kill() == -9
    own_daemon.launch()
    with own_daemon.control() as client:
        after = client.get(f"/api/v1/jobs/{job['id']}").json()
        jobs = client.get("/api/v1/jobs").json()
        status = client.get("/api/v1/status").json()
    assert after["state_name"] == "Exception", after
    assert after["error_code"] == 32768
    assert "daemon stopped" in after["error_description"]
    assert not [j for j in jobs if j["state_name"] in ("New", "Running")]
    assert status["counts"]["jobs_running"] == 0


def test_sigterm_is_graceful(own_daemon: DaemonProcess, silent_peer: int) -> None:
    own_daemon.launch()
    with own_daemon.control() as client:
        job = _start_connection_test(client, silent_peer)
        assert _wait_for_state(client, str(job["id"]), "Running")["state_name"] == "Running"
    assert own_daemon.stop() == 0
    log = own_daemon.log()
    assert "daemon stopped" in log
    assert "Traceback" not in log
    assert not (own_daemon.data_dir / "standby.pid").exists()
    assert not own_daemon.socket_path.exists()
    own_daemon.launch()  # the lock was released
    with own_daemon.control() as client:
        after = client.get(f"/api/v1/jobs/{job['id']}").json()
    # The cancellable probe was killed when the grace period ran out, not left running.
    assert after["state_name"] in ("Killed", "Terminated"), after


def test_json_log_lines() -> None:
    folder = _short_dir()
    process = DaemonProcess.start(folder / "data", extra_config='[log]\nformat = "json"\nlevel = "debug"\n')
    try:
        with process.control() as client:
            assert client.get("/healthz").status_code == 200
    finally:
        assert process.stop() == 0
    try:
        records = [json.loads(line) for line in process.log().splitlines() if line.strip()]
        messages = [r["msg"] for r in records]
        assert "daemon started" in messages
        assert "daemon stopped" in messages
        started = next(r for r in records if r["msg"] == "daemon started")
        assert started["logger"] == "standby.daemon"
        assert started["level"] == "info"
        assert "control=" in started["listeners"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
