"""Round-trip time of CIM-XML calls through pywbem against a real, seeded daemon (not a test; run on demand).

    .venv/bin/python -m tests.interop.bench_roundtrip [--count 1000]

Prints the median, p90 and p99 of GetInstance (a VM) and InvokeMethod (InitiateFailover refused by its
precondition, GetSystemCertificates) over loopback HTTP with Basic auth, one connection, sequential calls.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from standby.daemon.testing import DaemonProcess
from standby.store.sqlite import Database
from tests.interop.conftest import PASSWORD, PRIMARY_VM, USER, seed
from tests.interop.helpers import connect, service_path, vm_path


def _measure(name: str, call: Callable[[], object], count: int) -> None:
    for _ in range(20):  # warm-up: connection, auth cache, schema caches
        call()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    print(
        f"{name:40s} median {statistics.median(samples):6.2f} ms   p90 {samples[int(count * 0.9)]:6.2f} ms"
        f"   p99 {samples[int(count * 0.99)]:6.2f} ms   (n={count})"
    )


def main() -> None:
    """Start a seeded daemon, measure, stop it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    count = parser.parse_args().count
    folder = Path(tempfile.mkdtemp(prefix="sbbench-", dir="/tmp"))
    daemon = DaemonProcess.prepare(folder / "data", users={USER: PASSWORD})
    db = Database.open(daemon.data_dir / "standby.db")
    seed(db)
    db.close()
    daemon.launch()
    try:
        conn = connect(f"http://127.0.0.1:{daemon.http_port}")
        vm, service = vm_path(conn, PRIMARY_VM), service_path(conn)
        _measure("GetInstance Msvm_ComputerSystem", lambda: conn.GetInstance(vm), count)
        _measure(
            "InvokeMethod InitiateFailover (32775)",
            lambda: conn.InvokeMethod("InitiateFailover", service, ComputerSystem=vm),
            count,
        )
        _measure(
            "InvokeMethod GetSystemCertificates",
            lambda: conn.InvokeMethod("GetSystemCertificates", service),
            count,
        )
    finally:
        daemon.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
