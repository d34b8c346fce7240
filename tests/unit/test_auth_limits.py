"""Password checks under abuse: the per-address failure limiter, the bounded check pool, the same cost for
unknown and known users, the listener gate that combines them, and the audit lines."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from standby.daemon import passwords
from standby.daemon.passwords import PasswordVerifier, dummy_hash, hash_password, parse_hash
from standby.edge.asgi import ASGIApp, Receive, Scope, Send
from standby.edge.audit import AUDIT_LOGGER, AuditApp, audit_fields, cim_what
from standby.edge.gate import AuthGuard, ListenerGate
from standby.edge.throttle import FailureLimiter, LimitPolicy, PoolFull, SlowCheckPool

Message = MutableMapping[str, Any]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the limiter ------------------------------------------------------------------------------------------

POLICY = LimitPolicy(max_failures=3, window=10.0, base_backoff=2.0, max_backoff=8.0, forget=100.0,
                     max_tracked=100)

# (time offset, action, expected): "fail" → seconds of the lockout it started (None: none), "check" → the
# seconds to wait (None: may try), "ok" → the failures forgiven.
Step = tuple[float, str, float | int | None]
TABLE: dict[str, list[Step]] = {
    "below the threshold nothing locks": [
        (0, "fail", None), (1, "fail", None), (2, "check", None)],
    "the Kth failure in the window locks for the base backoff": [
        (0, "fail", None), (1, "fail", None), (2, "fail", 2.0), (2.5, "check", 1.5), (4, "check", None)],
    "failures older than the window do not count": [
        (0, "fail", None), (1, "fail", None), (11.5, "fail", None), (12, "check", None)],
    "on probation one failure locks again, twice as long": [
        (0, "fail", None), (0, "fail", None), (0, "fail", 2.0), (3, "fail", 4.0), (8, "fail", 8.0),
        (17, "fail", 8.0), (20, "check", 5.0)],
    "failures of checks begun before the lockout do not escalate it": [
        (0, "fail", None), (0, "fail", None), (0, "fail", 2.0), (0.5, "fail", None), (1, "fail", None),
        (1.5, "check", 0.5), (2.5, "check", None)],
    "a success forgets the address": [
        (0, "fail", None), (0, "fail", None), (0, "fail", 2.0), (3, "ok", 3), (3, "fail", None),
        (3, "fail", None), (3, "check", None)],
    "a success of an unknown address forgives nothing": [(0, "ok", 0)],
    "an address quiet for the forget time starts afresh": [
        (0, "fail", None), (0, "fail", None), (0, "fail", 2.0), (200, "fail", None), (200, "check", None)],
}


@pytest.mark.parametrize("steps", TABLE.values(), ids=TABLE.keys())
def test_failure_limiter_table(steps: list[Step]) -> None:
    clock = FakeClock()
    start = clock.now
    limiter = FailureLimiter(POLICY, clock=clock)
    for offset, action, expected in steps:
        clock.now = start + offset
        if action == "fail":
            lockout = limiter.failure("10.0.0.1")
            assert (lockout.seconds if lockout else None) == expected, (offset, action)
        elif action == "check":
            wait = limiter.retry_after("10.0.0.1")
            assert wait == (pytest.approx(expected) if expected is not None else None), (offset, action)
        else:
            assert limiter.success("10.0.0.1") == expected, (offset, action)


def test_limiter_is_per_address_and_counts_refusals() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(POLICY, clock=clock)
    for _ in range(3):
        limiter.failure("10.0.0.1")
    assert limiter.retry_after("10.0.0.2") is None
    for _ in range(4):
        assert limiter.retry_after("10.0.0.1") is not None
    clock.now += 3
    assert limiter.retry_after("10.0.0.1") is None
    second = limiter.failure("10.0.0.1")
    assert second is not None and second.refused_before == 4 and second.strike == 2


def test_limiter_memory_is_bounded_least_recent_first() -> None:
    limiter = FailureLimiter(LimitPolicy(max_tracked=3), clock=FakeClock())
    for i in range(10):
        limiter.failure(f"10.0.0.{i}")
    assert len(limiter) == 3
    limiter.failure("10.0.0.7")  # touched: now the most recent
    limiter.failure("10.0.0.10")
    assert limiter.success("10.0.0.7") == 2
    assert limiter.success("10.0.0.8") == 0  # dropped as the least recently seen


def test_limiter_bounds_checks_in_flight_per_address() -> None:
    limiter = FailureLimiter(LimitPolicy(max_pending=2), clock=FakeClock())
    assert limiter.begin("a") and limiter.begin("a")
    assert not limiter.begin("a")
    assert limiter.begin("b")
    limiter.end("a")
    assert limiter.begin("a")


# -- the pool -----------------------------------------------------------------------------------------------

def test_pool_refuses_beyond_workers_and_queue() -> None:
    pool = SlowCheckPool(workers=1, max_waiting=1)
    release = threading.Event()
    names: list[str] = []

    def slow() -> str:
        names.append(threading.current_thread().name)
        release.wait(5)
        return "done"

    async def scenario() -> list[str]:
        first = asyncio.ensure_future(pool.run(slow))
        second = asyncio.ensure_future(pool.run(slow))
        await asyncio.sleep(0.05)
        with pytest.raises(PoolFull):
            await pool.run(slow)
        release.set()
        return [await first, await second]

    try:
        assert asyncio.run(scenario()) == ["done", "done"]
    finally:
        pool.close()
    assert pool.admitted == 0
    assert all(name.startswith("standby-auth") for name in names)


# -- the same cost for unknown and known users ---------------------------------------------------------------

@dataclass
class DeriveSpy:
    calls: list[tuple[int, int, int, int]] = field(default_factory=list)

    def wrap(self, real: Callable[..., bytes]) -> Callable[..., bytes]:
        def spy(password: str, salt: bytes, n: int, r: int, p: int, *, length: int = 32) -> bytes:
            self.calls.append((n, r, p, length))
            return real(password, salt, n, r, p, length=length)
        return spy


@pytest.fixture()
def derive_spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[DeriveSpy]:
    spy = DeriveSpy()
    monkeypatch.setattr(passwords, "_derive", spy.wrap(passwords._derive))
    yield spy


def _cheap_hash(password: str) -> str:
    # Cheap parameters keep the test fast; the rule under test is "same parameters", whatever they are.
    key = passwords._derive(password, b"salt-salt-salt16", 2**4, 2, 1, length=24)
    return f"scrypt$16$2$1${passwords._b64(b'salt-salt-salt16')}${passwords._b64(key)}"


def test_unknown_user_runs_the_same_derivation_as_a_wrong_password(derive_spy: DeriveSpy) -> None:
    verifier = PasswordVerifier({"admin": _cheap_hash("right")})
    derive_spy.calls.clear()
    assert not verifier.verify("admin", "wrong")
    known = list(derive_spy.calls)
    derive_spy.calls.clear()
    assert not verifier.verify("nobody", "wrong")
    unknown = list(derive_spy.calls)
    assert known == unknown == [(16, 2, 1, 24)]
    derive_spy.calls.clear()
    assert verifier.verify("admin", "right")
    assert derive_spy.calls == [(16, 2, 1, 24)]


def test_a_user_with_an_unusable_hash_costs_the_same_too(derive_spy: DeriveSpy) -> None:
    verifier = PasswordVerifier({"admin": _cheap_hash("right"), "broken": "md5$nonsense"})
    derive_spy.calls.clear()
    assert not verifier.verify("broken", "anything")
    assert derive_spy.calls == [(16, 2, 1, 24)]
    assert verifier.has_users


def test_dummy_hash_takes_the_common_parameters_and_defaults() -> None:
    n, r, p, salt, key = parse_hash(dummy_hash([_cheap_hash("a"), _cheap_hash("b"), hash_password("c")]))
    assert (n, r, p, len(salt), len(key)) == (16, 2, 1, 16, 24)
    n, r, p, salt, key = parse_hash(dummy_hash([]))
    assert (n, r, p, len(key)) == (passwords._N, passwords._R, passwords._P, passwords._KEY_LEN)


def test_known_is_false_for_unknown_users_without_a_derivation(derive_spy: DeriveSpy) -> None:
    verifier = PasswordVerifier({"admin": _cheap_hash("right")})
    derive_spy.calls.clear()
    assert not verifier.known("nobody", "x")
    assert not verifier.known("admin", "right")
    assert derive_spy.calls == []


# -- the gate ---------------------------------------------------------------------------------------------

class CountingVerifier:
    """Admits ``admin:right``; counts the slow checks."""

    def __init__(self) -> None:
        self.slow_checks = 0
        self.good: set[tuple[str, str]] = set()

    def known(self, user: str, password: str) -> bool:
        return (user, password) in self.good

    def verify(self, user: str, password: str) -> bool:
        self.slow_checks += 1
        ok = (user, password) == ("admin", "right")
        if ok:
            self.good.add((user, password))
        return ok


async def _ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _scope(address: str, user: str, password: str, *, method: str = "GET", path: str = "/api/v1/vms",
           headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    token = base64.b64encode(f"{user}:{password}".encode())
    return {"type": "http", "method": method, "path": path, "client": (address, 40000),
            "headers": [(b"authorization", b"Basic " + token), *(headers or [])]}


def _call(app: Any, scope: dict[str, Any]) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(start["status"]), dict(start.get("headers", [])), body


@pytest.fixture()
def gate_parts() -> Iterator[tuple[ListenerGate, CountingVerifier, FakeClock]]:
    clock = FakeClock()
    verifier = CountingVerifier()
    guard = AuthGuard(FailureLimiter(POLICY, clock=clock), SlowCheckPool(workers=1), clock=clock)
    yield ListenerGate(_ok_app, "https", verifier, guard=guard), verifier, clock
    guard.pool.close()


def test_gate_locks_an_address_out_without_checking(gate_parts: tuple[ListenerGate, CountingVerifier,
                                                                      FakeClock],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    gate, verifier, clock = gate_parts
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    statuses = [_call(gate, _scope("10.1.1.1", "admin", f"guess{i}"))[0] for i in range(3)]
    assert statuses == [401, 401, 429]
    assert verifier.slow_checks == 3
    status, headers, _ = _call(gate, _scope("10.1.1.1", "admin", "right"))
    assert (status, headers[b"retry-after"]) == (429, b"2")
    assert verifier.slow_checks == 3  # refused without a check, even with the right password
    assert _call(gate, _scope("10.2.2.2", "admin", "right"))[0] == 200  # another address is not affected
    clock.now += 2.5
    assert _call(gate, _scope("10.1.1.1", "admin", "right"))[0] == 200
    lines = audit_fields(caplog.records)
    results = [(line["result"], line["address"]) for line in lines if line["event"] == "auth"]
    assert results == [("failed", "10.1.1.1"), ("failed", "10.1.1.1"), ("failed", "10.1.1.1"),
                       ("locked_out", "10.1.1.1"), ("ok_after_failures", "10.1.1.1")]
    locked = next(line for line in lines if line["result"] == "locked_out")
    assert locked["user"] == "admin" and locked["listener"] == "https" and locked["retry_after"] == 2.0
    assert "right" not in caplog.text and "guess" not in caplog.text  # no password is ever logged


class Blocking(CountingVerifier):
    """Holds every check until ``release`` is set, then answers ``answer`` (None: the real check)."""

    def __init__(self, release: threading.Event, answer: bool | None) -> None:
        super().__init__()
        self.release, self.answer = release, answer

    def verify(self, user: str, password: str) -> bool:
        self.release.wait(5)
        real = super().verify(user, password)
        return real if self.answer is None else self.answer


def _statuses_while_one_check_runs(guard: AuthGuard, verifier: Blocking, first: Scope,
                                   second: Scope) -> list[int]:
    """The statuses of ``second``, sent while ``first``'s check is held, and then of ``first``."""
    gate = ListenerGate(_ok_app, "https", verifier, guard=guard)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    async def scenario() -> None:
        held = asyncio.ensure_future(gate(first, receive, send))
        await asyncio.sleep(0.05)
        await gate(second, receive, send)
        verifier.release.set()
        await held

    try:
        asyncio.run(scenario())
    finally:
        guard.pool.close()
    return [m["status"] for m in sent if m["type"] == "http.response.start"]


def test_gate_answers_503_when_the_pool_is_full() -> None:
    guard = AuthGuard(FailureLimiter(LimitPolicy(max_pending=10)), SlowCheckPool(workers=1, max_waiting=0))
    statuses = _statuses_while_one_check_runs(guard, Blocking(threading.Event(), None),
                                              _scope("10.0.0.1", "admin", "right"),
                                              _scope("10.0.0.2", "admin", "right"))
    assert statuses == [503, 200]


def test_gate_limits_checks_in_flight_from_one_address() -> None:
    guard = AuthGuard(FailureLimiter(LimitPolicy(max_pending=1)), SlowCheckPool(workers=2, max_waiting=4))
    statuses = _statuses_while_one_check_runs(guard, Blocking(threading.Event(), False),
                                              _scope("10.0.0.1", "admin", "x"),
                                              _scope("10.0.0.1", "admin", "y"))
    assert statuses == [429, 401]


def test_gates_of_one_guard_share_their_limits() -> None:
    verifier, guard = CountingVerifier(), AuthGuard()
    https = ListenerGate(_ok_app, "https", verifier, guard=guard)
    http = ListenerGate(_ok_app, "http", verifier, guard=guard)
    try:
        for i in range(5):  # the failures on HTTPS lock the address out of the HTTP listener too
            _call(https, _scope("10.2.2.2", "admin", f"guess{i}"))
        status, _, _ = _call(http, _scope("10.2.2.2", "admin", "right", method="POST", path="/cimom"))
    finally:
        guard.pool.close()
    assert status == 429


def test_refusal_text_follows_accept_language(gate_parts: tuple[ListenerGate, CountingVerifier,
                                                                FakeClock]) -> None:
    gate, _, _ = gate_parts
    for i in range(3):
        _call(gate, _scope("10.1.1.1", "admin", f"guess{i}"))
    _, _, body = _call(gate, _scope("10.1.1.1", "admin", "x", headers=[(b"accept-language", b"de")]))
    assert "erneut" in body.decode()


# -- audit of calls ------------------------------------------------------------------------------------------

def _cim_app(body: bytes) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
    return app


def test_audit_logs_state_changing_rest_calls_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    gate = ListenerGate(_ok_app, "https", CountingVerifier(), guard=AuthGuard(pool=SlowCheckPool(1)))
    _call(gate, _scope("10.3.3.3", "admin", "right", method="GET"))
    _call(gate, _scope("10.3.3.3", "admin", "right", method="POST", path="/api/v1/vms/web/start"))
    calls = [line for line in audit_fields(caplog.records) if line["event"] == "call"]
    assert len(calls) == 1
    call = calls[0]
    assert (call["who"], call["what"], call["status"], call["listener"], call["address"]) == (
        "admin", "POST /api/v1/vms/web/start", 200, "https", "10.3.3.3")
    gate.guard.pool.close()


def test_audit_of_cim_calls_names_class_method_and_return_value(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    answer = (b'<CIM><MESSAGE><SIMPLERSP><METHODRESPONSE NAME="StartReplication">'
              b'<RETURNVALUE PARAMTYPE="uint32"><VALUE>4096</VALUE></RETURNVALUE>'
              b"</METHODRESPONSE></SIMPLERSP></MESSAGE></CIM>")
    app = AuditApp(_cim_app(answer), "http")
    target = (b"root/virtualization/v2%3AMsvm_ReplicationService"
              b".CreationClassName=%22Msvm_ReplicationService%22")
    scope = {"type": "http", "method": "POST", "path": "/cimom", "client": ("127.0.0.1", 1),
             "state": {"user": "admin"},
             "headers": [(b"cimmethod", b"StartReplication"), (b"cimobject", target)]}
    _call(app, scope)
    read = {**scope, "headers": [(b"cimmethod", b"EnumerateInstances"),
                                 (b"cimobject", b"root/virtualization/v2")]}
    _call(app, read)
    error = (b'<CIM><MESSAGE><SIMPLERSP><IMETHODRESPONSE><ERROR CODE="5"/></IMETHODRESPONSE></SIMPLERSP>'
             b"</MESSAGE></CIM>")
    write = {**scope, "headers": [(b"cimmethod", b"ModifyInstance"),
                                  (b"cimobject", b"root/virtualization/v2")]}
    _call(AuditApp(_cim_app(error), "http"), write)
    calls = [line for line in audit_fields(caplog.records) if line["event"] == "call"]
    assert [(c["who"], c["what"], c["status"], c.get("return_value"), c.get("cim_error")) for c in calls] == [
        ("admin", "Msvm_ReplicationService.StartReplication", 200, 4096, None),
        ("admin", "ModifyInstance root/virtualization/v2", 200, None, 5)]


def test_audit_names_the_peer_host_set_inside(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)

    async def peer_gate(scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})["peer_host"] = "hosta.standby.test"
        await _ok_app(scope, receive, send)

    app = AuditApp(peer_gate, "peer")
    for method, path in (("PUT", "/peer/v1/replicas/x/logs/3"), ("GET", "/peer/v1/replicas/x")):
        _call(app, {"type": "http", "method": method, "path": path, "client": ("10.0.0.1", 1), "headers": [],
                    "state": {}})
    calls = [line for line in audit_fields(caplog.records) if line["event"] == "call"]
    assert [(c["who"], c["what"], c["listener"]) for c in calls] == [
        ("hosta.standby.test", "PUT /peer/v1/replicas/x/logs/3", "peer")]


def test_audit_records_a_failing_app_as_500(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)

    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        _call(AuditApp(broken, "https"), {"type": "http", "method": "DELETE", "path": "/api/v1/vms/x",
                                          "client": None, "headers": []})
    (call,) = [line for line in audit_fields(caplog.records) if line["event"] == "call"]
    assert (call["status"], call["who"], call["address"]) == (500, "-", "unix")


@pytest.mark.parametrize(("method", "target", "what"), [
    ("RequestStateChange", "root/virtualization/v2:Msvm_ComputerSystem.Name=%22X%22",
     "Msvm_ComputerSystem.RequestStateChange"),
    ("AddAuthorizationEntry", "root/virtualization/v2:Msvm_ReplicationService", "Msvm_ReplicationService."
     "AddAuthorizationEntry"),
    ("DeleteInstance", "root/virtualization/v2", "DeleteInstance root/virtualization/v2"),
    ("GetInstance", "root/virtualization/v2", None),
    ("Associators", "root/virtualization/v2", None),
])
def test_cim_what(method: str, target: str, what: str | None) -> None:
    assert cim_what({"cimmethod": method, "cimobject": target}) == what
