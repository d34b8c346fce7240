"""P8: resynchronization throughput against a sequential read of the disk.

A VM whose 1 GiB disk is full of data (half random, half text; 512 MiB with --quick) replicates to B;
then 5 % of it is rewritten and a RESYNC cycle runs: B hashes its head (xxh3-128 per 256 KiB block) and
sends the hashes, the primary hashes the cut, and only the differing blocks travel and are applied.
Throughput = disk size ÷ resync time. Baseline: ``qemu-img convert`` of the disk to the null driver (a
sequential read of every allocated byte, nothing written) — the least any full compare must do once.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bench.common import Figure, GiB, MiB, Options, median, run, say, scratch, timed
from bench.rig import Primary, Site, pattern_file
from standby.domain.cycles import CycleKind

TARGET = 0.8


async def _resyncs(site: Site, folder: Path, size: int, repeat: int) -> tuple[list[float], list[float]]:
    primary = Primary(site.get(), folder / "a")
    try:
        vm = await primary.add_vm("p8", size)
        source = pattern_file(folder / "pattern", 16 * MiB)
        for offset in range(0, size, 16 * MiB):
            await primary.write(vm, offset, 16 * MiB, source)
        await primary.enable(vm, primary.settings())
        seconds, reads = [], []
        for i in range(repeat):
            for offset in range(i * MiB, size, 20 * MiB):  # 1 MiB in every 20: 5 %
                await primary.write(vm, offset, MiB, source)
            result = await primary.cycle(vm, CycleKind.RESYNC)
            seconds.append(result.seconds)
            reads.append(timed(lambda: _read_all(vm.disk, size)))
        primary.forget_replica(vm)
        return seconds, reads
    finally:
        await primary.close()


def _read_all(image: Path, size: int) -> None:
    target = json.dumps({"driver": "raw", "file": {"driver": "null-co", "size": size}})
    run("qemu-img", "convert", "-n", "-U", "-O", "raw", str(image), f"json:{target}")


def run_row(site: Site, opts: Options) -> list[Figure]:
    """The row's figures."""
    size = 512 * MiB if opts.quick else GiB
    repeat = 2 if opts.quick else opts.repeat
    with scratch("p8") as folder:
        say(f"P8: {size // MiB} MiB disk, {repeat} resyncs with 5 % changed")
        ours, reads = asyncio.run(_resyncs(site, folder, size, repeat))
    rate, base = size / MiB / median(ours), size / MiB / median(reads)
    ratio = rate / base
    return [Figure("P8", f"resync of a full {size // MiB} MiB disk, 5 % differing", rate, "MiB/s", base,
                   "qemu-img convert to null (sequential read)", ratio, "throughput ÷ read", f"≥ {TARGET}",
                   ratio >= TARGET, [round(size / MiB / s, 1) for s in ours])]
