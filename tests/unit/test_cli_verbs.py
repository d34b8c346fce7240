"""The CLI verbs that reach the REST routes of every Hyper-V operation, against a stand-in daemon.

As in ``test_cli.py`` each case runs the real console entry point in a subprocess, so exit codes, stdout and
stderr are what a user sees. The stand-in listens on ``<data-dir>/control.sock``, records each request
(method, path, query, JSON body, language) and answers what the test scripts: by default a started job that
the next ``…/wait`` finds completed.
"""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

JOB = "J-1"
RUNNING: dict[str, Any] = {"id": JOB, "url": f"/api/v1/jobs/{JOB}", "state": 4, "state_name": "Running",
                           "terminal": False, "percent_complete": 0, "result": {}}
DONE: dict[str, Any] = {**RUNNING, "state": 7, "state_name": "Completed", "terminal": True,
                        "percent_complete": 100, "result": {"Sequence": 4}}
REFUSED = {"code": 32775, "name": "InvalidState", "message": "Cannot import initial replica: not a replica."}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    language: str


@dataclass
class FakeDaemon:
    """What the stand-in was asked, and what it answers (by method and path; jobs by default)."""

    data_dir: Path
    requests: list[Request] = field(default_factory=list)
    answers: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)

    def answer(self, method: str, path: str) -> tuple[int, Any]:
        if (method, path) in self.answers:
            return self.answers[method, path]
        if method == "GET" and path == f"/api/v1/jobs/{JOB}/wait":
            return 200, DONE
        if method == "GET":
            return 200, {}
        return 202, RUNNING

    def calls(self) -> list[tuple[str, str, dict[str, list[str]], Any]]:
        """The requests other than job waits."""
        return [(r.method, r.path, r.query, r.body) for r in self.requests if not r.path.endswith("/wait")]

    def waited(self) -> bool:
        return any(r.path == f"/api/v1/jobs/{JOB}/wait" for r in self.requests)


def _handler(daemon: FakeDaemon) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            daemon.requests.append(Request(self.command, url.path, parse_qs(url.query),
                                           json.loads(raw) if raw else None,
                                           self.headers.get("accept-language", "")))
            status, body = daemon.answer(self.command, url.path)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a unix-socket peer has no address to log, and the test output stays clean

    return Handler


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    with tempfile.TemporaryDirectory(prefix="sbv-", dir="/tmp") as folder:
        daemon = FakeDaemon(Path(folder))
        server = socketserver.ThreadingUnixStreamServer(str(daemon.data_dir / "control.sock"),
                                                        _handler(daemon))
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield daemon
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def run_cli(fake: FakeDaemon, *args: str, lang: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LANG", "LC_ALL", "LC_MESSAGES", "LANGUAGE") and not k.startswith("STANDBY_")}
    env["STANDBY_DATA_DIR"] = str(fake.data_dir)
    if lang:
        env["LANG"] = lang
    return subprocess.run([sys.executable, "-m", "standby", *args], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


VM = "/api/v1/vms/web1"
GROUP = "/api/v1/groups/app"
EXTENDED = {"relationship": ["extended"]}
SETTINGS = {"element_name": "app", "replica_host": "hostb", "port": 0, "interval": 300, "history": 0}

#: (arguments, the one request the verb sends: method, path, query, body) for every verb that starts a job.
JOB_VERBS: list[tuple[tuple[str, ...], tuple[str, str, dict[str, list[str]], Any]]] = [
    (("replication", "import", "web1", "/srv/export/web1"),
     ("POST", f"{VM}/replication/import", {}, {"location": "/srv/export/web1"})),
    (("replication", "state", "web1", "7"),
     ("POST", f"{VM}/replication/state", {}, {"requested": 7, "relationship": "primary"})),
    (("replication", "state", "web1", "3", "--relationship", "EXTENDED"),
     ("POST", f"{VM}/replication/state", {}, {"requested": 3, "relationship": "extended"})),
    (("replication", "cancel-initial", "web1"), ("POST", f"{VM}/replication/cancel-initial", {}, None)),
    (("replication", "cancel-resync", "web1"), ("POST", f"{VM}/replication/cancel-resync", {}, None)),
    (("replication", "cancel", "web1"), ("POST", f"{VM}/replication/cancel", {}, None)),
    (("replication", "failback", "web1"), ("POST", f"{VM}/replication/failback", {}, None)),
    (("replication", "remove", "web1", "--relationship", "extended"),
     ("DELETE", f"{VM}/replication", EXTENDED, None)),
    (("replication", "remove", "web1"), ("DELETE", f"{VM}/replication", {}, None)),
    (("replication", "test-connection", "hostb", "--port", "9443", "--thumbprint", "AB12"),
     ("POST", "/api/v1/replication/test-connection", {},
      {"recovery_connection_point": "hostb", "recovery_server_port": 9443,
       "certificate_thumbprint": "AB12"})),
    (("replication", "test-connection", "hostb"),
     ("POST", "/api/v1/replication/test-connection", {},
      {"recovery_connection_point": "hostb", "recovery_server_port": 8443, "certificate_thumbprint": ""})),
    (("failover", "revert", "web1"), ("POST", f"{VM}/failover/revert", {}, None)),
    (("group", "modify", "app", "--replica-host", "hostb"), ("PUT", f"{GROUP}/replication", {}, SETTINGS)),
    (("group", "modify", "app", "--replica-host", "hostb", "--interval", "30", "--history", "4", "--port",
      "9443", "--element-name", "App"),
     ("PUT", f"{GROUP}/replication", {},
      {**SETTINGS, "element_name": "App", "interval": 30, "history": 4, "port": 9443})),
    (("group", "reverse", "app", "--replica-host", "hostb"),
     ("POST", f"{GROUP}/replication/reverse", {}, SETTINGS)),
    (("group", "planned-failover", "app"), ("POST", f"{GROUP}/planned-failover", {}, None)),
    (("group", "revert-planned-failover", "app"), ("POST", f"{GROUP}/revert-planned-failover", {}, None)),
    (("group", "prepare-reverse", "app"), ("POST", f"{GROUP}/prepare-reverse", {}, None)),
    (("group", "cancel-update-disk-set", "app"), ("POST", f"{GROUP}/cancel-update-disk-set", {}, None)),
]


@pytest.mark.parametrize(("args", "sent"), JOB_VERBS, ids=[" ".join(a) for a, _ in JOB_VERBS])
def test_a_job_verb_sends_its_request_and_follows_the_job(
    fake: FakeDaemon, args: tuple[str, ...], sent: tuple[str, str, dict[str, list[str]], Any]
) -> None:
    result = run_cli(fake, *args)
    assert result.returncode == 0, result.stderr
    assert fake.calls() == [sent]
    assert fake.waited()
    assert result.stdout.strip().endswith("done.") or "done (Sequence 4)." in result.stdout
    assert result.stderr == ""  # no progress bar off a terminal, not even a blank line


@pytest.mark.parametrize("args", [("replication", "import", "web1", "/srv/x"), ("failover", "revert", "web1"),
                                  ("group", "prepare-reverse", "app")])
def test_no_wait_returns_the_accepted_job_as_json(fake: FakeDaemon, args: tuple[str, ...]) -> None:
    result = run_cli(fake, *args, "--no-wait", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == JOB
    assert not fake.waited()


def test_json_of_a_followed_job_is_the_finished_job(fake: FakeDaemon) -> None:
    result = run_cli(fake, "replication", "state", "web1", "7", "--json")
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert (job["state_name"], job["result"]) == ("Completed", {"Sequence": 4})


@pytest.mark.parametrize(("verb", "path"), [("show", f"{VM}/replication"),
                                            ("measure", f"{VM}/replication/statistics")])
def test_extended_queries(fake: FakeDaemon, verb: str, path: str) -> None:
    fake.answers["GET", path] = (200, {"name": "web1", "state_name": "REPLICATING", "success_count": 3})
    result = run_cli(fake, "replication", verb, "web1", "--relationship", "extended")
    assert result.returncode == 0, result.stderr
    assert fake.calls() == [("GET", path, EXTENDED, None)]
    assert "REPLICATING" in result.stdout
    primary = run_cli(fake, "replication", verb, "web1", "--json")
    assert json.loads(primary.stdout)["name"] == "web1"
    assert fake.calls()[-1] == ("GET", path, {}, None)


def test_reset_of_the_extended_relationship(fake: FakeDaemon) -> None:
    fake.answers["POST", f"{VM}/replication/statistics/reset"] = (200, {"reset": True})
    result = run_cli(fake, "replication", "reset", "web1", "--relationship", "extended")
    assert result.returncode == 0, result.stderr
    assert fake.calls() == [("POST", f"{VM}/replication/statistics/reset", EXTENDED, None)]
    assert result.stdout.strip() == "statistics reset."


def test_authorize(fake: FakeDaemon) -> None:
    path = f"{VM}/replication/authorization"
    fake.answers["PUT", path] = (200, {"host": "hosta", "storage": "/srv/replicas", "trust_group": "dc1"})
    result = run_cli(fake, "replication", "authorize", "web1", "--host", "hosta", "--storage",
                     "/srv/replicas", "--trust-group", "dc1")
    assert result.returncode == 0, result.stderr
    assert fake.calls() == [("PUT", path, {}, {"host": "hosta", "storage": "/srv/replicas",
                                               "trust_group": "dc1"})]
    assert result.stdout.strip() == "web1 authorized for hosta (trust group dc1, storage /srv/replicas)."
    defaults = run_cli(fake, "replication", "authorize", "web1", "--host", "hosta", "--json")
    assert defaults.returncode == 0
    assert fake.calls()[-1][3] == {"host": "hosta", "storage": "", "trust_group": ""}
    assert json.loads(defaults.stdout)["trust_group"] == "dc1"


def test_a_refusal_is_one_line_and_exit_1(fake: FakeDaemon) -> None:
    fake.answers["POST", f"{VM}/replication/import"] = (409, REFUSED)
    result = run_cli(fake, "replication", "import", "web1", "/srv/x")
    assert result.returncode == 1
    assert result.stderr == f"standby: {REFUSED['message']}\n"
    assert result.stdout == ""
    assert not fake.waited()


def test_a_refusal_under_json_carries_the_rest_code(fake: FakeDaemon) -> None:
    fake.answers["POST", f"{GROUP}/cancel-update-disk-set"] = (501, {**REFUSED, "code": 32770})
    result = run_cli(fake, "group", "cancel-update-disk-set", "app", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"code": 32770, "message": REFUSED["message"]}
    assert result.stderr == f"standby: {REFUSED['message']}\n"


def test_a_failed_job_exits_1_with_its_error(fake: FakeDaemon) -> None:
    failed = {**DONE, "state": 10, "state_name": "Exception", "error_code": 32768,
              "error_description": "the export folder /srv/x holds no initial replication"}
    fake.answers["GET", f"/api/v1/jobs/{JOB}/wait"] = (200, failed)
    result = run_cli(fake, "replication", "import", "web1", "/srv/x")
    assert result.returncode == 1
    assert result.stderr == ("standby: importing the initial replication of web1: the export folder /srv/x "
                             "holds no initial replication\n")
    as_json = run_cli(fake, "replication", "import", "web1", "/srv/x", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["code"] == 32768


def test_the_daemon_language_is_asked_for(fake: FakeDaemon) -> None:
    german = "Ein Failback geschieht mit ReverseReplicationRelationship."
    fake.answers["POST", f"{VM}/replication/failback"] = (501, {"code": 32770, "message": german})
    result = run_cli(fake, "replication", "failback", "web1", lang="de_DE.UTF-8")
    assert result.returncode == 1
    assert result.stderr == f"standby: {german}\n"
    assert fake.requests[-1].language == "de"


@pytest.mark.parametrize("args", [
    ("replication", "state", "web1", "seven"),
    ("replication", "state", "web1", "7", "--relationship", "sideways"),
    ("replication", "remove", "web1", "--relationship", "2"),
    ("replication", "import", "web1"),
    ("replication", "authorize", "web1"),
    ("replication", "test-connection", "hostb", "--port", "0"),
    ("group", "modify", "app"),
    ("group", "reverse", "app", "--bogus"),
])
def test_usage_errors_exit_2_and_send_nothing(fake: FakeDaemon, args: tuple[str, ...]) -> None:
    result = run_cli(fake, *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert fake.requests == []
