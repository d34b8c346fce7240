"""P4: capture + ship + apply throughput of one delta cycle, against ``qemu-img convert`` of the same bytes.

A VM with a 1 GiB disk replicates to host B. Each repeat rewrites the same N MiB (half random, half text)
through ``qemu-io`` on the device backend, then one delta cycle is timed: QMP cut, fleecing read over NBD,
zstd + xxh3 encode, HTTPS (mutual TLS) to B's daemon, apply into a new qcow2 overlay (every frame's xxh3
checked before it is written; no read-back verify, the daemon's default), fsync, record, acknowledgement
(retention follows the acknowledgement). Baseline: ``qemu-img convert -O qcow2`` of the primary disk
(exactly those N MiB are allocated) plus an fsync — a local copy with no cut, no network and no verify.

Variants: RecoveryHistory 0 (Hyper-V's default: only the newest point is kept, so every apply also merges
the previous point — ``qemu-img commit`` of the previous delta — after it acknowledges, before the next
apply) and RecoveryHistory
24 (every point of the last hour is kept: no merge), with compression on and off. Each figure notes how
many of the 2 cores the primary (this process), the VM's QEMU and B's daemon (with its qemu-nbd and
qemu-img children) kept busy during the cycles. Breakdowns: the replica's apply alone (``bench.apply_alone``)
and its HTTPS receive alone (``bench.receive_alone``: the log body into the peer listener, nothing applied).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from bench import apply_alone, receive_alone
from bench.common import Figure, GiB, MiB, Options, fsync_path, median, run, say, scratch, timed
from bench.rig import Primary, Site, pattern_file

TARGET = 0.7


@dataclass
class Variant:
    """One configuration and what it measured."""

    label: str
    compression: bool
    history: int
    seconds: list[float] = field(default_factory=list)
    cpu: str = ""


async def _cycles(site: Site, folder: Path, mib: int, repeat: int, variant: Variant) -> Path:
    primary = Primary(site.get(), folder / f"a-{variant.compression}-{variant.history}")
    try:
        vm = await primary.add_vm("p4", GiB)
        await primary.enable(vm, primary.settings(compression=variant.compression, history=variant.history))
        source = pattern_file(folder / "pattern")
        meter = primary.meter(vm)
        used: dict[str, float] = {}
        for _ in range(repeat):
            for offset in range(0, mib * MiB, 4 * MiB):
                await primary.write(vm, offset, 4 * MiB, source)
            meter.start()
            result = await primary.cycle(vm)
            for name, value in meter.stop().items():
                used[name] = used.get(name, 0.0) + value
            assert result.dirty_bytes == mib * MiB, result
            variant.seconds.append(result.seconds)
        meter.used = used
        variant.cpu = meter.describe(sum(variant.seconds))
        primary.forget_replica(vm)
        return vm.disk
    finally:
        await primary.close()


def _convert(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    run("qemu-img", "convert", "-U", "-O", "qcow2", str(source), str(target))
    fsync_path(target)


def run_row(site: Site, opts: Options) -> list[Figure]:
    """The row's figures."""
    mib = 128 if opts.quick else 512
    repeat = 2 if opts.quick else opts.repeat
    variants = [Variant("compression on, RecoveryHistory 0 (merge per cycle)", True, 0),
                Variant("compression on, RecoveryHistory 24 (no merge)", True, 24),
                Variant("compression off, RecoveryHistory 24", False, 24)]
    baseline: list[float] = []
    with scratch("p4") as folder:
        for variant in variants:
            say(f"P4: {repeat} delta cycles of {mib} MiB, {variant.label}")
            disk = asyncio.run(_cycles(site, folder, mib, repeat, variant))
            if not baseline:  # the first variant's disk holds exactly the N MiB the cycles shipped
                target = folder / "convert.qcow2"
                baseline = [timed(lambda d=disk, t=target: _convert(d, t)) for _ in range(repeat)]
    rate_convert = mib / median(baseline)
    figures = []
    for variant in variants:
        rate = mib / median(variant.seconds)
        ratio = rate / rate_convert
        figures.append(Figure(
            "P4", f"delta cycle of {mib} MiB, {variant.label}", rate, "MiB/s", rate_convert,
            "qemu-img convert -O qcow2 + fsync", ratio, "throughput ÷ convert", f"≥ {TARGET}",
            ratio >= TARGET, [round(mib / s, 1) for s in variant.seconds], note=variant.cpu))
    say(f"P4: the replica's apply alone, {mib} MiB from memory (bench/apply_alone.py)")
    alone = apply_alone.measure(mib, repeat)
    convert = median(alone["qemu-img convert"])
    for name in ("apply", "apply verify-writes"):
        rate = mib / median(alone[name])
        figures.append(Figure(
            "P4", f"breakdown: replica {name} alone (log from memory, no capture, no network)", rate, "MiB/s",
            mib / convert, "qemu-img convert -O qcow2 + fsync", rate * convert / mib, "throughput ÷ convert",
            samples=[round(mib / s, 1) for s in alone[name]]))
    say(f"P4: the replica's receive path alone, {mib} MiB over mutual TLS (bench/receive_alone.py)")
    received = receive_alone.measure(mib, repeat, ["httptools"], ["asyncio"], ["asyncio"])
    got = received["httptools/asyncio/asyncio"]
    wall = median(got["wall"])
    figures.append(Figure(
        "P4", "breakdown: replica receive alone (PeerClient.put_log into the peer listener, nothing applied)",
        mib / wall, "MiB/s", samples=[round(mib / s, 1) for s in got["wall"]],
        note=f"CPU per GiB: listener {median(got['server cpu']) * 1024 / mib:.2f} s, "
             f"sender {median(got['client cpu']) * 1024 / mib:.2f} s"))
    return figures
