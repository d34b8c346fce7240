"""P5: initial replication of a 64 GiB disk holding 1 GiB of data, against ``qemu-img convert`` of it.

The image (64 GiB virtual, 64 extents of 16 MiB spread over the disk, half random, half text) is the disk
of a running primary VM; the figure is the INITIAL cycle of a new relationship to host B: a FULL read of
the fleecing export (thin-aware: block status skips unallocated and zero extents), encode, HTTPS to B,
apply into B's first image (every frame's checksum checked before it is written), fsync, record.
Baseline: ``qemu-img convert -O qcow2`` of the same image plus an fsync. Each repeat is a new relationship
(new VM GUID) on the same image.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.common import Figure, GiB, MiB, Options, fsync_path, median, run, say, scratch, timed
from bench.rig import Primary, Site, pattern_file

TARGET = 1.3
EXTENT = 16 * MiB


def make_image(folder: Path, size: int, data: int) -> Path:
    """A sparse qcow2 of ``size`` holding ``data`` bytes in 16 MiB extents spread evenly."""
    image = folder / "p5.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(image), str(size))
    source = pattern_file(folder / "pattern", EXTENT)
    count = data // EXTENT
    stride = size // count
    commands = []
    for i in range(count):
        commands += ["-c", f"write -q -s {source} {i * stride} {EXTENT}"]
    run("qemu-io", "-f", "qcow2", *commands, str(image))
    return image


async def _initial(site: Site, folder: Path, image: Path, size: int, repeat: int) -> list[float]:
    primary = Primary(site.get(), folder / "a")
    seconds = []
    try:
        for i in range(repeat):
            vm = await primary.add_vm(f"p5-{i}", size, image=image)
            result = await primary.enable(vm, primary.settings())
            seconds.append(result.seconds)
            await primary.hv.stop(vm.vm_id, graceful=False)  # a clean quit: the image is free again
            primary.forget_replica(vm)
        return seconds
    finally:
        await primary.close()


def _convert(image: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    run("qemu-img", "convert", "-O", "qcow2", str(image), str(target))
    fsync_path(target)


def run_row(site: Site, opts: Options) -> list[Figure]:
    """The row's figures."""
    size, data = 64 * GiB, (256 * MiB if opts.quick else GiB)
    repeat = 2 if opts.quick else opts.repeat
    with scratch("p5") as folder:
        say(f"P5: image of {size // GiB} GiB holding {data // MiB} MiB; {repeat} initial replications")
        image = make_image(folder, size, data)
        ours = asyncio.run(_initial(site, folder, image, size, repeat))
        baseline = [timed(lambda: _convert(image, folder / "convert.qcow2")) for _ in range(repeat)]
    value, base = median(ours), median(baseline)
    ratio = value / base
    return [Figure("P5", f"initial replication, {size // GiB} GiB disk holding {data // MiB} MiB", value, "s",
                   base, "qemu-img convert -O qcow2 + fsync", ratio, "time ÷ convert", f"≤ {TARGET}×",
                   ratio <= TARGET, [round(s, 2) for s in ours],
                   note=f"{data / MiB / value:.0f} MiB/s of data")]
