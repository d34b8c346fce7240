"""A recovery point cannot become a VM's disk (issue 13, item 6), between two real daemons.

The bug: on the replica host a recovery-point file was accepted as the disk of a new VM; starting that VM
rewrote the point and silently corrupted every later point built on it. Here the test guest writes on A
and replicates to B until B holds several points; A's VM is then powered off so nothing changes on B.
On B, DefineSystem (CIM) and POST /api/v1/vms (REST) are asked for a VM whose disk is each of B's point
files, the replica VM's own disk, a symlink and a hard link to a point outside the replica storage, and
an overlay whose backing file is a point. Every one is refused with the same code on both surfaces (403 /
32769 or 409 / 32774), a missing file with 404 / 32779, and no VM appears. Every point file is then the
same, byte for byte, as before (sha256 of the file and of its flattened content), still holds an exact
prefix of the guest's records, and replication goes on: a new point after the VM runs again verifies too.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import pywbem

from standby.guest.build import GuestImage, build_guest
from standby.storage import qemu_img
from standby.testing import guestvm, scenario
from standby.testing.cluster import TwoHosts
from standby.testing.host import TestHost


@pytest.fixture(scope="module")
def guest() -> GuestImage:
    return build_guest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fingerprints(host: TestHost, vm_id: str) -> dict[Path, tuple[str, str]]:
    """Every file of the replica's folder: (sha256 of its bytes, sha256 of its flattened content)."""
    found = sorted(host.replica_location.glob(f"*_{vm_id}/disks/*/rp-*.qcow2"))
    assert found, f"no point files of {vm_id} on {host.label}"
    return {path: (_file_sha256(path), guestvm.image_sha256(path)) for path in found}


def _vms(host: TestHost) -> list[str]:
    with host.control() as client:
        return sorted(vm["id"] for vm in client.get("/api/v1/vms").json())


def _rest_define(host: TestHost, name: str, path: str) -> tuple[int, int]:
    with host.control() as client:
        answer = client.post("/api/v1/vms", json={"name": name, "memory": "128M", "disks": [{"path": path}]})
    body = answer.json()
    assert set(body) == {"code", "name", "message"}, body
    return answer.status_code, int(body["code"])


def _cim_define(conn: Any, name: str, path: str) -> int:
    (vsms,) = conn.EnumerateInstanceNames("Msvm_VirtualSystemManagementService")
    vssd = pywbem.CIMInstance("Msvm_VirtualSystemSettingData", properties={"ElementName": name})
    disk = pywbem.CIMInstance("Msvm_StorageAllocationSettingData",
                              properties={"ResourceType": pywbem.Uint16(31), "HostResource": [path]})
    rv, _ = conn.InvokeMethod("DefineSystem", vsms, SystemSettings=vssd, ResourceSettings=[disk])
    return int(rv)


def test_no_point_file_becomes_a_disk_and_the_points_stay_intact(site: TwoHosts, guest: GuestImage) -> None:
    vm = scenario.start_replicating_guest(site, guest, "source", interval=2)
    first = scenario.head_sequence(site.b, vm.vm_id)
    scenario.wait_points(site.b, vm.vm_id, beyond=first + 2)
    guestvm.power(site.a, vm.vm_id, "stop")  # a hard power-off we asked for: its last cycle follows
    head = scenario.wait_primary_settled(site.a, site.b, vm.vm_id)
    points = scenario.points(site.b, vm.vm_id)
    assert len(points) >= 3, points
    before = _fingerprints(site.b, vm.vm_id)
    point_files = [scenario.point_image(site.b, vm.vm_id, p) for p in points]
    replica_disk = guestvm.disk_path(site.b, vm.vm_id)
    vms_before = _vms(site.b)

    outside = site.root / "imports"  # next to the hosts' data dirs, inside neither
    outside.mkdir()
    symlink = outside / "looks-harmless.qcow2"
    symlink.symlink_to(point_files[0])
    hard = outside / "hard-link.qcow2"
    os.link(point_files[1], hard)
    overlay = qemu_img.create_overlay(outside / "overlay.qcow2", point_files[-1], relative=False)

    cases: list[tuple[str, Path, int, int]] = [
        *((f"point {p.sequence}", f, 403, 32769) for p, f in zip(points, point_files, strict=True)),
        ("the replica VM's disk", replica_disk, 403, 32769),
        ("a symlink to a point", symlink, 403, 32769),
        ("a hard link to a point", hard, 403, 32769),
        ("an overlay over a point", overlay, 403, 32769),
        ("a missing file", outside / "missing.qcow2", 404, 32779),
    ]
    conn = site.b.cim()
    answers = {}
    for index, (what, path, status, code) in enumerate(cases):
        answers[what] = (_rest_define(site.b, f"stolen{index}", str(path)),
                         _cim_define(conn, f"stolen{index}c", str(path)))
        assert answers[what] == ((status, code), code), (what, answers[what])
    assert _vms(site.b) == vms_before

    # Nothing touched the points: the same bytes, and each still an exact prefix of the guest's records.
    assert _fingerprints(site.b, vm.vm_id) == before
    for image in point_files:
        check = guestvm.check_image(image)
        assert check.good, (image, check.verdict())

    # Replication goes on over the untouched chain.
    guestvm.power(site.a, vm.vm_id, "start")
    scenario.wait_points(site.b, vm.vm_id, beyond=head)
    newest = max(scenario.points(site.b, vm.vm_id), key=lambda p: p.sequence or 0)
    check = guestvm.check_image(scenario.point_image(site.b, vm.vm_id, newest))
    assert check.good, check.verdict()
    guestvm.power(site.a, vm.vm_id, "stop")
