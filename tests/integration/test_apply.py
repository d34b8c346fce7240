"""Applying logs on the replica with real qemu-img / qemu-nbd: every point equals the source's cut."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from standby.domain.entities import AuthorizationEntry, ReplicationSettings, ServiceSettings
from standby.domain.enums import RelationshipIndex, ReplicationState, VirtualSystemType
from standby.domain.errors import InvalidParameter, Unavailable
from standby.domain.replica import OutOfSequence
from standby.engine.apply import ApplyResult, ReplicaApplier
from standby.engine.replica import ReplicaSpec, ReplicaUseCases
from standby.storage import blockhash, chain, qemu_img
from standby.storage.logformat import DiskInfo, LogCorrupt, LogEncoder, LogHeader, LogKind
from standby.storage.nbd import STATE_HOLE, STATE_ZERO, NbdClient
from standby.store.sqlite import Database

MiB = 1024 * 1024
SIZE = 16 * MiB
VM_ID = "6A1B2C3D-0000-4000-8000-0000000000A1"
PRIMARY = "hv1.lab.example"
DISKS = ("disk0", "disk1")
Ranges = dict[str, list[tuple[int, int]]]


class FakeClock:
    """A settable clock: retention must not depend on the wall clock."""

    def __init__(self) -> None:
        self.now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _io(path: Path, *commands: str) -> None:
    args = ["qemu-io", "-f", "qcow2"]
    for command in commands:
        args += ["-c", command]
    subprocess.run([*args, str(path)], check=True, capture_output=True)


def _write_random(path: Path, offset: int, length: int) -> None:
    with chain.NbdServer(path, writable=True) as server, server.connect() as client:
        client.write(offset, os.urandom(length))
        client.flush()


def _same(a: Path, b: Path) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)], check=False).returncode == 0


@dataclass
class Rig:
    """A replica host's engine over a file database, and a primary's source images."""

    db: Database
    clock: FakeClock
    replica: ReplicaUseCases
    sources: dict[str, Path]
    location: Path

    def point_images(self, sequence: int) -> dict[str, Path]:
        point = next(p for p in self.db.recovery_points.list(vm_id=VM_ID) if p.sequence == sequence)
        return {disk_id: Path(path) for disk_id, path in point.images}

    def sequences(self) -> list[int]:
        return [p.sequence for p in self.db.recovery_points.list(vm_id=VM_ID)]

    def files(self) -> list[str]:
        return sorted(p.name for p in self.location.rglob("*") if p.is_file())

    def apply(self, sequence: int, parent: int, kind: LogKind, ranges: Ranges | None, *, app: bool = False,
              extra: dict[str, object] | None = None, cut: int | None = None) -> ApplyResult:
        chunks = build_log(self.sources, sequence, parent, kind, ranges, app=app, extra=extra or {},
                           cut_time=self.clock.now)
        if cut is not None:
            chunks = [b"".join(chunks)[:cut]]
        return asyncio.run(self._apply_settled(sequence, chunks))

    async def _apply_settled(self, sequence: int, chunks: list[bytes]) -> ApplyResult:
        # The replica answers before retention; the assertions here are about the chain after it.
        result = await self.replica.put_log(PRIMARY, VM_ID, sequence, stream(chunks))
        await self.replica.applier.settled(VM_ID)
        return result


def build_log(
    sources: dict[str, Path], sequence: int, parent: int, kind: LogKind, ranges: Ranges | None, *,
    app: bool, extra: dict[str, object], cut_time: datetime,
) -> list[bytes]:
    """Encode a log from the source images: every allocated extent (``ranges`` None) or the given ranges."""
    header = LogHeader(VM_ID, 0, sequence, parent, kind, cut_time.isoformat(),
                       tuple(DiskInfo(d, SIZE) for d in DISKS), application_consistent=app, extra=extra)
    encoder = LogEncoder(header)
    out = [encoder.header_bytes()]
    for index, disk_id in enumerate(DISKS):
        with chain.NbdServer(sources[disk_id], writable=False) as server, \
                server.connect([chain.BASE_ALLOCATION]) as client:
            wanted = ranges.get(disk_id, []) if ranges is not None else [
                (e.offset, e.length) for e in client.block_status(chain.BASE_ALLOCATION)
                if not e.flags & (STATE_HOLE | STATE_ZERO)]
            pieces = [(off + pos, min(4 * MiB, length - pos)) for off, length in wanted
                      for pos in range(0, length, 4 * MiB)]
            for offset, data in client.read_many(pieces):
                out.append(encoder.frame(index, offset, data))
    out.append(encoder.end())
    return out


async def stream(chunks: Iterable[bytes], piece: int = 64 * 1024) -> AsyncIterator[bytes]:
    """The log as HTTP would deliver it: small pieces, split anywhere."""
    data = b"".join(chunks)
    for offset in range(0, len(data), piece):
        yield data[offset:offset + piece]
        await asyncio.sleep(0)


@pytest.fixture()
def rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    verify_writes = bool(getattr(request, "param", False))  # ``[replica] verify_writes``; off by default
    db = Database.open(tmp_path / "replica.db")
    clock = FakeClock()
    location = tmp_path / "replicas"
    location.mkdir()
    db.service_settings.put(ServiceSettings(recovery_server_enabled=True))
    db.auth_entries.insert(AuthorizationEntry("*.lab.example", "lab", str(location)))
    replica = ReplicaUseCases(db, clock, ReplicaApplier(db, clock, verify_writes=verify_writes))
    sources = {}
    for disk_id in DISKS:
        sources[disk_id] = tmp_path / f"src-{disk_id}.qcow2"
        qemu_img.create(sources[disk_id], SIZE)
    _io(sources["disk0"], "write -P 0x11 0 2M", "write -P 0x12 9M 100k")
    _io(sources["disk1"], "write -P 0x21 1M 64k")
    spec = ReplicaSpec(VM_ID, "web", 256, 1, tuple((d, SIZE) for d in DISKS),
                       (("nic0", "52:54:00:00:00:01"),), ReplicationSettings(recovery_history=0))
    replica.create_replica(PRIMARY, spec)
    yield Rig(db, clock, replica, sources, location)
    db.close()


@pytest.mark.parametrize("rig", [False, True], indirect=True, ids=["verify-off", "verify-writes"])
def test_initial_and_deltas_equal_the_source(rig: Rig) -> None:
    first = rig.apply(1, 0, LogKind.INITIAL, None)
    assert first.applied and first.head_sequence == 1 and first.frames >= 3
    for disk_id in DISKS:
        assert _same(rig.sources[disk_id], rig.point_images(1)[disk_id])
    relationship = rig.db.relationships.get(VM_ID, 0)
    assert relationship.state == ReplicationState.REPLICATING
    assert relationship.last_apply_time == rig.clock.now
    vm = rig.db.vms.get(VM_ID)
    assert [d.path for d in vm.disks] == [str(rig.point_images(1)[d]) for d in DISKS]

    # A delta that overwrites, zeroes what existed, and writes unaligned bytes.
    _io(rig.sources["disk0"], "write -P 0x31 1M 64k", "write -z 9M 100k", "write -P 0x32 15M 3000")
    _io(rig.sources["disk1"], "write -z 1M 4k")
    delta = {"disk0": [(1 * MiB, 64 * 1024), (9 * MiB, 100 * 1024), (15 * MiB, 4096)],
             "disk1": [(1 * MiB, 4096)]}
    rig.clock.now += timedelta(minutes=5)
    second = rig.apply(2, 1, LogKind.DELTA, delta, app=True)
    assert second.applied and second.head_sequence == 2
    for disk_id in DISKS:
        assert _same(rig.sources[disk_id], rig.point_images(2)[disk_id])
    point = rig.db.recovery_points.latest(VM_ID)
    assert point is not None and point.kind == VirtualSystemType.REPLICA_APPLICATION_CONSISTENT
    assert rig.sequences() == [2]  # RecoveryHistory 0: only the latest point stays, merged down
    assert chain.backing_file(rig.point_images(2)["disk0"]) is None
    assert not [name for name in rig.files() if name.endswith(".partial")]


def test_lost_acknowledgement_repeat_and_out_of_sequence(rig: Rig) -> None:
    rig.db.relationships.update(replace(rig.db.relationships.get(VM_ID, 0),
                                        settings=ReplicationSettings(recovery_history=24)))
    rig.apply(1, 0, LogKind.INITIAL, None)
    _io(rig.sources["disk0"], "write -P 0x41 4M 64k")
    rig.apply(2, 1, LogKind.DELTA, {"disk0": [(4 * MiB, 64 * 1024)]})
    # The primary never saw the ack of 2: its next log has parent 1 and every block since cut 1.
    _io(rig.sources["disk0"], "write -P 0x42 6M 64k")
    third = rig.apply(3, 1, LogKind.DELTA, {"disk0": [(4 * MiB, 64 * 1024), (6 * MiB, 64 * 1024)]})
    assert third.applied and rig.sequences() == [1, 2, 3]
    assert _same(rig.sources["disk0"], rig.point_images(3)["disk0"])
    repeat = rig.apply(2, 1, LogKind.DELTA, {"disk0": [(4 * MiB, 64 * 1024)]})
    head = rig.db.recovery_points.latest(VM_ID)
    assert not repeat.applied and repeat.head_sequence == 3 and head and repeat.point_id == head.point_id
    with pytest.raises(OutOfSequence) as info:
        rig.apply(9, 8, LogKind.DELTA, {"disk0": [(4 * MiB, 4096)]})
    assert info.value.head_sequence == 3 and info.value.code == 32775
    with pytest.raises(OutOfSequence):
        rig.apply(4, 0, LogKind.INITIAL, None)
    assert rig.sequences() == [1, 2, 3]


@pytest.mark.parametrize("rig", [False, True], indirect=True, ids=["verify-off", "verify-writes"])
def test_truncated_or_damaged_log_leaves_nothing(rig: Rig) -> None:
    rig.apply(1, 0, LogKind.INITIAL, None)
    before = rig.files()
    _write_random(rig.sources["disk0"], 0, 4 * MiB)
    ranges = {"disk0": [(0, 4 * MiB)]}
    for cut in (5, 200, 100_000, 3_000_000, -1):
        with pytest.raises(LogCorrupt):
            rig.apply(2, 1, LogKind.DELTA, ranges, cut=cut)
        assert rig.files() == before and rig.sequences() == [1]
    with pytest.raises(LogCorrupt):  # applies cleanly but does not match the primary's digest
        rig.apply(2, 1, LogKind.DELTA, ranges, extra={"digests": {"disk0": "0" * 32}})
    assert rig.files() == before and rig.sequences() == [1]
    good = blockhash.image_digest(rig.sources["disk0"])
    assert rig.apply(2, 1, LogKind.DELTA, ranges, extra={"digests": {"disk0": good}}).applied
    with pytest.raises(InvalidParameter):
        asyncio.run(rig.replica.put_log(PRIMARY, VM_ID, 7, stream(
            build_log(rig.sources, 3, 2, LogKind.DELTA, {}, app=False, extra={}, cut_time=rig.clock.now))))


def test_a_frame_damaged_after_megabytes_were_written_leaves_nothing(rig: Rig) -> None:
    rig.apply(1, 0, LogKind.INITIAL, None)
    before = rig.files()
    _write_random(rig.sources["disk0"], 0, 12 * MiB)
    chunks = build_log(rig.sources, 2, 1, LogKind.DELTA, {"disk0": [(0, 12 * MiB)]}, app=False, extra={},
                       cut_time=rig.clock.now)
    log = bytearray(b"".join(chunks))
    log[9 * MiB] ^= 0x01  # inside the third 4 MiB frame: two frames are written by then
    with pytest.raises(LogCorrupt):
        asyncio.run(rig.replica.put_log(PRIMARY, VM_ID, 2, stream([bytes(log)])))
    assert rig.files() == before and rig.sequences() == [1]
    assert rig.apply(2, 1, LogKind.DELTA, {"disk0": [(0, 12 * MiB)]}).applied  # the same log, undamaged
    assert _same(rig.sources["disk0"], rig.point_images(2)["disk0"])


@pytest.mark.parametrize("rig", [True], indirect=True, ids=["verify-writes"])
def test_verify_writes_reads_every_range_back(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.apply(1, 0, LogKind.INITIAL, None)
    before = rig.files()
    _io(rig.sources["disk0"], "write -P 0x5a 2M 1M")
    real_read_many = NbdClient.read_many
    read_back: list[tuple[int, int]] = []

    def reads_differently(self: NbdClient, ranges: Iterable[tuple[int, int]],
                          depth: int = 8) -> Iterator[tuple[int, bytes]]:
        # A disk that returns other bytes than were written (a lost write): only a read-back sees it.
        if self.read_only:  # the primary's side of the rig, building the log
            yield from real_read_many(self, ranges, depth)
            return
        ranges = list(ranges)
        read_back.extend(ranges)
        for offset, data in real_read_many(self, ranges, depth):
            yield offset, bytes([data[0] ^ 0xFF]) + data[1:]

    monkeypatch.setattr(NbdClient, "read_many", reads_differently)
    with pytest.raises(LogCorrupt, match="reads back differently"):
        rig.apply(2, 1, LogKind.DELTA, {"disk0": [(2 * MiB, MiB)]})
    assert read_back == [(2 * MiB, MiB)]
    assert rig.files() == before and rig.sequences() == [1]
    rig.replica.applier.verify_writes = False  # the default: no read-back, so the same disk passes
    read_back.clear()
    assert rig.apply(2, 1, LogKind.DELTA, {"disk0": [(2 * MiB, MiB)]}).applied
    assert read_back == []
    assert _same(rig.sources["disk0"], rig.point_images(2)["disk0"])


def test_the_replica_answers_before_retention_which_holds_the_lock_until_done(rig: Rig) -> None:
    rig.apply(1, 0, LogKind.INITIAL, None)
    _io(rig.sources["disk0"], "write -P 0x66 5M 64k")
    chunks = build_log(rig.sources, 2, 1, LogKind.DELTA, {"disk0": [(5 * MiB, 65536)]}, app=False, extra={},
                       cut_time=rig.clock.now)
    applier = rig.replica.applier

    async def scenario() -> None:
        result = await rig.replica.put_log(PRIMARY, VM_ID, 2, stream(chunks))
        assert result.applied and result.head_sequence == 2
        # Durable and recorded when answered; RecoveryHistory 0 merges point 1 afterwards, under the lock.
        assert rig.sequences() == [1, 2]
        assert applier.lock(VM_ID).locked()
        await applier.settled(VM_ID)
        assert rig.sequences() == [2]
        assert not applier.lock(VM_ID).locked()
        await applier.settled(VM_ID)  # nothing pending: returns at once

    asyncio.run(scenario())
    assert _same(rig.sources["disk0"], rig.point_images(2)["disk0"])


def test_retention_merges_keep_every_remaining_point(rig: Rig) -> None:
    rig.db.relationships.update(replace(rig.db.relationships.get(VM_ID, 0),
                                        settings=ReplicationSettings(recovery_history=2)))
    rig.apply(1, 0, LogKind.INITIAL, None)
    digests: dict[int, str] = {1: blockhash.image_digest(rig.point_images(1)["disk0"])}
    for sequence in range(2, 9):
        rig.clock.now += timedelta(minutes=25)
        _io(rig.sources["disk0"], f"write -P {0x60 + sequence} {sequence}M 128k", "write -z 0 64k")
        ranges = {"disk0": [(sequence * MiB, 128 * 1024), (0, 65536)]}
        rig.apply(sequence, sequence - 1, LogKind.DELTA, ranges)
        digests[sequence] = blockhash.image_digest(rig.point_images(sequence)["disk0"])
        for kept in rig.sequences():
            assert blockhash.image_digest(rig.point_images(kept)["disk0"]) == digests[kept], kept
    kept = rig.sequences()
    assert 8 in kept and len(kept) < 8
    assert _same(rig.sources["disk0"], rig.point_images(8)["disk0"])
    images = sorted(p.name for p in (rig.location / f"web_{VM_ID}" / "disks" / "disk0").iterdir())
    assert images == [f"rp-{seq:010d}.qcow2" for seq in kept]


def test_logs_kept_aside_while_failed_over_then_applied(rig: Rig) -> None:
    rig.apply(1, 0, LogKind.INITIAL, None)
    relationship = rig.db.relationships.get(VM_ID, 0)
    rig.db.relationships.update(replace(relationship, state=ReplicationState.RECOVERED))
    _io(rig.sources["disk1"], "write -P 0x71 2M 64k")
    kept = rig.apply(2, 1, LogKind.DELTA, {"disk1": [(2 * MiB, 65536)]})
    assert kept.kept_aside and not kept.applied and rig.sequences() == [1]
    assert (rig.location / f"web_{VM_ID}" / "incoming" / "0000000002.sbylog").is_file()
    relationship = rig.db.relationships.get(VM_ID, 0)
    rig.db.relationships.update(replace(relationship, state=ReplicationState.SUSPENDED))
    with pytest.raises(Unavailable):
        rig.apply(3, 1, LogKind.DELTA, {"disk1": [(2 * MiB, 65536)]})
    rig.replica.set_state(PRIMARY, VM_ID, 3)
    results = asyncio.run(rig.replica.applier.apply_kept_logs(VM_ID))
    assert [r.head_sequence for r in results] == [2]
    assert _same(rig.sources["disk1"], rig.point_images(2)["disk1"])
    assert not (rig.location / f"web_{VM_ID}" / "incoming" / "0000000002.sbylog").exists()


def test_start_up_cleanup_and_journaled_merge(rig: Rig) -> None:
    rig.db.relationships.update(replace(rig.db.relationships.get(VM_ID, 0),
                                        settings=ReplicationSettings(recovery_history=24)))
    rig.apply(1, 0, LogKind.INITIAL, None)
    _io(rig.sources["disk0"], "write -P 0x44 3M 64k")
    rig.apply(2, 1, LogKind.DELTA, {"disk0": [(3 * MiB, 65536)]})
    expected = {d: blockhash.image_digest(p) for d, p in rig.point_images(2).items()}
    # A crash mid-merge of point 1 into 2: journaled, committed, not renamed yet.
    older, newer = rig.db.recovery_points.list(vm_id=VM_ID)
    rig.db.relationships.update(replace(rig.db.relationships.get(VM_ID, 0),
                                        intent=f"merge:{older.point_id}:{newer.point_id}"))
    subprocess.run(["qemu-img", "commit", "-q", "-d", str(rig.point_images(2)["disk0"])], check=True)
    # And leftovers of a crashed apply: a partial and an unrecorded (renamed) image.
    folder = rig.point_images(2)["disk1"].parent
    qemu_img.create_overlay(folder / "rp-0000000003.qcow2.partial", rig.point_images(2)["disk1"])
    qemu_img.create_overlay(folder / "rp-0000000004.qcow2", rig.point_images(2)["disk1"])
    asyncio.run(rig.replica.applier.recover())
    assert rig.sequences() == [2]
    assert rig.db.relationships.get(VM_ID, 0).intent is None
    assert {d: blockhash.image_digest(p) for d, p in rig.point_images(2).items()} == expected
    assert sorted(p.name for p in folder.iterdir()) == ["rp-0000000002.qcow2"]


def test_import_initial_replica_from_a_folder(rig: Rig, tmp_path: Path) -> None:
    export = tmp_path / "export" / f"web_{VM_ID}"
    export.mkdir(parents=True)
    data = b"".join(build_log(rig.sources, 1, 0, LogKind.INITIAL, None, app=False, extra={},
                              cut_time=rig.clock.now))
    (export / "initial.sblog").write_bytes(data)
    (export / "manifest.json").write_text("{}")
    results = asyncio.run(rig.replica.import_initial_replica(VM_ID, tmp_path / "export"))
    assert [r.head_sequence for r in results] == [1]
    assert _same(rig.sources["disk0"], rig.point_images(1)["disk0"])
    relationship = rig.db.relationships.get(VM_ID, int(RelationshipIndex.PRIMARY))
    assert relationship.state == ReplicationState.REPLICATING
