"""The test guest on a test host: define it through REST, power it, read its console, check its disks.

The guest's writer appends 512-byte records 0, 1, 2, … to ``/dev/vda`` and, after a reboot, continues after
the last good one (its console says ``STANDBY-WRITER-START next=N``), so a disk's content is fully determined
by how many records it holds: ``check_image`` compares it byte for byte with that.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from standby.domain.errors import StandbyError
from standby.guest import console
from standby.guest.build import GuestImage
from standby.guest.record import RECORD_SIZE, encode
from standby.guest.verify import VerifyReport, scan
from standby.storage import qemu_img
from standby.testing.host import TestHost

BOOT_TIMEOUT = 180.0
JOB_TIMEOUT = 600.0
_CHUNK = 1 << 20
#: What qemu-img says when it meets a bitmap directory half rewritten (qcow2-bitmap.c, qcow2.c).
_BITMAP_REWRITE = ("doesn't satisfy the constraints", "bitmaps found than specified",
                   "Broken bitmap directory", "Failed to read bitmap directory", "bitmaps_ext:")
_REWRITE_WAIT = 30.0


@dataclass(frozen=True, slots=True)
class GuestVm:
    """A test-guest VM: the same GUID on every host it lives on."""

    vm_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ImageCheck:
    """The verifier's report on an image plus the byte-for-byte comparison and a content hash."""

    report: VerifyReport
    bytes_match: bool  # the image is exactly records 0..n-1 followed by zeros
    sha256: str  # of the flattened (raw) content

    @property
    def records(self) -> int:
        """Length of the exact prefix."""
        return self.report.records

    @property
    def good(self) -> bool:
        """Exact prefix and byte-for-byte equal to what the writer defines."""
        return self.report.exact_prefix and self.bytes_match

    def verdict(self) -> str:
        """One line for reports."""
        state = "exact prefix, bytes match" if self.good else "NOT an exact prefix"
        return f"{self.records} records, {state} ({self.report.corrupt} torn, {self.report.stray} stray)"


def define_guest_vm(host: TestHost, guest: GuestImage, name: str, *, rate: int = 50,
                    disk: str = "64M", memory: str = "192M") -> GuestVm:
    """DefineSystem through REST: one new qcow2 disk, the test guest's kernel and the writer at ``rate``/s."""
    body = {
        "name": name,
        "memory": memory,
        "cpus": 1,
        "disks": [{"size": disk}],
        "kernel": str(guest.kernel),
        "initrd": str(guest.initrd),
        "append": guest.append(f"standby.writer=raw:/dev/vda:rate={rate}"),
    }
    with host.control() as client:
        answer = client.post("/api/v1/vms", json=body)
    _ok(answer, "define the test VM")
    data = answer.json()
    return GuestVm(data["id"], data["name"])


def power(host: TestHost, vm_id: str, action: str, *, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
    """start / stop / shutdown / kill / pause / resume through REST; waits for the job; the job JSON."""
    with host.control() as client:
        answer = client.post(f"/api/v1/vms/{vm_id}/{action}", params={"timeout": 120})
        _ok(answer, f"{action} VM {vm_id} on {host.label}")
        job = answer.json()
        deadline = time.monotonic() + timeout
        while not job["terminal"] and time.monotonic() < deadline:
            job = client.get(f"/api/v1/jobs/{job['id']}/wait", params={"timeout": 30},
                             timeout=60).json()
    if job["state_name"] not in ("Completed", "CompletedWithWarnings"):
        raise RuntimeError(f"{action} VM {vm_id} on {host.label}: {job['state_name']} "
                           f"{job.get('error_code')} {job.get('error_description')}")
    return dict(job)


def vm_info(host: TestHost, vm_id: str) -> dict[str, Any]:
    """The VM as REST shows it (state, mode, disks with paths)."""
    with host.control() as client:
        answer = client.get(f"/api/v1/vms/{vm_id}")
    _ok(answer, f"read VM {vm_id} on {host.label}")
    return dict(answer.json())


def disk_path(host: TestHost, vm_id: str, index: int = 0) -> Path:
    """The image the VM's disk ``index`` uses now on ``host``."""
    return Path(vm_info(host, vm_id)["disks"][index]["path"])


def console_offset(host: TestHost, vm_id: str) -> int:
    """Where the console log ends now (wait for markers written after it)."""
    return len(console.read(host.console_log(vm_id)))


def wait_ready(host: TestHost, vm_id: str, *, after: int = 0) -> int:
    """Wait for the guest's ready marker and the writer's start line; the ``next`` it resumed at."""
    log = host.console_log(vm_id)
    asyncio.run(console.wait_for(log, console.READY, timeout=BOOT_TIMEOUT, after=after))
    asyncio.run(console.wait_for(log, r"STANDBY-WRITER-START", timeout=BOOT_TIMEOUT, after=after))
    starts = console.writer_starts(console.read(log)[after:])
    return starts[-1]


def wait_records(host: TestHost, vm_id: str, seq: int, *, after: int = 0) -> int:
    """Wait until the writer reported sequence ``seq`` (or later); the number it reported."""
    log = host.console_log(vm_id)
    return asyncio.run(console.wait_for_seq(log, seq, timeout=BOOT_TIMEOUT, after=after))


def last_stop(host: TestHost, vm_id: str, *, after: int = 0) -> int | None:
    """How many records the writer had written at its last clean stop after ``after`` (None: no stop)."""
    stops = console.writer_stops(console.read(host.console_log(vm_id))[after:])
    return stops[-1] if stops else None


def check_image(image: Path) -> ImageCheck:
    """Verifier report, byte-for-byte comparison with records 0..n-1 + zeros, and sha256 of the content."""
    with tempfile.TemporaryDirectory(prefix="sbt-img-") as tmp:
        flat = _flatten(image, Path(tmp))
        report = scan(_chunks(flat))
        digest = hashlib.sha256()
        matches = True
        position = 0
        for chunk in _chunks(flat):
            digest.update(chunk)
            matches = matches and chunk == _expected(position, len(chunk), report.records)
            position += len(chunk)
    return ImageCheck(report, matches, digest.hexdigest())


def image_sha256(image: Path) -> str:
    """sha256 of an image's content (any format qemu-img reads; chains followed)."""
    with tempfile.TemporaryDirectory(prefix="sbt-img-") as tmp:
        digest = hashlib.sha256()
        for chunk in _chunks(_flatten(image, Path(tmp))):
            digest.update(chunk)
        return digest.hexdigest()


def _flatten(image: Path, folder: Path) -> Path:
    if not image.exists():
        raise FileNotFoundError(f"disk image {image} does not exist")
    flat = folder / "flat.raw"
    deadline = time.monotonic() + _REWRITE_WAIT
    while True:
        try:
            # shared (-U): the image may be open in a running (paused) QEMU or be another image's backing.
            qemu_img.convert(image, flat, shared=True)
            return flat
        except StandbyError as exc:
            # A powered-off VM's last cycle rotates its bitmaps offline: a reader without the lock (-U) can
            # meet the bitmap directory half rewritten. That passes within the cycle; anything else is real.
            said = str(exc.args_map.get("reason", exc))
            if not any(sign in said for sign in _BITMAP_REWRITE) or time.monotonic() > deadline:
                raise RuntimeError(f"cannot read {image}: {said}") from exc
        time.sleep(0.2)


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def _expected(offset: int, length: int, records: int) -> bytes:
    first, last = offset // RECORD_SIZE, (offset + length) // RECORD_SIZE
    data = b"".join(encode(0, seq) for seq in range(first, min(last, records)))
    return data + bytes(length - len(data))


def _ok(answer: Any, what: str) -> None:
    if answer.status_code >= 400:
        raise RuntimeError(f"cannot {what}: HTTP {answer.status_code} {answer.text[:300]}")


@dataclass(frozen=True, slots=True)
class WriterRun:
    """One boot of the guest: where the writer resumed, where it stopped, and the disk afterwards."""

    resumed: int
    stopped: int | None
    disk: ImageCheck


def run_writer(host: TestHost, vm_id: str, more: int = 20) -> WriterRun:
    """Start the VM, let the writer add ``more`` records, shut it down and check its disk."""
    offset = console_offset(host, vm_id)
    power(host, vm_id, "start")
    resumed = wait_ready(host, vm_id, after=offset)
    wait_records(host, vm_id, resumed + more, after=offset)
    power(host, vm_id, "shutdown")
    return WriterRun(resumed, last_stop(host, vm_id, after=offset), check_image(disk_path(host, vm_id)))


def shut_down(host: TestHost, vm_id: str) -> int | None:
    """Shut the VM down cleanly; how many records its writer had written (None: no clean stop seen)."""
    offset = console_offset(host, vm_id)
    power(host, vm_id, "shutdown")
    return last_stop(host, vm_id, after=offset)
