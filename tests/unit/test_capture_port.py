"""``engine.capture.Capture`` over the in-memory hypervisor: which port operations a cut, a commit, an abort
and a group cut's steps use, in which order, and what the bitmaps say afterwards. No QEMU: the QMP each
operation becomes is pinned in test_block_port.py.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from standby.domain.entities import Disk, VirtualMachine
from standby.domain.errors import StandbyError, Unavailable
from standby.engine.capture import GRANULARITY, Capture, TrackingLost
from standby.hypervisor.fake import FakeBlockOps, FakeHypervisor
from standby.hypervisor.port import Bitmap

MIB = 1 << 20
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
#: d1's size is not recorded: the hypervisor tells it.
VM = VirtualMachine("11111111-2222-3333-4444-555555555555", "vm1", 64, 1,
                    disks=(Disk("d0", "/nonexistent/d0.qcow2", 4 * MIB),
                           Disk("d1", "/nonexistent/d1.qcow2", 0)))


class World:
    def __init__(self, root: Path) -> None:
        self.hv = FakeHypervisor(check_files=False)
        self.capture = Capture(self.hv, root)
        asyncio.run(self.hv.start(VM))
        self.ops: FakeBlockOps = self.hv.block(VM.vm_id)
        self.ops.sizes["d1"] = 8 * MIB

    def run(self, coro: Any) -> Any:
        return asyncio.run(coro)

    def cut(self, sequence: int, previous: int | None, **kwargs: Any) -> Any:
        return self.run(self.capture.cut(VM.vm_id, VM.disks, sequence, previous=previous, now=NOW, **kwargs))

    def names(self, disk_id: str = "d0") -> list[tuple[str, bool]]:
        return [(b.name, b.recording) for b in self.ops.disk_bitmaps[disk_id].values()]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_cut_is_one_cut_operation_between_the_fleecing_nodes_and_the_export(world: World) -> None:
    cut = world.cut(1, None)
    assert world.ops.operations() == ["bitmaps", "bitmaps", "add_fleecing", "add_fleecing", "cut",
                                      "export_cut"]
    [(_, args)] = [call for call in world.ops.calls if call[0] == "cut"]
    assert args["disks"] == list(cut.fleeced()) and [d.disk_id for d in args["disks"]] == ["d0", "d1"]
    assert (args["new_bitmap"], args["old_bitmap"], args["granularity"]) == ("rep-1", None, GRANULARITY)
    sizes = [args["size"] for name, args in world.ops.calls if name == "add_fleecing"]
    assert sizes == [4 * MIB, None]
    assert set(world.ops.exports) == {"fleece-1-d0", "fleece-1-d1"}
    assert world.ops.nbd_socket == cut.socket and cut.online


def test_a_delta_cut_stops_the_previous_bitmap_and_exports_it(world: World) -> None:
    world.cut(1, None)
    world.run(world.capture.commit(VM.vm_id, VM.disks, 1))
    world.ops.write("d0", 8192)
    world.ops.calls.clear()
    world.cut(2, 1)
    [(_, args)] = [call for call in world.ops.calls if call[0] == "cut"]
    assert (args["new_bitmap"], args["old_bitmap"]) == ("rep-2", "rep-1")
    assert world.ops.operations() == ["bitmaps", "bitmaps", "add_fleecing", "add_fleecing", "cut",
                                      "export_cut"]
    assert world.ops.exports == {"fleece-2-d0": "rep-1", "fleece-2-d1": "rep-1"}
    assert world.names() == [("rep-1", False), ("rep-2", True)]


def test_commit_releases_the_cut_then_drops_the_older_bitmaps_in_one_step(world: World) -> None:
    world.cut(1, None)
    world.run(world.capture.commit(VM.vm_id, VM.disks, 1))
    world.cut(2, 1)
    world.ops.calls.clear()
    world.run(world.capture.commit(VM.vm_id, VM.disks, 2))
    assert world.ops.operations() == ["release_cut", "bitmaps", "bitmaps", "drop_bitmaps"]
    assert world.ops.calls[-1][1] == {"bitmaps": {"d0": ["rep-1"], "d1": ["rep-1"]}}
    assert world.names() == [("rep-2", True)] and not world.ops.jobs and not world.ops.nodes
    assert world.run(world.capture.tracking(VM.vm_id, VM.disks)) == 2


def test_abort_merges_what_the_failed_cut_covered_into_the_next_bitmap(world: World) -> None:
    world.cut(1, None)
    world.run(world.capture.commit(VM.vm_id, VM.disks, 1))
    world.ops.write("d0", 8192)
    world.cut(2, 1)
    world.ops.write("d0", 512)
    world.run(world.capture.abort(VM.vm_id, VM.disks, 2))
    world.run(world.capture.abort(VM.vm_id, VM.disks, 2))  # idempotent
    merges = [args for name, args in world.ops.calls if name == "merge_back"]
    assert merges[0] == {"bitmaps": {"d0": ["rep-1"], "d1": ["rep-1"]}, "into": "rep-2"}
    assert merges[1] == {"bitmaps": {"d0": [], "d1": []}, "into": "rep-2"}
    assert list(world.ops.disk_bitmaps["d0"].values()) == [Bitmap("rep-2", 8192 + 512)]
    assert world.run(world.capture.dirty_bytes(VM.vm_id, VM.disks, 2)) == 8192 + 512


def test_a_cut_that_never_happened_leaves_the_older_bitmap_recording(world: World) -> None:
    world.cut(1, None)
    world.run(world.capture.commit(VM.vm_id, VM.disks, 1))
    world.ops.fail["cut"] = Unavailable("QMP went away", message_id="QmpFailed")
    with pytest.raises(Unavailable):
        world.cut(2, 1)
    assert world.ops.operations()[-1] == "release_cut" and not world.ops.nodes
    world.run(world.capture.abort(VM.vm_id, VM.disks, 2))
    assert world.names() == [("rep-1", True)]
    assert not any(name == "merge_back" and args["bitmaps"] for name, args in world.ops.calls)


def test_dirty_bytes_count_only_a_recording_bitmap_of_every_disk(world: World) -> None:
    world.cut(1, None)
    world.run(world.capture.commit(VM.vm_id, VM.disks, 1))
    assert world.run(world.capture.dirty_bytes(VM.vm_id, VM.disks, 1)) == 0
    world.ops.write("d0", 4096)
    world.ops.write("d1", 512)
    assert world.run(world.capture.dirty_bytes(VM.vm_id, VM.disks, 1)) == 4608
    assert world.run(world.capture.dirty_bytes(VM.vm_id, VM.disks, 7)) is None
    world.cut(2, 1)  # rep-1 stopped recording: it no longer says what is written
    assert world.run(world.capture.dirty_bytes(VM.vm_id, VM.disks, 1)) is None


def test_a_killed_hypervisor_means_tracking_is_lost_and_a_fresh_cut_starts_over(world: World) -> None:
    world.cut(1, None)
    world.run(world.capture.commit(VM.vm_id, VM.disks, 1))
    world.run(world.hv.kill(VM.vm_id))
    world.run(world.hv.start(VM))
    with pytest.raises(TrackingLost):
        world.run(world.capture.tracking(VM.vm_id, VM.disks))
    with pytest.raises(TrackingLost):
        world.cut(2, 1)
    world.cut(2, None)  # a resync: the inconsistent bitmap is removed first
    assert world.names() == [("rep-2", True)]


def test_drop_tracking_settles_the_cut_and_removes_every_bitmap(world: World) -> None:
    world.cut(1, None)
    world.run(world.capture.commit(VM.vm_id, VM.disks, 1))
    world.cut(2, 1)
    world.run(world.capture.drop_tracking(VM.vm_id, VM.disks))
    assert world.ops.disk_bitmaps == {"d0": {}, "d1": {}} and not world.ops.exports


@pytest.mark.parametrize(("case", "expected"), [
    # (an agent answers, the freeze fails, the thaw fails) -> (app_consistent, app_consistent_failed)
    ((True, False, False), (True, False)),
    ((True, False, True), (True, False)),  # a failed thaw is logged; the cut stands
    ((True, True, False), (False, True)),
    ((False, False, False), (False, True)),
])
def test_an_app_consistent_cut_freezes_around_the_cut_operation_only(
        world: World, caplog: pytest.LogCaptureFixture, case: tuple[bool, bool, bool],
        expected: tuple[bool, bool]) -> None:
    agent, freeze_fails, thaw_fails = case
    frozen = expected[0]
    world.hv.agent = agent
    if freeze_fails:
        world.hv.freeze_error = StandbyError("guest-fsfreeze-freeze timed out", message_id="QmpTimeout")
    if thaw_fails:
        world.hv.thaw_error = StandbyError("guest-fsfreeze-thaw timed out", message_id="QmpTimeout")
    order: list[str] = []
    real_cut = world.ops.cut

    async def cut(*args: Any, **kwargs: Any) -> None:
        order.append(f"cut while {'frozen' if VM.vm_id in world.hv.frozen else 'running'}")
        await real_cut(*args, **kwargs)

    world.ops.cut = cut  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="standby.engine.capture"):
        done = world.cut(1, None, app_consistent=True)
    assert (done.app_consistent, done.app_consistent_failed) == expected
    assert order == [f"cut while {'frozen' if frozen else 'running'}"]
    assert not world.hv.frozen
    if frozen:
        assert world.hv.agent_calls == [("freeze", VM.vm_id), ("thaw", VM.vm_id)]
    assert any("thawing" in r.getMessage() for r in caplog.records) is thaw_fails


def test_a_group_cut_adds_the_bitmap_before_the_pause_and_cuts_without_adding_it(world: World) -> None:
    world.cut(1, None)
    world.run(world.capture.commit(VM.vm_id, VM.disks, 1))
    world.ops.calls.clear()
    cut = world.run(world.capture.prepare_cut(VM.vm_id, VM.disks, 2, previous=1, now=NOW))
    assert world.ops.operations() == ["bitmaps", "add_fleecing", "bitmaps", "add_fleecing", "add_bitmaps"]
    assert world.ops.calls[-1][1] == {"disk_ids": ["d0", "d1"], "name": "rep-2", "granularity": GRANULARITY}
    world.ops.calls.clear()
    world.run(world.capture.transact_cut(cut))
    assert world.ops.operations() == ["cut"]
    assert (world.ops.calls[0][1]["new_bitmap"], world.ops.calls[0][1]["old_bitmap"]) == (None, "rep-1")
    world.run(world.capture.export_cut(cut))
    assert world.ops.operations() == ["cut", "export_cut"]
    assert world.names() == [("rep-1", False), ("rep-2", True)]


def test_an_off_vm_is_not_asked_anything_online(world: World, tmp_path: Path) -> None:
    world.run(world.hv.stop(VM.vm_id))
    world.ops.calls.clear()
    assert world.run(world.capture.dirty_bytes(VM.vm_id, VM.disks, 1)) is None
    assert world.ops.calls == []
