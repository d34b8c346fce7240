"""The hypervisor port's disk operations (``BlockOps``): what the in-memory fake promises engine tests, and
how the QEMU driver spells each operation in QMP, without QEMU (a scripted QMP channel).

The QMP side pins the round trips the measured figures were taken with: a cut is one ``transaction`` however
many disks, and so is settling the bitmaps; the teardown keeps DESIGN §7's order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from standby.domain.entities import Disk, VirtualMachine
from standby.domain.errors import InvalidParameter, InvalidState, NotFound, StandbyError, Unavailable
from standby.hypervisor.fake import FakeBlockOps, FakeHypervisor
from standby.hypervisor.port import Bitmap, CutDisk
from standby.hypervisor.qemu.agent import GuestAgent
from standby.hypervisor.qemu.block import QemuBlockOps, QemuBlockPort

MIB = 1 << 20
GRAN = 64 * 1024


def _cut_disk(disk_id: str, sequence: int = 2, root: Path = Path("/nonexistent")) -> CutDisk:
    return CutDisk(disk_id, f"fleece-{sequence}-{disk_id}", f"cbw-{sequence}-{disk_id}",
                   root / f"fleece-{sequence}-{disk_id}.qcow2")


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- the fake's contract ------------------------------------------------------------------------------------


def _fake() -> FakeBlockOps:
    return FakeBlockOps({"d0": 4 * MIB, "d1": 8 * MIB})


async def _tracked(ops: FakeBlockOps, name: str = "rep-1") -> None:
    await ops.add_bitmaps(["d0", "d1"], name, granularity=GRAN)


async def _full_cut(ops: FakeBlockOps, disks: list[CutDisk], old: str | None = "rep-1") -> None:
    for disk in disks:
        await ops.add_fleecing(disk, None)
    await ops.cut(disks, new_bitmap="rep-2", old_bitmap=old, granularity=GRAN)
    await ops.export_cut(Path("/run/nbd.sock"), disks, bitmap=old)


def test_the_fake_cuts_exports_and_releases_as_qemu_would() -> None:
    ops = _fake()
    disks = [_cut_disk("d0"), _cut_disk("d1")]

    async def scenario() -> None:
        await _tracked(ops)
        ops.write("d0", 4096)
        await _full_cut(ops, disks)
        ops.write("d0", 512)
        assert await ops.bitmaps("d0") == [Bitmap("rep-1", 4096, recording=False), Bitmap("rep-2", 512)]
        assert set(ops.exports) == {"fleece-2-d0", "fleece-2-d1"} and ops.exports["fleece-2-d0"] == "rep-1"
        assert ops.jobs == {"cbw-2-d0", "cbw-2-d1"} and ops.nodes["fleece-2-d1"][1] == 8 * MIB
        await ops.release_cut(disks)
        await ops.release_cut(disks)  # nothing left: nothing to do
        assert not ops.exports and not ops.jobs and not ops.nodes

    _run(scenario())
    assert ops.operations() == ["add_bitmaps", "add_fleecing", "add_fleecing", "cut", "export_cut", "bitmaps",
                                "release_cut", "release_cut"]


Step = Callable[[FakeBlockOps, list[CutDisk]], Awaitable[None]]


async def _fleeced(ops: FakeBlockOps, disks: list[CutDisk]) -> None:
    for disk in disks:
        await ops.add_fleecing(disk, None)


async def _half_fleeced(ops: FakeBlockOps, disks: list[CutDisk]) -> None:
    await ops.add_fleecing(disks[0], None)


async def _other_has_rep2(ops: FakeBlockOps, disks: list[CutDisk]) -> None:
    await ops.add_bitmaps(["d1"], "rep-2", granularity=GRAN)


def _snapshot(ops: FakeBlockOps) -> tuple[object, ...]:
    return ({d: dict(b) for d, b in ops.disk_bitmaps.items()}, dict(ops.nodes), set(ops.jobs),
            dict(ops.exports))


@pytest.mark.parametrize(("setup", "refused", "error"), [
    pytest.param(_half_fleeced, lambda ops, disks: ops.cut(disks, new_bitmap="rep-2", old_bitmap="rep-1",
                                                           granularity=GRAN),
                 NotFound, id="a cut without every fleecing node"),
    pytest.param(_fleeced, lambda ops, disks: ops.cut(disks, new_bitmap="rep-1", old_bitmap=None,
                                                      granularity=GRAN),
                 InvalidParameter, id="a cut adding a bitmap that exists"),
    pytest.param(_fleeced, lambda ops, disks: ops.cut(disks, new_bitmap="rep-2", old_bitmap="rep-0",
                                                      granularity=GRAN),
                 NotFound, id="a cut stopping a bitmap that is not there"),
    pytest.param(_fleeced, lambda ops, disks: ops.export_cut(Path("/run/nbd.sock"), disks, bitmap="rep-1"),
                 InvalidState, id="an export of a bitmap that still records"),
    pytest.param(_full_cut, lambda ops, disks: ops.drop_bitmaps({"d0": ["rep-2"], "d1": ["rep-1"]}),
                 InvalidState, id="removing a bitmap an export uses"),
    pytest.param(_fleeced, lambda ops, disks: ops.merge_back({"d0": ["rep-1"], "d1": ["rep-1"]}, "rep-9"),
                 NotFound, id="merging into a bitmap that is not there"),
    pytest.param(_other_has_rep2, lambda ops, disks: ops.add_bitmaps(["d0", "d1"], "rep-2", granularity=GRAN),
                 InvalidParameter, id="adding a bitmap one disk has already"),
    pytest.param(_fleeced, lambda ops, disks: ops.add_fleecing(disks[0], None),
                 InvalidParameter, id="a fleecing node added twice"),
])
def test_the_fake_refuses_what_qemu_refuses_and_changes_nothing(setup: Step, refused: Step,
                                                                 error: type[StandbyError]) -> None:
    ops = _fake()
    disks = [_cut_disk("d0"), _cut_disk("d1")]

    async def scenario() -> None:
        await _tracked(ops)
        await setup(ops, disks)
        before = _snapshot(ops)
        with pytest.raises(error):
            await refused(ops, disks)
        assert _snapshot(ops) == before

    _run(scenario())


def test_merge_back_keeps_what_the_older_bitmap_marked() -> None:
    ops = _fake()

    async def scenario() -> list[Bitmap]:
        await _tracked(ops)
        ops.write("d0", 8192)
        await ops.add_bitmaps(["d0", "d1"], "rep-2", granularity=GRAN)
        ops.write("d0", 512)
        await ops.merge_back({"d0": ["rep-1"], "d1": []}, "rep-2")
        return await ops.bitmaps("d0")

    assert _run(scenario()) == [Bitmap("rep-2", 8192 + 2 * 512)]
    assert [b.name for b in ops.disk_bitmaps["d1"].values()] == ["rep-1", "rep-2"]


def test_a_failure_set_for_an_operation_raises_once_and_changes_nothing() -> None:
    ops = _fake()
    ops.fail["add_bitmaps"] = Unavailable("QMP went away", message_id="QmpFailed")

    async def scenario() -> None:
        with pytest.raises(Unavailable):
            await _tracked(ops)
        assert ops.disk_bitmaps == {"d0": {}, "d1": {}}
        await _tracked(ops)

    _run(scenario())
    assert [b.name for b in ops.disk_bitmaps["d0"].values()] == ["rep-1"]


def test_a_clean_stop_keeps_the_bitmaps_and_a_kill_leaves_them_inconsistent() -> None:
    hv = FakeHypervisor(check_files=False)
    vm = VirtualMachine("11111111-2222-3333-4444-555555555555", "vm1", 64, 1,
                        disks=(Disk("d0", "/nonexistent/d0.qcow2", MIB),))

    async def scenario() -> tuple[list[Bitmap], list[Bitmap]]:
        await hv.start(vm)
        ops = hv.block(vm.vm_id)
        await ops.add_bitmaps(["d0"], "rep-1", granularity=GRAN)
        await ops.add_fleecing(_cut_disk("d0"), None)
        await hv.stop(vm.vm_id)
        await hv.start(vm)
        kept = await hv.block(vm.vm_id).bitmaps("d0")
        assert not hv.block(vm.vm_id).nodes  # the process went, its nodes with it
        await hv.kill(vm.vm_id)
        await hv.start(vm)
        return kept, await hv.block(vm.vm_id).bitmaps("d0")

    kept, killed = _run(scenario())
    assert kept == [Bitmap("rep-1")]
    assert killed == [Bitmap("rep-1", inconsistent=True)] and not killed[0].counts_writes


@pytest.mark.parametrize(("bitmap", "counts"), [
    (Bitmap("rep-3", 65536), True),
    (Bitmap("", 65536), False),  # a copy-before-write job's own
    (Bitmap("rep-3", 0, recording=False), False),  # stopped: would read 0 forever
    (Bitmap("rep-3", 0, inconsistent=True), False),
])
def test_which_bitmaps_tell_what_was_written(bitmap: Bitmap, counts: bool) -> None:
    assert bitmap.counts_writes is counts


def test_the_fake_agent_freezes_and_thaws_or_is_absent() -> None:
    hv = FakeHypervisor(check_files=False)
    vm = VirtualMachine("11111111-2222-3333-4444-555555555555", "vm1", 64, 1, disks=())

    async def scenario() -> None:
        await hv.start(vm)
        frozen = await hv.freeze_filesystems(vm.vm_id)
        assert hv.frozen == {vm.vm_id}
        await frozen.thaw()
        hv.agent = False
        with pytest.raises(Unavailable):
            await hv.freeze_filesystems(vm.vm_id)
        assert await hv.vcpus_running(vm.vm_id)
        await hv.pause(vm.vm_id)
        assert not await hv.vcpus_running(vm.vm_id)

    _run(scenario())
    assert hv.agent_calls == [("freeze", vm.vm_id), ("thaw", vm.vm_id)] and not hv.frozen


# -- the QMP spelling ---------------------------------------------------------------------------------------


class ScriptedQmp:
    """Answers QMP as a QEMU with the format nodes of ``d0`` and ``d1`` would; records every command."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, dict[str, Any]]] = []
        self.exports: list[str] = []
        self.jobs: dict[str, str] = {}
        self.nodes = ["fmt-d0", "fmt-d1", "file-d0", "file-d1"]
        self.nbd_running = False

    def names(self) -> list[str]:
        return [name for name, _ in self.commands]

    async def execute(self, command: str, arguments: Mapping[str, Any] | None = None) -> Any:
        args = dict(arguments or {})
        self.commands.append((command, args))
        if command == "query-named-block-nodes":
            return [{"node-name": n, "image": {"virtual-size": 3 * MIB},
                     "dirty-bitmaps": [{"name": "rep-1", "count": 4096, "recording": True}]}
                    for n in self.nodes]
        if command == "blockdev-add":
            self.nodes.append(args["node-name"])
        elif command == "blockdev-del":
            self.nodes.remove(args["node-name"])
        elif command == "transaction":
            for action in args["actions"]:
                if action["type"] == "blockdev-backup":
                    self.jobs[action["data"]["job-id"]] = "running"
        elif command == "nbd-server-start":
            if self.nbd_running:
                raise StandbyError("NBD server already running", message_id="QmpCommandFailed")
            self.nbd_running = True
        elif command == "block-export-add":
            self.exports.append(args["id"])
        elif command == "block-export-del":
            self.exports.remove(args["id"])
        elif command == "query-block-exports":
            return [{"id": e} for e in self.exports]
        elif command == "query-jobs":
            return [{"id": j, "status": s} for j, s in self.jobs.items()]
        elif command == "job-cancel":
            self.jobs[args["id"]] = "concluded"
        elif command == "job-dismiss":
            del self.jobs[args["id"]]
        return {}

    @contextlib.asynccontextmanager
    async def listen(self, *names: str) -> AsyncIterator[Any]:
        yield None  # nothing is awaited: every export and job is gone by the time it is asked about


def _port(qmp: ScriptedQmp) -> QemuBlockPort:
    return QemuBlockPort(QemuBlockOps(qmp))  # type: ignore[arg-type]


def test_a_cut_of_two_disks_is_one_transaction(tmp_path: Path) -> None:
    qmp = ScriptedQmp()
    disks = [_cut_disk("d0", root=tmp_path), _cut_disk("d1", root=tmp_path)]

    async def scenario() -> None:
        port = _port(qmp)
        for disk in disks:
            await port.add_fleecing(disk, 2 * MIB)
        qmp.commands.clear()
        await port.cut(disks, new_bitmap="rep-2", old_bitmap="rep-1", granularity=GRAN)

    _run(scenario())
    assert qmp.names() == ["transaction"]
    actions = qmp.commands[0][1]["actions"]
    assert [(a["type"], a["data"].get("node") or a["data"]["device"]) for a in actions] == [
        ("block-dirty-bitmap-add", "fmt-d0"), ("block-dirty-bitmap-disable", "fmt-d0"),
        ("blockdev-backup", "fmt-d0"),
        ("block-dirty-bitmap-add", "fmt-d1"), ("block-dirty-bitmap-disable", "fmt-d1"),
        ("blockdev-backup", "fmt-d1")]
    assert actions[0]["data"] == {"node": "fmt-d0", "name": "rep-2", "persistent": True, "granularity": GRAN}
    assert actions[2]["data"] == {"job-id": "cbw-2-d0", "device": "fmt-d0", "target": "fleece-2-d0",
                                  "sync": "none", "auto-dismiss": False}


def test_a_group_members_paused_cut_adds_no_bitmap_and_a_fresh_one_stops_none() -> None:
    qmp = ScriptedQmp()
    _run(_port(qmp).cut([_cut_disk("d0")], new_bitmap=None, old_bitmap="rep-1", granularity=GRAN))
    _run(_port(qmp).cut([_cut_disk("d1")], new_bitmap="rep-2", old_bitmap=None, granularity=GRAN))
    assert [[a["type"] for a in args["actions"]] for _, args in qmp.commands] == [
        ["block-dirty-bitmap-disable", "blockdev-backup"], ["block-dirty-bitmap-add", "blockdev-backup"]]


def test_fleecing_asks_the_size_only_when_not_given(tmp_path: Path) -> None:
    qmp = ScriptedQmp()
    given, asked = _cut_disk("d0", root=tmp_path), _cut_disk("d1", root=tmp_path)
    _run(_port(qmp).add_fleecing(given, 2 * MIB))
    assert qmp.names() == ["blockdev-add"]
    assert qmp.commands[0][1] == {"driver": "qcow2", "node-name": "fleece-2-d0", "discard": "unmap",
                                  "file": {"driver": "file", "filename": str(given.scratch)},
                                  "backing": "fmt-d0"}
    _run(_port(qmp).add_fleecing(asked, None))
    assert qmp.names() == ["blockdev-add", "query-named-block-nodes", "blockdev-add"]
    assert given.scratch.is_file() and asked.scratch.is_file()


def test_exports_reuse_the_nbd_server_and_carry_the_stopped_bitmap() -> None:
    qmp = ScriptedQmp()
    port = _port(qmp)
    _run(port.export_cut(Path("/run/nbd.sock"), [_cut_disk("d0")], bitmap="rep-1"))
    _run(port.export_cut(Path("/run/nbd.sock"), [_cut_disk("d1", 3)], bitmap=None))
    adds = [args for name, args in qmp.commands if name == "block-export-add"]
    assert qmp.names() == ["nbd-server-start", "block-export-add", "nbd-server-start", "block-export-add"]
    assert adds[0] == {"type": "nbd", "id": "fleece-2-d0", "node-name": "fleece-2-d0", "name": "fleece-2-d0",
                       "writable": False, "allocation-depth": True, "bitmaps": ["rep-1"]}
    assert "bitmaps" not in adds[1]


def test_settling_bitmaps_is_one_transaction_and_nothing_is_no_request() -> None:
    qmp = ScriptedQmp()
    port = _port(qmp)
    _run(port.merge_back({"d0": ["rep-1"], "d1": ["rep-0", "rep-1"]}, "rep-2"))
    _run(port.drop_bitmaps({"d0": ["rep-1"], "d1": ["rep-1"]}))
    _run(port.drop_bitmaps({"d0": []}))
    _run(port.merge_back({"d0": []}, "rep-2"))
    assert qmp.names() == ["transaction", "transaction"]
    merged, dropped = (args["actions"] for _, args in qmp.commands)
    assert [(a["type"], a["data"]["node"]) for a in merged] == [
        ("block-dirty-bitmap-merge", "fmt-d0"), ("block-dirty-bitmap-remove", "fmt-d0"),
        ("block-dirty-bitmap-merge", "fmt-d1"), ("block-dirty-bitmap-remove", "fmt-d1"),
        ("block-dirty-bitmap-remove", "fmt-d1")]
    assert merged[2]["data"] == {"node": "fmt-d1", "target": "rep-2", "bitmaps": ["rep-0", "rep-1"]}
    assert [a["type"] for a in dropped] == ["block-dirty-bitmap-remove"] * 2


def test_release_tears_down_in_design_order_and_skips_what_is_gone(tmp_path: Path) -> None:
    qmp = ScriptedQmp()
    disks = [_cut_disk("d0", root=tmp_path), _cut_disk("d1", root=tmp_path)]

    async def scenario() -> None:
        port = _port(qmp)
        for disk in disks:
            await port.add_fleecing(disk, MIB)
        await port.cut(disks, new_bitmap="rep-2", old_bitmap="rep-1", granularity=GRAN)
        await port.export_cut(tmp_path / "nbd.sock", disks[:1], bitmap="rep-1")
        qmp.commands.clear()
        await port.release_cut(disks)

    _run(scenario())
    assert qmp.names() == ["query-block-exports", "block-export-del", "query-block-exports", "query-jobs",
                           "job-cancel", "query-jobs", "job-dismiss", "job-cancel", "query-jobs",
                           "job-dismiss", "query-named-block-nodes", "blockdev-del", "blockdev-del"]
    assert qmp.commands[1][1] == {"id": "fleece-2-d0", "mode": "hard"}
    assert not any(disk.scratch.exists() for disk in disks)
    qmp.commands.clear()
    _run(_port(qmp).release_cut(disks))
    assert qmp.names() == ["query-block-exports", "query-jobs", "query-named-block-nodes"]


def test_bitmaps_are_read_from_the_disks_format_node() -> None:
    qmp = ScriptedQmp()
    assert _run(_port(qmp).bitmaps("d1")) == [Bitmap("rep-1", 4096)]
    assert qmp.commands == [("query-named-block-nodes", {"flat": True})]


# -- the agent's freeze -------------------------------------------------------------------------------------


class AgentChannel:
    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.commands: list[str] = []
        self.closed = False

    async def execute(self, command: str, arguments: Mapping[str, Any] | None = None, *,
                      timeout: float | None = 30.0) -> Any:
        self.commands.append(command)
        if command in self.failing:
            raise StandbyError(f"{command} failed", message_id="QmpCommandFailed")
        return {}

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(("failing", "commands", "raises"), [
    (set(), ["guest-fsfreeze-freeze", "guest-fsfreeze-thaw"], False),
    ({"guest-fsfreeze-freeze"}, ["guest-fsfreeze-freeze", "guest-fsfreeze-thaw"], True),
    ({"guest-fsfreeze-thaw"}, ["guest-fsfreeze-freeze", "guest-fsfreeze-thaw"], True),
])
def test_the_agent_thaws_after_a_failed_freeze_and_always_lets_go(failing: set[str], commands: list[str],
                                                                  raises: bool) -> None:
    agent = GuestAgent(Path("/nonexistent/qga.sock"), "vm1")
    channel = AgentChannel(failing)
    agent._channel = channel  # type: ignore[assignment]

    async def scenario() -> None:
        frozen = await agent.freeze_filesystems()
        await frozen.thaw()

    if raises:
        with pytest.raises(StandbyError):
            _run(scenario())
    else:
        _run(scenario())
    assert channel.commands == commands and channel.closed
