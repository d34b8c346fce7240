"""Host-side verifier of the workload writer's records on a disk image (qcow2, a qcow2 chain, or raw).

The image is flattened with ``qemu-img convert`` into a sparse temporary raw file (the chain is resolved by
qemu-img), then scanned slot by slot. ``ext4`` mode takes the records file out of the file system with
``debugfs -R "cat PATH"`` first. The report says how many records form the prefix 0..n-1, whether that prefix
is exact (no torn or corrupt slot, nothing written after a gap) and lists what is wrong.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from standby.domain.errors import FileNotFound, InvalidParameter, StandbyError
from standby.guest.record import RECORD_SIZE, Record, RecordStatus, classify, decode
from standby.storage import qemu_img

#: Where the ext4 mode's writer keeps its records (see init.sh).
EXT4_RECORDS_PATH = "/records.bin"
_CHUNK = 1 << 20
_MAX_PROBLEMS = 20
_ZERO = bytes(_CHUNK + RECORD_SIZE)


@dataclass(frozen=True, slots=True)
class Problem:
    """One slot that breaks the prefix: its position and what it holds."""

    position: int
    status: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What the verifier found."""

    writer: int | None
    records: int  # length of the valid prefix 0..records-1
    exact_prefix: bool
    last_seq: int | None
    corrupt: int = 0  # slots that are neither empty nor a good record (torn or damaged)
    stray: int = 0  # good records outside the prefix (after a gap, or at the wrong position)
    problems: tuple[Problem, ...] = ()
    cites: tuple[tuple[int, int, int], ...] = field(default=())  # (seq, cited writer, cited seq)

    def to_json(self) -> str:
        """The report as a JSON object."""
        return json.dumps(asdict(self), sort_keys=True)


def scan(chunks: Iterator[bytes], writer: int | None = None) -> VerifyReport:
    """Verify a stream of raw bytes laid out as consecutive records (the writer's slots)."""
    scanner = _Scanner(writer)
    for chunk in chunks:
        scanner.feed(chunk)
    return scanner.finish()


class _Scanner:
    def __init__(self, writer: int | None) -> None:
        self.writer = writer
        self.position = 0
        self.prefix = 0
        self.in_prefix = True
        self.corrupt = 0
        self.stray = 0
        self.problems: list[Problem] = []
        self.cites: list[tuple[int, int, int]] = []
        self.tail = b""

    def feed(self, chunk: bytes) -> None:
        data = self.tail + chunk
        usable = len(data) - len(data) % RECORD_SIZE
        self.tail = data[usable:]
        if usable and memoryview(data)[:usable] == memoryview(_ZERO)[:usable]:
            self._skip_zeros(usable // RECORD_SIZE)
            return
        for off in range(0, usable, RECORD_SIZE):
            self._slot(data[off : off + RECORD_SIZE])

    def _skip_zeros(self, slots: int) -> None:
        # Zero slots are never-written space: they only end the prefix.
        self.in_prefix = self.in_prefix and slots == 0
        self.position += slots

    def _slot(self, block: bytes) -> None:
        if self.writer is None and self.position == 0:
            first = decode(block)
            self.writer = first.writer if first else 0
        status, rec = classify(block, self.writer or 0, self.position)
        if status is RecordStatus.VALID and self.in_prefix:
            self.prefix += 1
            self._note_cite(rec)
        elif status is RecordStatus.EMPTY:
            self.in_prefix = False
        else:
            self.in_prefix = False
            if status is RecordStatus.CORRUPT:
                self.corrupt += 1
            else:
                self.stray += 1
            self._problem(status, rec)
        self.position += 1

    def _note_cite(self, rec: Record | None) -> None:
        if rec is not None and rec.cite is not None:
            self.cites.append((rec.seq, rec.cite[0], rec.cite[1]))

    def _problem(self, status: RecordStatus, rec: Record | None) -> None:
        if len(self.problems) >= _MAX_PROBLEMS:
            return
        detail = f"holds writer {rec.writer} seq {rec.seq}" if rec else ""
        # A good record after the prefix ended is a stray: the cut lost something before it.
        label = "stray" if status is RecordStatus.VALID else str(status.value)
        self.problems.append(Problem(self.position, label, detail))

    def finish(self) -> VerifyReport:
        if self.tail.strip(b"\0"):
            # A partial record at the end of a file: a torn append.
            self.corrupt += 1
            self.problems.append(Problem(self.position, RecordStatus.CORRUPT.value, "partial record at end"))
        exact = self.corrupt == 0 and self.stray == 0
        return VerifyReport(
            writer=self.writer,
            records=self.prefix,
            exact_prefix=exact,
            last_seq=self.prefix - 1 if self.prefix else None,
            corrupt=self.corrupt,
            stray=self.stray,
            problems=tuple(self.problems),
            cites=tuple(self.cites),
        )


def verify_image(
    image: Path, *, mode: str = "raw", writer: int | None = None, path: str = EXT4_RECORDS_PATH
) -> VerifyReport:
    """Verify the records on ``image`` (any format qemu-img reads; chains are followed)."""
    if mode not in ("raw", "ext4"):
        raise InvalidParameter(f"unknown verify mode {mode!r} (raw or ext4)", message_id="GuestVerifyBadMode")
    if not image.exists():
        raise FileNotFound(
            f"disk image {image} does not exist", message_id="DiskFileMissing", path=str(image)
        )
    with tempfile.TemporaryDirectory(prefix="standby-verify-") as tmp:
        flat = _flatten(image, Path(tmp) / "flat.raw")
        if mode == "raw":
            return scan(_read_chunks(flat), writer)
        data = _debugfs_cat(flat, path)
        return scan(iter([data]), writer)


def _flatten(image: Path, out: Path) -> Path:
    qemu_img.convert(image, out)
    return out


def _debugfs_cat(raw: Path, path: str) -> bytes:
    proc = _run(["debugfs", "-R", f"cat {path}", str(raw)], f"cannot read {path} from the ext4 file system")
    # debugfs exits 0 even when the file or the file system is missing; its stderr tells.
    err = proc.stderr.decode(errors="replace")
    if "not found" in err or "Bad magic number" in err:
        raise FileNotFound(
            f"{path} not found on the image's ext4 file system", message_id="GuestRecordsMissing"
        )
    return proc.stdout


def _run(argv: list[str], what: str) -> subprocess.CompletedProcess[bytes]:
    if shutil.which(argv[0]) is None:
        raise StandbyError(f"{argv[0]} is not installed", message_id="ToolMissing", tool=argv[0])
    proc = subprocess.run(argv, capture_output=True, check=False)
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        raise InvalidParameter(f"{what}: {reason[-1] if reason else 'exit ' + str(proc.returncode)}")
    return proc


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk
