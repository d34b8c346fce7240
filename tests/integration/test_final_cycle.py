"""Zero loss at a clean shutdown, between two real daemons with the real test guest (TCG).

The guest writes records on A, replicating to B at a 300 s interval, so after the initial replication no
regular cycle runs during the test. The guest powers itself off cleanly; the scheduler then sends one last
cycle from the stopped VM's persistent bitmaps, and B's head equals A's disk (sha256 of the flattened
images) without any planned failover. The clean-stop check still works after it: a start with the disk
untouched keeps replicating, a disk changed while off sends the relationship to state 9.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from standby.guest.build import GuestImage, build_guest
from standby.storage import chain
from standby.testing import guestvm, scenario
from standby.testing.cluster import TwoHosts
from standby.testing.host import TestHost

INTERVAL = 300  # no regular cycle within the test: only the initial replication and the last cycle


@pytest.fixture(scope="module")
def guest() -> GuestImage:
    return build_guest()


def _head_equals_disk(primary: TestHost, replica: TestHost, vm_id: str, beyond: int) -> tuple[int, str]:
    """Wait for a point after ``beyond`` on the replica whose content equals the primary's disk."""
    def probe() -> tuple[int, str] | None:
        try:
            disk = guestvm.image_sha256(guestvm.disk_path(primary, vm_id))
        except RuntimeError:  # qemu-img -U met the last cycle rewriting the image's bitmap directory
            return None
        found = [p for p in scenario.points(replica, vm_id) if (p.sequence or 0) > beyond]
        if not found:
            return None
        head = max(found, key=lambda p: p.sequence or 0)
        image = scenario.point_image(replica, vm_id, head)
        return (head.sequence or 0, disk) if guestvm.image_sha256(image) == disk else None

    return scenario.poll("the replica's head to equal the primary's disk", probe, timeout=180, interval=1)



def test_a_clean_shutdown_sends_the_last_changes(site: TwoHosts, guest: GuestImage) -> None:
    vm = guestvm.define_guest_vm(site.a, guest, "last", rate=100)
    guestvm.power(site.a, vm.vm_id, "start")
    ready = guestvm.wait_ready(site.a, vm.vm_id)
    scenario.enable_replication(site, site.a, vm, interval=INTERVAL)
    scenario.wait_state(site.a, vm.vm_id, scenario.REPLICATING)
    initial = scenario.wait_points(site.b, vm.vm_id, beyond=-1)
    first = max(p.sequence or 0 for p in initial)
    guestvm.wait_records(site.a, vm.vm_id, ready + 200)  # written after the initial replication's cut

    # The scheduler's first regular cycle runs right after the initial replication; the next is 300 s away.
    scenario.wait_points(site.b, vm.vm_id, beyond=first)  # the guest writes all the time: never a heartbeat
    before = scenario.wait_primary_settled(site.a, site.b, vm.vm_id, beyond=first)
    records = guestvm.shut_down(site.a, vm.vm_id)
    assert records is not None, "the guest did not power off cleanly"
    sequence, _ = _head_equals_disk(site.a, site.b, vm.vm_id, before)
    assert sequence == before + 1  # exactly one more cycle: the last one
    head = max(scenario.points(site.b, vm.vm_id), key=lambda p: p.sequence or 0)
    check = guestvm.check_image(scenario.point_image(site.b, vm.vm_id, head))
    assert check.good and check.records >= records, check.verdict()
    assert scenario.replication_state(site.a, vm.vm_id)[0] == scenario.REPLICATING

    # The last cycle re-stamped the images: starting the untouched VM keeps replicating.
    guestvm.power(site.a, vm.vm_id, "start")
    assert scenario.replication_state(site.a, vm.vm_id)[0] == scenario.REPLICATING
    guestvm.power(site.a, vm.vm_id, "stop")  # a hard power-off we asked for is a clean stop too
    sequence, _ = _head_equals_disk(site.a, site.b, vm.vm_id, sequence)

    # A disk changed while off is still detected when the VM starts (state 9). Written once the last
    # cycle is over: its restamp describes the images as that cycle left them.
    scenario.wait_primary_settled(site.a, site.b, vm.vm_id, beyond=sequence - 1)
    _write_off(guestvm.disk_path(site.a, vm.vm_id))
    guestvm.power(site.a, vm.vm_id, "start")
    scenario.wait_state(site.a, vm.vm_id, scenario.RESYNC_REQUIRED, timeout=30)
    guestvm.power(site.a, vm.vm_id, "stop")


def _write_off(image: Path) -> None:
    with chain.NbdServer(image, writable=True) as server, server.connect() as client:
        client.write(48 * 1024 * 1024, os.urandom(65536))
        client.flush()
