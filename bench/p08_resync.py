"""P8: resynchronization throughput against a sequential read of the disk.

A VM whose 1 GiB disk is full of data (half random, half text; 512 MiB with --quick) replicates to B;
then 5 % of it is rewritten and a RESYNC cycle runs: B hashes its head (xxh3-128 per 256 KiB block) and
sends the hashes, the primary hashes the cut, and only the differing blocks travel and are applied.
Throughput = disk size ÷ resync time. Baseline: ``qemu-img convert`` of the disk to the null driver (a
sequential read of every allocated byte, nothing written) — the least any full compare must do once.
Second baseline (a second figure, same resyncs): a resync must read two disks, the primary's and the
replica's head (its whole chain), so both are read into null at the same time — two ``qemu-img convert``
processes, as the resync hashes both sides at once. Both disks are in the page cache in both baselines.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

from bench.common import Figure, GiB, MiB, Options, median, run, say, scratch, timed
from bench.rig import Primary, Site, pattern_file
from standby.domain.cycles import CycleKind

TARGET = 0.8


async def _resyncs(site: Site, folder: Path, size: int,
                   repeat: int) -> tuple[list[float], list[float], list[float]]:
    primary = Primary(site.get(), folder / "a")
    try:
        vm = await primary.add_vm("p8", size)
        source = pattern_file(folder / "pattern", 16 * MiB)
        for offset in range(0, size, 16 * MiB):
            await primary.write(vm, offset, 16 * MiB, source)
        await primary.enable(vm, primary.settings())
        seconds, reads, both = [], [], []
        for i in range(repeat):
            for offset in range(i * MiB, size, 20 * MiB):  # 1 MiB in every 20: 5 %
                await primary.write(vm, offset, MiB, source)
            result = await primary.cycle(vm, CycleKind.RESYNC)
            seconds.append(result.seconds)
            reads.append(timed(lambda: _read_all(vm.disk, size)))
            both.append(_read_both([vm.disk, _replica_head(site, vm.vm_id)], size))
        primary.forget_replica(vm)
        return seconds, reads, both
    finally:
        await primary.close()


def _read_all(image: Path, size: int) -> None:
    run(*_convert_to_null(image, size))


def _convert_to_null(image: Path, size: int) -> list[str]:
    target = json.dumps({"driver": "raw", "file": {"driver": "null-co", "size": size}})
    return ["qemu-img", "convert", "-n", "-U", "-O", "raw", str(image), f"json:{target}"]


def _read_both(images: list[Path], size: int) -> float:
    """Seconds to read every image into null, all at the same time (one qemu-img each)."""
    start = time.perf_counter()
    procs = [subprocess.Popen(_convert_to_null(image, size), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for image in images]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"qemu-img convert failed: {err.decode(errors='replace').strip()}")
    return time.perf_counter() - start


def _replica_head(site: Site, vm_id: str) -> Path:
    """B's newest point image of the VM's disk (the resync compared against it)."""
    images = sorted(site.get().b.replica_location.glob(f"*_{vm_id}/disks/*/rp-*.qcow2"))
    if not images:
        raise RuntimeError(f"B holds no point image of {vm_id}")
    return images[-1]


def run_row(site: Site, opts: Options) -> list[Figure]:
    """The row's figures."""
    size = 512 * MiB if opts.quick else GiB
    repeat = 2 if opts.quick else opts.repeat
    with scratch("p8") as folder:
        say(f"P8: {size // MiB} MiB disk, {repeat} resyncs with 5 % changed")
        ours, reads, both = asyncio.run(_resyncs(site, folder, size, repeat))
    rate, base, base2 = size / MiB / median(ours), size / MiB / median(reads), size / MiB / median(both)
    ratio = rate / base
    return [Figure("P8", f"resync of a full {size // MiB} MiB disk, 5 % differing", rate, "MiB/s", base,
                   "qemu-img convert to null (sequential read)", ratio, "throughput ÷ read", f"≥ {TARGET}",
                   ratio >= TARGET, [round(size / MiB / s, 1) for s in ours]),
            Figure("P8", "same resyncs, second baseline: both disks read at once", rate, "MiB/s", base2,
                   "primary disk + replica head, qemu-img convert to null each, concurrently",
                   rate / base2, "throughput ÷ two reads", f"≥ {TARGET}", rate / base2 >= TARGET,
                   note="disk size ÷ the time to read both images (page cache)")]
