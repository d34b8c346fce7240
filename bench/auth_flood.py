"""Wrong-password floods and user-name timing, against two real daemons.

    .venv/bin/python -m bench.auth_flood [--clients 60] [--seconds 30] [--sources 1] [--skip-flood]

1. Refusal cost, unknown vs known user: ``PasswordVerifier.verify`` in process (median of 20), then over
   HTTPS against host B (a wrong password for ``admin`` and for a user that does not exist, alternating,
   fewer than the lockout threshold in a row, a correct login in between to reset the address).
2. Replication under a flood: a writing guest replicates A → B at a 1 s interval; for ``--seconds`` without
   and then with the flood (``standby.testing.flood``, ``--clients`` over ``--sources`` addresses on A),
   the median gap between B's new points and a correct user's median CIM ``GetInstance`` round trip from
   the bench process (another address).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import httpx

from bench.common import say
from standby.daemon.passwords import PasswordVerifier, hash_password
from standby.guest.build import build_guest
from standby.testing import cim, scenario
from standby.testing.cluster import TwoHosts
from standby.testing.flood import Watch, flood_sources, head_sequence, start_flood
from standby.testing.host import PASSWORD, USER, TestHost


def _ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1) if samples else float("nan")


def verifier_cost(rounds: int = 20) -> dict[str, float]:
    """Median ms of a refused ``verify`` for a known user (wrong password) and an unknown user."""
    verifier = PasswordVerifier({"admin": hash_password("right")})
    known: list[float] = []
    unknown: list[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        verifier.verify("admin", "wrong")
        known.append(time.perf_counter() - start)
        start = time.perf_counter()
        verifier.verify("nobody", "wrong")
        unknown.append(time.perf_counter() - start)
    return {"known_ms": _ms(known), "unknown_ms": _ms(unknown)}


def http_cost(host: TestHost, rounds: int = 10) -> dict[str, float]:
    """The same over HTTPS: median ms until B answers 401, for ``admin`` and for an unknown user (one kept
    connection, opened first; the order alternates)."""
    known: list[float] = []
    unknown: list[float] = []
    with host.daemon.https() as client:
        assert client.get("/api/v1/vms", auth=(USER, PASSWORD)).status_code == 200
        for i in range(rounds):
            pairs = [(USER, known), ("nobody", unknown)]
            for user, samples in pairs if i % 2 else pairs[::-1]:
                start = time.perf_counter()
                answer = client.get("/api/v1/vms", auth=(user, f"wrong-{i}"))
                samples.append(time.perf_counter() - start)
                assert answer.status_code == 401, answer.status_code
            assert client.get("/api/v1/vms", auth=(USER, PASSWORD)).status_code == 200  # resets the address
    return {"known_ms": _ms(known), "unknown_ms": _ms(unknown)}


def _window(site: TwoHosts, vm_id: str, seconds: float,
            flood: tuple[int, list[str]] | None) -> dict[str, object]:
    conn = site.b.cim()
    path = cim.vm_path(vm_id)
    watch = Watch.start(site, vm_id)
    first = head_sequence(site.b, vm_id)
    process = start_flood(site, flood[1], clients=flood[0], seconds=seconds) if flood else None
    started = time.monotonic()
    round_trips = []
    while time.monotonic() - started < seconds:
        begin = time.perf_counter()
        conn.GetInstance(path)
        round_trips.append(time.perf_counter() - begin)
        time.sleep(0.2)
    tally: object = None
    if process is not None:
        out, err = process.communicate(timeout=seconds + 120)
        tally = json.loads(out) if process.returncode == 0 else err
    watch.finish()
    gaps = watch.gaps()
    return {"seconds": round(time.monotonic() - started, 1), "points": head_sequence(site.b, vm_id) - first,
            "median_gap_s": round(statistics.median(gaps), 2) if gaps else None,
            "max_gap_s": round(max(gaps), 2) if gaps else None, "cim_get_instance_ms": _ms(round_trips),
            "correct_user_statuses": sorted({status for status, _ in watch.admitted}), "flood": tally}


def main() -> None:
    """Run both parts and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--sources", type=int, default=1)
    parser.add_argument("--skip-flood", action="store_true")
    args = parser.parse_args()
    result: dict[str, object] = {"verifier": verifier_cost()}
    say(f"verifier: {result['verifier']}")
    guest = build_guest()
    with TwoHosts.start() as site:
        result["https_401"] = http_cost(site.b)
        say(f"https 401: {result['https_401']}")
        if not args.skip_flood:
            vm = scenario.start_replicating_guest(site, guest, "flood", interval=1)
            result["baseline"] = _window(site, vm.vm_id, args.seconds, None)
            say(f"baseline: {result['baseline']}")
            sources = flood_sources(site, args.sources)
            result["flood"] = _window(site, vm.vm_id, args.seconds, (args.clients, sources))
            say(f"flood: {result['flood']}")
        site.a.close_sessions()
        site.b.close_sessions()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    try:
        main()
    except httpx.HTTPError as exc:
        raise SystemExit(f"bench failed: {exc}") from None
