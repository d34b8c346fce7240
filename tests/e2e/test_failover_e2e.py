"""Issue 5, "Done when": failover, revert, commit, reverse, failback, planned failover and test failover
between two real daemons with the real test guest.

The writer resumes after the last good record it finds (``STANDBY-WRITER-START next=N``), so "no record
lost" is exact: a VM booted from a point resumes at that point's record count, and a VM booted after a
planned failover resumes where the other host's VM stopped (``STANDBY-WRITER-STOP next=N``).
"""

from __future__ import annotations

from standby.guest.build import GuestImage
from standby.testing import guestvm, scenario
from standby.testing.cim import PointInfo
from standby.testing.cluster import TwoHosts
from standby.testing.guestvm import GuestVm
from standby.testing.host import TestHost
from standby.testing.scenario import COMMITTED, RECOVERED, REPLICATING, SYNCED

PLANNED_ROUNDS = 10


def boot_and_write(host: TestHost, vm_id: str, more: int = 20) -> tuple[int, int]:
    """Start the VM, let the writer add ``more`` records, shut it down: (resumed at, stopped at)."""
    run = guestvm.run_writer(host, vm_id, more)
    assert run.stopped is not None and run.stopped >= run.resumed + more, f"no clean stop on {host.label}"
    assert run.disk.good and run.disk.records == run.stopped, f"{host.label} disk: {run.disk.verdict()}"
    return run.resumed, run.stopped


def point_records(host: TestHost, vm: GuestVm, point: PointInfo) -> int:
    check = guestvm.check_image(scenario.point_image(host, vm.vm_id, point))
    assert check.good, check.verdict()
    return check.records


def shut_down(host: TestHost, vm_id: str) -> int:
    stopped = guestvm.shut_down(host, vm_id)
    assert stopped is not None, f"the writer on {host.label} did not stop cleanly"
    return stopped


def test_failover_revert_failover_commit_reverse_failback(site: TwoHosts, guest: GuestImage) -> None:
    vm = scenario.start_replicating_guest(site, guest, rate=50, interval=2)
    scenario.wait_points(site.b, vm.vm_id, beyond=scenario.head_sequence(site.b, vm.vm_id) + 3)
    # The primary goes away cleanly; its last changes still reach B in one more cycle (zero loss).
    stopped_on_a = shut_down(site.a, vm.vm_id)
    scenario.wait_last_changes(site.b, vm.vm_id, stopped_on_a)
    state_before = scenario.replication_state(site.b, vm.vm_id)[0]
    found = scenario.points(site.b, vm.vm_id)
    latest, older = found[-1], found[len(found) // 2 - 1]
    latest_records, older_records = point_records(site.b, vm, latest), point_records(site.b, vm, older)
    assert older_records < latest_records == stopped_on_a

    scenario.failover(site.b, vm.vm_id)  # NULL: the latest point
    scenario.wait_state(site.b, vm.vm_id, RECOVERED)
    resumed, _ = boot_and_write(site.b, vm.vm_id)
    assert resumed == latest_records, "the failed-over VM must hold exactly the latest point's records"

    scenario.revert(site.b, vm.vm_id)
    scenario.wait_state(site.b, vm.vm_id, state_before)
    assert point_records(site.b, vm, latest) == latest_records, "revert must leave the points untouched"

    scenario.failover(site.b, vm.vm_id, older)
    scenario.wait_state(site.b, vm.vm_id, RECOVERED)
    resumed, _ = boot_and_write(site.b, vm.vm_id)
    assert resumed == older_records

    scenario.commit(site.b, vm.vm_id)
    scenario.wait_state(site.b, vm.vm_id, COMMITTED)
    scenario.reverse(site, site.b, vm)  # B is the primary now, A its replica
    scenario.wait_state(site.b, vm.vm_id, REPLICATING)
    _, written_on_b = boot_and_write(site.b, vm.vm_id, more=40)

    # Fail back: a planned failover from B to A.
    scenario.request_replication_state(site.b, vm.vm_id, SYNCED)
    scenario.wait_state(site.b, vm.vm_id, SYNCED)
    scenario.failover(site.a, vm.vm_id)
    scenario.wait_state(site.a, vm.vm_id, RECOVERED)
    scenario.reverse(site, site.a, vm)
    scenario.wait_state(site.a, vm.vm_id, REPLICATING)
    resumed, stopped = boot_and_write(site.a, vm.vm_id)
    assert resumed == written_on_b, "A must run the VM with every record the failed-over VM wrote"
    print(f"\nlatest point {latest_records} records, older {older_records}; B wrote up to {written_on_b}; "
          f"A resumed at {resumed} and stopped at {stopped}")


def test_planned_failover_ten_times_loses_no_record(site: TwoHosts, guest: GuestImage) -> None:
    vm = scenario.start_replicating_guest(site, guest, rate=50, interval=2)
    primary, replica = site.a, site.b
    written = shut_down(primary, vm.vm_id)
    for round_ in range(PLANNED_ROUNDS):
        scenario.request_replication_state(primary, vm.vm_id, SYNCED)
        scenario.wait_state(primary, vm.vm_id, SYNCED)
        scenario.failover(replica, vm.vm_id)
        scenario.wait_state(replica, vm.vm_id, RECOVERED)
        old_disk = guestvm.image_sha256(guestvm.disk_path(primary, vm.vm_id))
        new_disk = guestvm.image_sha256(guestvm.disk_path(replica, vm.vm_id))
        assert old_disk == new_disk, f"round {round_}: disks differ after the planned failover"
        scenario.reverse(site, replica, vm)
        scenario.wait_state(replica, vm.vm_id, REPLICATING)
        primary, replica = replica, primary
        if round_ % 3 == 2 or round_ == PLANNED_ROUNDS - 1:  # boot now and then (TCG is slow)
            resumed, stopped = boot_and_write(primary, vm.vm_id)
            assert resumed == written, f"round {round_}: resumed at {resumed}, but {written} were written"
            written = stopped
    print(f"\n{PLANNED_ROUNDS} planned failovers, {written} records, none lost")


def test_test_failover_while_the_primary_keeps_writing(site: TwoHosts, guest: GuestImage) -> None:
    vm = scenario.start_replicating_guest(site, guest, rate=50, interval=2)
    scenario.wait_points(site.b, vm.vm_id, beyond=scenario.head_sequence(site.b, vm.vm_id) + 2)
    before = scenario.points(site.b, vm.vm_id)
    test_id = scenario.test_failover(site.b, vm.vm_id)
    info = guestvm.vm_info(site.b, test_id)
    assert info["name"] == f"{vm.name} - Test" and info["replication_mode"] == 3
    offset = guestvm.console_offset(site.b, test_id)
    guestvm.power(site.b, test_id, "start")
    resumed = guestvm.wait_ready(site.b, test_id, after=offset)
    assert resumed >= point_records(site.b, vm, before[-1])
    head = scenario.head_sequence(site.b, vm.vm_id)
    scenario.wait_points(site.b, vm.vm_id, beyond=head + 2)  # replication goes on meanwhile
    guestvm.power(site.b, test_id, "stop")
    scenario.destroy_system(site.b, test_id)
    assert test_id not in [v["id"] for v in _vms(site.b)]
    after = {p.point_id for p in scenario.points(site.b, vm.vm_id)}
    assert {p.point_id for p in before} <= after, "the test failover removed recovery points"
    for point in scenario.points(site.b, vm.vm_id):
        point_records(site.b, vm, point)
    # The replica VM still follows its recovery-point chain (its head), not the test VM's overlay.
    head_image = guestvm.disk_path(site.b, vm.vm_id)
    assert head_image.parent.name == "d0" and head_image.name.startswith("rp-"), head_image
    assert scenario.replication_state(site.a, vm.vm_id)[0] == REPLICATING


def _vms(host: TestHost) -> list[dict[str, object]]:
    with host.control() as client:
        return list(client.get("/api/v1/vms").json())
