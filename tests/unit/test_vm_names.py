"""VM names are checked once, when the VM is created, by ``domain.vm_names.check_vm_name`` (issue 13: a
name with ``/`` was accepted and failed only when replication named a folder after it).

The table, the promise that any accepted name can name a replica folder, the engine entry, and CIM
``DefineSystem`` and REST ``POST /api/v1/vms`` answering alike for every row.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from standby.api.app import create_app
from standby.domain.errors import InvalidParameter
from standby.domain.replica import replica_folder_name
from standby.domain.vm_names import MAX_VM_NAME, check_vm_name
from standby.engine.vms import VmRequest, VmUseCases
from standby.hypervisor.fake import FakeHypervisor
from standby.storage.qemu_img import ImageInfo
from standby.store.sqlite import Database
from tests.unit.test_cim_support import World, embedded, make_world, service_path

VM_ID = "4A0C2E6B-1111-4C3B-9D51-000000000001"
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

ACCEPTED = [
    ("web01", "web01"),
    ("  web01\t", "web01"),  # trimmed
    ("Web Server (prod) #2", "Web Server (prod) #2"),
    ("Datenbank-Müller", "Datenbank-Müller"),
    ("サーバー", "サーバー"),
    ("a.b", "a.b"),
    ("...", "..."),
    (".hidden", ".hidden"),
    ("x" * MAX_VM_NAME, "x" * MAX_VM_NAME),
    (" " + "y" * MAX_VM_NAME + " ", "y" * MAX_VM_NAME),  # the limit counts the trimmed name
    ("a:b*c?", "a:b*c?"),
]

REFUSED = [
    ("", "BadVmName"),
    ("   ", "BadVmName"),
    ("x" * (MAX_VM_NAME + 1), "BadVmName"),
    ("a\nb", "BadVmName"),
    ("a\x00b", "BadVmName"),
    ("a\x7fb", "BadVmName"),  # DEL
    ("a\x85b", "BadVmName"),  # C1 next line
    ("a\u2028b", "BadVmName"),  # line separator
    ("a\ud800b", "BadVmName"),  # a lone surrogate (JSON can carry one)
    ("a/b", "VmNameNotPlain"),
    ("/", "VmNameNotPlain"),
    ("../etc", "VmNameNotPlain"),
    ("a\\b", "VmNameNotPlain"),
    (".", "VmNameNotPlain"),
    ("..", "VmNameNotPlain"),
    (" .. ", "VmNameNotPlain"),
]


@pytest.mark.parametrize(("name", "expected"), ACCEPTED)
def test_accepted_names(name: str, expected: str) -> None:
    assert check_vm_name(name) == expected
    assert replica_folder_name(check_vm_name(name), VM_ID) == f"{expected}_{VM_ID}"


@pytest.mark.parametrize(("name", "message_id"), REFUSED)
def test_refused_names(name: str, message_id: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        check_vm_name(name)
    assert caught.value.message_id == message_id


def test_every_accepted_name_can_name_a_replica_folder() -> None:
    # Replication refuses what cannot be one folder; creation must refuse at least that much.
    for code in range(0x3000):
        ch = chr(code)
        try:
            name = check_vm_name(f"a{ch}b")
        except InvalidParameter:
            continue
        replica_folder_name(name, VM_ID)


class NoImages:
    """A VM booting a kernel has no disk images to make or read."""

    def create_qcow2(self, path: Path, size_bytes: int) -> None:
        raise AssertionError("no disk was asked for")

    def image_info(self, path: Path) -> ImageInfo:
        raise AssertionError("no disk was asked for")


def test_the_engine_entry_checks_the_name(tmp_path: Path) -> None:
    db = Database.memory()
    vms = VmUseCases(db, FakeHypervisor(check_files=False), lambda: NOW, vm_dir=tmp_path / "vms",
                     images=NoImages())
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    with pytest.raises(InvalidParameter, match="folder"):
        vms.define(VmRequest("web/01", kernel=str(kernel)))
    assert db.vms.list() == []
    assert vms.define(VmRequest("  web01 ", kernel=str(kernel))).name == "web01"


# -- both surfaces ----------------------------------------------------------------------------------------

VSMS = service_path("Msvm_VirtualSystemManagementService", "vmms")
# REST takes the name as JSON text; a lone surrogate cannot be sent as UTF-8 by the test client.
SURFACE_ROWS = [(name, 0) for name, _ in ACCEPTED] + [
    (name, 32773) for name, _ in REFUSED if "\ud800" not in name
] + [("z" * 2000, 32773)]


@pytest.fixture(scope="module")
def surfaces() -> Iterator[tuple[World, TestClient, str]]:
    world = make_world()
    kernel = world.services.config.data_dir.parent / f"{world.services.config.data_dir.name}-vmlinuz"
    kernel.write_bytes(b"kernel")
    with TestClient(create_app(world.services), raise_server_exceptions=True) as client:
        yield world, client, str(kernel)
    world.services.close()


@pytest.mark.parametrize(("name", "code"), SURFACE_ROWS, ids=[repr(r[0])[:40] for r in SURFACE_ROWS])
def test_cim_and_rest_answer_alike(surfaces: tuple[World, TestClient, str], name: str, code: int) -> None:
    world, client, kernel = surfaces
    world.reset()
    settings = embedded("Msvm_VirtualSystemSettingData", ElementName=name, KernelPath=kernel)
    cim_code, _ = world.invoke(VSMS, "DefineSystem", SystemSettings=settings, ResourceSettings=[])
    cim_names = [vm.name for vm in world.db.vms.list()]
    world.reset()
    answer = client.post("/api/v1/vms", json={"name": name, "kernel": kernel})
    rest_code = 0 if answer.status_code == 201 else answer.json()["code"]
    assert answer.status_code in (201, 400), answer.text
    assert (cim_code, rest_code) == (code, code)
    assert [vm.name for vm in world.db.vms.list()] == cim_names == ([name.strip()] if code == 0 else [])
