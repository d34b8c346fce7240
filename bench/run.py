"""Run the benchmarks: ``python -m bench.run [--quick] [--full] [--only P4,P10] [--repeat N]``.

Prints each figure next to its baseline measured in the same run (medians over ``--repeat`` runs), writes
``bench/results/latest.json`` and, with ``--markdown FILE``, the results table BENCHMARKS.md quotes.
A row whose piece is not built yet prints "not available yet"; a row that fails prints its error and the
others still run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.common import Figure, Options, machine
from bench.rig import Site
from standby.daemon import allocator

ROWS: dict[str, tuple[str, str]] = {
    "P1": ("bench.p01_failover", "InitiateFailover job time, 1 GiB vs 64 GiB, with/without a log mid-apply"),
    "P2": ("bench.p02_sustained", "shortest interval sustained under 50 MB/s of writes; max lag"),
    "P3": ("bench.p03_wire", "wire bytes ÷ bytes written, three workloads, compression on/off"),
    "P4": ("bench.p04_throughput", "capture + ship + apply throughput vs qemu-img convert"),
    "P5": ("bench.p05_initial", "initial replication of 64 GiB holding 1 GiB vs qemu-img convert"),
    "P6": ("bench.p06_idle", "idle replicated VMs at a 30 s interval; daemon CPU"),
    "P7": ("bench.p07_history", "720 hourly + 120 recent points: storage overhead, failover oldest/newest"),
    "P8": ("bench.p08_resync", "resync throughput vs a sequential read of the disk"),
    "P9": ("bench.p09_group", "group cut pause for 3 and 10 VMs"),
    "P10": ("bench.p10_cim", "CIM-XML GetInstance / InvokeMethod round trip through pywbem"),
}
RESULTS = Path(__file__).parent / "results"


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def line(f: Figure) -> str:
    """One printed line of a figure."""
    if f.value is None:
        return f"{f.row:4s} {f.name}: {f.note}"
    text = f"{f.row:4s} {f.name}: {_fmt(f.value)} {f.unit}"
    if f.baseline is not None:
        text += f"  | baseline {f.baseline_name}: {_fmt(f.baseline)}"
    if f.ratio is not None:
        text += f"  | {f.ratio_name or 'ratio'} {f.ratio:.2f}"
    if f.target:
        verdict = {True: "met", False: "MISSED", None: "—"}[f.met]
        text += f"  | target {f.target}: {verdict}"
    if f.note:
        text += f"  ({f.note})"
    return text


def markdown(figures: list[Figure], facts: dict[str, str], command: str) -> str:
    """The results table for BENCHMARKS.md."""
    out = [f"Run {facts['date']} — `{command}` — {facts['nproc']} cores ({facts['cpu']}), {facts['memory']}, "
           f"{facts['qemu']}, accel {facts['accel']}, load at start {facts['load']}", "",
           "| row | figure | value | baseline (same run) | ratio | target | verdict |",
           "|---|---|---|---|---|---|---|"]
    for f in figures:
        if f.value is None:
            out.append(f"| {f.row} | {f.name} | {f.note} | | | {f.target} | — |")
            continue
        base = f"{f.baseline_name}: {_fmt(f.baseline)} {f.unit}" if f.baseline is not None else ""
        ratio = f"{f.ratio:.2f} ({f.ratio_name})" if f.ratio is not None else ""
        verdict = {True: "met", False: "**missed**", None: "—"}[f.met]
        name = f"{f.name} ({f.note})" if f.note else f.name
        value = f"{_fmt(f.value)} {f.unit}"
        out.append(f"| {f.row} | {name} | {value} | {base} | {ratio} | {f.target} | {verdict} |")
    return "\n".join(out) + "\n"


def _row(row: str) -> Callable[[Site, Options], list[Figure]]:
    module = importlib.import_module(ROWS[row][0])
    return module.run_row  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    """Run the chosen rows and report."""
    parser = argparse.ArgumentParser(prog="bench/bench.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated rows, e.g. P4,P10 (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats (a smoke run)")
    parser.add_argument("--full", action="store_true", help="the long versions: P2 10 min, P6 200 VMs")
    parser.add_argument("--repeat", type=int, default=3, help="repeats per figure (medians are reported)")
    parser.add_argument("--markdown", type=Path, help="also write the results table to this file")
    args = parser.parse_args(argv)
    wanted = [r.strip().upper() for r in args.only.split(",") if r.strip()] or list(ROWS)
    unknown = [r for r in wanted if r not in ROWS]
    if unknown:
        parser.error(f"unknown row {unknown[0]}; rows are {', '.join(ROWS)}")
    opts = Options(quick=args.quick, full=args.full, repeat=max(1, args.repeat))
    facts = machine()
    print(f"standby benchmarks — {facts['date']}; {facts['nproc']} cores, {facts['memory']}, {facts['cpu']}, "
          f"{facts['qemu']}, accel {facts['accel']}, load {facts['load']}", flush=True)
    allocator.tune()  # the rig's in-process primary allocates as `standby serve` does
    site = Site()
    figures: list[Figure] = []
    try:
        for row in wanted:
            print(f"-- {row}: {ROWS[row][1]}", flush=True)
            started = time.monotonic()
            try:
                found = _row(row)(site, opts)
            except Exception as exc:  # one broken row must not hide the others
                traceback.print_exc(file=sys.stderr)
                found = [Figure(row, ROWS[row][1], None, "", note=f"failed: {exc}")]
            for figure in found:
                print("   " + line(figure), flush=True)
            print(f"   ({time.monotonic() - started:.0f} s)", flush=True)
            figures.extend(found)
            _save(figures, facts, argv, args.markdown)  # after every row: an interrupted run keeps its rows
    finally:
        site.close()
    return 0


def _save(figures: list[Figure], facts: dict[str, str], argv: list[str] | None, table: Path | None) -> None:
    command = ("bench/bench.sh " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    RESULTS.mkdir(exist_ok=True)
    payload = {"machine": facts, "command": command, "figures": [f.as_dict() for f in figures]}
    stamp = facts["date"].replace(" ", "T").replace(":", "")
    for name in ("latest.json", f"{stamp}.json"):
        text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
        (RESULTS / name).write_text(text, encoding="utf-8")
    if table:
        table.write_text(markdown(figures, facts, command), encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
