"""A wrong-password flood against the replica's HTTPS listener (REST and CIM-XML) while a writing guest
replicates A → B every second.

The flood (``standby.testing.flood``, its own process) comes from host C, a third host of the site at neither
end of the relationship (inside C's namespace, or a spare loopback address); the test process is "another
address". Shown: B keeps making recovery points
during the flood; flood clients are answered 429 once their address passed the failure threshold (and few
passwords are checked at all); a correct user from another address is admitted throughout; B's audit log
holds the failures, the lockout and state-changing calls, and stays small however many requests came.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from standby.guest.build import GuestImage, build_guest
from standby.testing import scenario
from standby.testing.cluster import TwoHosts
from standby.testing.flood import Watch, audit_lines, flood_sources, head_sequence, start_flood

INTERVAL = 1


@pytest.fixture(scope="module")
def guest() -> GuestImage:
    return build_guest()


@pytest.fixture()
def json_site() -> Iterator[TwoHosts]:
    """A, B and the flooding host C with JSON logs (the audit lines are read back from B's log)."""
    hosts = TwoHosts.start(extra_config='[log]\nformat = "json"\n', third_host=True)
    try:
        yield hosts
    finally:
        assert not hosts.close(), "processes outlived their daemons"


@dataclass(frozen=True)
class FloodResult:
    flood: dict[str, Any]
    made: int
    seconds: float
    gaps: list[float]
    admitted: list[tuple[int, float]]


def _flood_while_replicating(site: TwoHosts, guest: GuestImage, *, clients: int, seconds: float,
                             sources: int) -> tuple[FloodResult, list[str]]:
    vm = scenario.start_replicating_guest(site, guest, "flooded", interval=INTERVAL)
    addresses = flood_sources(site, sources)
    watch = Watch.start(site, vm.vm_id)
    first = head_sequence(site.b, vm.vm_id)
    started = time.monotonic()
    flood = start_flood(site, addresses, clients=clients, seconds=seconds)
    out, err = flood.communicate(timeout=seconds + 120)
    elapsed = time.monotonic() - started
    made = head_sequence(site.b, vm.vm_id) - first
    watch.finish()
    assert flood.returncode == 0, err
    result = FloodResult(json.loads(out), made, elapsed, watch.gaps(), watch.admitted)
    print(f"\nflood: {result.flood}\npoints made: {made} in {elapsed:.1f} s (interval {INTERVAL} s); "
          f"median gap {statistics.median(result.gaps) if result.gaps else float('nan'):.2f} s; "
          f"correct user: {len(result.admitted)} answers, median "
          f"{statistics.median(t for _, t in result.admitted) * 1000 if result.admitted else 0:.0f} ms")
    return result, addresses


def test_password_flood_leaves_replication_and_other_users_alone(json_site: TwoHosts,
                                                                 guest: GuestImage) -> None:
    site = json_site
    result, sources = _flood_while_replicating(site, guest, clients=20, seconds=10, sources=1)

    # Replication kept going: at a 1 s interval about one point a second; a third of that is plenty.
    assert result.made >= max(3, int(result.seconds / INTERVAL / 3)), result
    # Past the threshold the address is answered 429 without a check; few passwords were checked at all.
    statuses = {int(k): v for k, v in result.flood["statuses"].items()}
    assert set(statuses) <= {401, 429}, result.flood
    assert statuses.get(429, 0) > 10 * statuses.get(401, 0) > 0, result.flood
    assert statuses.get(401, 0) <= 30, result.flood
    # The correct user from another address was admitted every time.
    assert result.admitted and all(status == 200 for status, _ in result.admitted), result.admitted

    # The audit log: each checked failure, the lockout, the calls that changed state; not one line a request.
    with site.b.rest() as rest:
        defined = rest.post("/api/v1/vms", json={"name": "audited", "memory": "128M", "cpus": 1,
                                                 "disks": [{"size": "16M"}]})
    assert defined.status_code in (200, 201), defined.text
    audit = audit_lines(site.b)
    failed = [a for a in audit if a.get("event") == "auth" and a.get("result") == "failed"]
    locked = [a for a in audit if a.get("event") == "auth" and a.get("result") == "locked_out"]
    assert failed and all(a["address"] == sources[0] and a["user"] == "admin" and a["listener"] == "https"
                          for a in failed), failed[:3]
    assert locked and locked[0]["address"] == sources[0] and locked[0]["retry_after"] > 0, locked
    assert len(failed) + len(locked) < result.flood["requests"] / 10, (len(failed), result.flood)
    calls = [a for a in audit if a.get("event") == "call"]
    assert any(c["who"] == "admin" and c["what"] == "POST /api/v1/vms" and c["status"] == 201
               and c["listener"] == "https" for c in calls), calls[-5:]
    # The site's set-up ran CIM extrinsic methods on B over HTTPS: audited with class, method and result.
    assert any(c["what"] == "Msvm_ReplicationService.AddAuthorizationEntry" and c["who"] == "admin"
               and c.get("return_value") == 0 for c in calls), [c["what"] for c in calls]
    datetime.fromisoformat(str(calls[-1]["ts"]))  # timestamped like every daemon line


@pytest.mark.slow
def test_large_password_flood_from_many_addresses(json_site: TwoHosts, guest: GuestImage) -> None:
    """60 clients over 20 addresses for 40 s: limiter and the bounded pool together."""
    site = json_site
    result, _ = _flood_while_replicating(site, guest, clients=60, seconds=40, sources=20)
    statuses = {int(k): v for k, v in result.flood["statuses"].items()}
    assert set(statuses) <= {401, 429, 503}, result.flood
    assert statuses.get(429, 0) > statuses.get(401, 0), result.flood
    assert result.made >= max(5, int(result.seconds / INTERVAL / 3)), result
    assert result.gaps and statistics.median(result.gaps) <= 3 * INTERVAL, result.gaps
    assert result.admitted and all(status == 200 for status, _ in result.admitted), result.admitted
