"""P9: how long a group-consistent cut pauses the VMs of a collection, for 3 and 10 VMs.

N VMs of the in-process primary (64 MiB RAM, running) each replicate to B, and form one collection; the
product's ``GroupCycle`` (engine/group_cycle.py) then runs group cycles: fleecing nodes added while the
guests run, every member paused with QMP ``stop`` and its bitmap + copy-before-write transaction sent right
after its own ``stop``, ``cont`` for all once every transaction answered, then the logs shipped with the cut
tag. 1 MiB is written to every member before each cycle.

Two figures per size, because they differ:
* the **window** — what the group cycle measures and records itself: from the first ``stop`` sent to the
  last ``cont`` answered, in the bench's clock. It bounds every member's pause (the row's target);
* the **guest-visible pause** — how long a member's vCPUs were actually halted: QEMU's own ``STOP`` →
  ``RESUME`` event timestamps of that member (QEMU stamps them when it stops and restarts the vCPUs, so the
  reply latencies at both ends are not in it). Reported for the longest-paused member of each cycle, with
  the group's span (first ``STOP`` to last ``RESUME`` over all members) in the note.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path
from typing import Any

from bench.common import Figure, MiB, Options, median, percentile, say, scratch, unavailable
from bench.rig import Primary, PrimaryVm, Site, now, pattern_file
from standby.domain.entities import Collection
from standby.domain.enums import CollectionReplicationState, ReplicationMode

TARGET_MS = 20.0


def _stamp(event: dict[str, Any]) -> float:
    """An event's QEMU timestamp in seconds (CLOCK_REALTIME of the QEMU process)."""
    when = event.get("timestamp", {})
    return float(when.get("seconds", 0)) + float(when.get("microseconds", 0)) / 1e6


async def _drain(stream: Any) -> list[dict[str, Any]]:
    """Every event already received by one listener (the RESUME before a ``cont`` answer is, by then)."""
    events = []
    with contextlib.suppress(Exception):
        while True:
            events.append(await stream.get(timeout=0.05))
    return events


async def _guest_pauses(streams: list[Any]) -> tuple[float, float]:
    """(longest member STOP→RESUME, span first STOP → last RESUME) in ms, from QEMU's event stamps."""
    stops, resumes, longest = [], [], 0.0
    for events in await asyncio.gather(*(_drain(stream) for stream in streams)):
        stop = [_stamp(e) for e in events if e.get("event") == "STOP"]
        resume = [_stamp(e) for e in events if e.get("event") == "RESUME"]
        if stop and resume:
            longest = max(longest, (resume[-1] - stop[-1]) * 1000.0)
            stops.append(stop[-1])
            resumes.append(resume[-1])
    span = (max(resumes) - min(stops)) * 1000.0 if stops else 0.0
    return longest, span


async def _pauses(site: Site, folder: Path, count: int, cycles: int) -> tuple[list[float], list[float],
                                                                               list[float]]:
    from standby.engine.group_cycle import GroupCycle, QmpPauser

    primary = Primary(site.get(), folder / f"a{count}")
    try:
        vms: list[PrimaryVm] = []
        for i in range(count):
            vm = await primary.add_vm(f"g{count}-{i}", 256 * MiB)
            await primary.enable(vm, primary.settings())
            vms.append(vm)
        collection = primary.db.collections.insert(Collection(
            str(uuid.uuid4()).upper(), f"group{count}", tuple(vm.vm_id for vm in vms),
            ReplicationMode.PRIMARY, CollectionReplicationState.REPLICATING))
        group = GroupCycle(primary.db, primary.runner, primary.capture, QmpPauser(primary.hv), now)
        source = pattern_file(folder / "pattern", MiB)
        windows, guest, spans = [], [], []
        async with contextlib.AsyncExitStack() as stack:
            # The driver's QMP channel of each VM (a measuring tool may look inside): its STOP/RESUME events.
            channels = [primary.hv._running(vm.vm_id).qmp for vm in vms]
            streams = [await stack.enter_async_context(channel.listen("STOP", "RESUME"))
                       for channel in channels]
            for _ in range(cycles):
                for vm in vms:
                    await primary.write(vm, 0, MiB, source)
                await asyncio.gather(*(_drain(stream) for stream in streams))
                result = await group.run(collection.collection_id)
                if result.detail:
                    raise RuntimeError(f"group cycle {result.outcome}: {result.detail}")
                windows.append(result.pause_ms)
                longest, span = await _guest_pauses(streams)
                guest.append(longest)
                spans.append(span)
        for vm in vms:
            primary.forget_replica(vm)
        return windows, guest, spans
    finally:
        await primary.close()


def run_row(site: Site, opts: Options) -> list[Figure]:
    """The row's figures ("not available yet" while engine/group_cycle.py is missing)."""
    try:
        import standby.engine.group_cycle  # noqa: F401
    except ImportError as exc:
        return [unavailable("P9", "group cut pause", f"no group cycle in this checkout ({exc})",
                            f"≤ {TARGET_MS:.0f} ms for 10 VMs")]
    cycles = 5 if opts.quick else max(10, opts.repeat)
    figures = []
    with scratch("p9") as folder:
        for count in (3, 10):
            say(f"P9: {count} VMs, {cycles} group cycles")
            windows, guest, spans = asyncio.run(_pauses(site, folder, count, cycles))
            aimed = count == 10
            figures.append(Figure(
                "P9", f"group cut pause, {count} VMs (window: first stop sent → last cont answered)",
                median(windows), "ms median",
                target=f"≤ {TARGET_MS:.0f} ms" if aimed else "",
                met=median(windows) <= TARGET_MS if aimed else None,
                samples=[round(p, 1) for p in windows],
                note=f"max {max(windows):.1f} ms, p90 {percentile(windows, 90):.1f} ms, {cycles} cycles"))
            figures.append(Figure(
                "P9", f"guest-visible pause, {count} VMs (QEMU STOP → RESUME, longest member)",
                median(guest), "ms median", samples=[round(p, 1) for p in guest],
                note=f"max {max(guest):.1f} ms; group span first STOP → last RESUME: median "
                     f"{median(spans):.1f} ms, max {max(spans):.1f} ms"))
    return figures
