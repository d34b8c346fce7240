"""P3: wire bytes ÷ bytes the guest wrote, for sequential, random 4 KiB and rewrite-same-block workloads,
with and without compression.

Each workload is written through ``qemu-io`` on the device backend between two cycles of a VM replicating
to B (data: half random, half text). "Wire" is the log the cycle streamed (frames, headers, checksums;
TLS records and HTTP chunking add < 0.3 % on top). "Dirty" is what the 64 KiB-granular bitmap made the
cycle read. Target (≤ 1.05) applies to 64 KiB-aligned writes, i.e. the sequential workload.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from bench.common import Figure, GiB, MiB, Options, say, scratch
from bench.rig import Primary, PrimaryVm, Site, pattern_file

TARGET = 1.05
KiB = 1024



async def _sequential(primary: Primary, vm: PrimaryVm, source: Path, total: int) -> int:
    for offset in range(0, total, MiB):
        await primary.write(vm, 256 * MiB + offset, MiB, source)
    return total


async def _random(primary: Primary, vm: PrimaryVm, source: Path, count: int) -> int:
    rng = random.Random(8)
    for block in rng.sample(range(GiB // (4 * KiB)), count):
        await primary.write(vm, block * 4 * KiB, 4 * KiB, source)
    return count * 4 * KiB


async def _rewrite(primary: Primary, vm: PrimaryVm, source: Path, count: int) -> int:
    for _ in range(count):
        await primary.write(vm, 512 * MiB, 64 * KiB, source)
    return count * 64 * KiB


async def _measure(site: Site, folder: Path, compression: bool,
                   quick: bool) -> list[tuple[str, int, int, int]]:
    primary = Primary(site.get(), folder / f"a-{compression}")
    scale = 4 if quick else 1
    try:
        vm = await primary.add_vm("p3", GiB)
        await primary.enable(vm, primary.settings(compression=compression))
        source = pattern_file(folder / "pattern")
        out = []
        workloads = (("sequential 1 MiB writes", _sequential, 64 * MiB // scale),
                     ("random 4 KiB writes", _random, 1024 // scale),
                     ("rewrite one 64 KiB block", _rewrite, 1000 // scale))
        for name, work, amount in workloads:
            written = await work(primary, vm, source, amount)
            result = await primary.cycle(vm)
            out.append((name, written, result.dirty_bytes, result.wire_bytes))
        primary.forget_replica(vm)
        return out
    finally:
        await primary.close()


def run_row(site: Site, opts: Options) -> list[Figure]:
    """The row's figures."""
    figures = []
    with scratch("p3") as folder:
        for compression in (False, True):
            label = "compression on" if compression else "compression off"
            say(f"P3: three workloads, {label}")
            for name, written, dirty, wire in asyncio.run(_measure(site, folder, compression, opts.quick)):
                ratio = wire / written
                aligned = name.startswith("sequential")
                figures.append(Figure(
                    "P3", f"{name}, {label}", ratio, "wire ÷ written",
                    target=f"≤ {TARGET}" if aligned else "", met=(ratio <= TARGET) if aligned else None,
                    note=f"written {written / MiB:.2f} MiB, dirty read {dirty / MiB:.2f} MiB, "
                         f"wire {wire / MiB:.2f} MiB, wire ÷ dirty {wire / max(dirty, 1):.3f}"))
    return figures
