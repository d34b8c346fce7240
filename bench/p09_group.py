"""P9: how long a group-consistent cut pauses the VMs of a collection, for 3 and 10 VMs.

N VMs of the in-process primary (64 MiB RAM, running) each replicate to B, and form one collection; the
product's ``GroupCycle`` (engine/group_cycle.py) then runs group cycles: fleecing nodes added while the
guests run, every member paused with QMP ``stop``, each member's bitmap + copy-before-write transaction,
``cont`` for all, then the logs shipped with the cut tag. The figure is the pause the group cycle measures
itself (stop of the first member to cont of the last), 1 MiB written to every member before each cycle.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from bench.common import Figure, MiB, Options, median, percentile, say, scratch, unavailable
from bench.rig import Primary, Site, now, pattern_file
from standby.domain.entities import Collection
from standby.domain.enums import CollectionReplicationState, ReplicationMode

TARGET_MS = 20.0


async def _pauses(site: Site, folder: Path, count: int, cycles: int) -> list[float]:
    from standby.engine.group_cycle import GroupCycle, QmpPauser

    primary = Primary(site.get(), folder / f"a{count}")
    try:
        vms = []
        for i in range(count):
            vm = await primary.add_vm(f"g{count}-{i}", 256 * MiB)
            await primary.enable(vm, primary.settings())
            vms.append(vm)
        collection = primary.db.collections.insert(Collection(
            str(uuid.uuid4()).upper(), f"group{count}", tuple(vm.vm_id for vm in vms),
            ReplicationMode.PRIMARY, CollectionReplicationState.REPLICATING))
        group = GroupCycle(primary.db, primary.runner, primary.capture, QmpPauser(primary.hv), now)
        source = pattern_file(folder / "pattern", MiB)
        pauses = []
        for _ in range(cycles):
            for vm in vms:
                await primary.write(vm, 0, MiB, source)
            result = await group.run(collection.collection_id)
            if result.detail:
                raise RuntimeError(f"group cycle {result.outcome}: {result.detail}")
            pauses.append(result.pause_ms)
        for vm in vms:
            primary.forget_replica(vm)
        return pauses
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
            pauses = asyncio.run(_pauses(site, folder, count, cycles))
            aimed = count == 10
            figures.append(Figure(
                "P9", f"group cut pause, {count} VMs", median(pauses), "ms median",
                target=f"≤ {TARGET_MS:.0f} ms" if aimed else "",
                met=median(pauses) <= TARGET_MS if aimed else None,
                samples=[round(p, 1) for p in pauses],
                note=f"max {max(pauses):.1f} ms, p90 {percentile(pauses, 90):.1f} ms, {cycles} cycles"))
    return figures
