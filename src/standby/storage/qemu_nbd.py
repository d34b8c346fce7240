"""``qemu-nbd``: the one launcher (start, wait until it serves, stop), for the blocking and the async callers.

``NbdExport`` is what one process serves and with which flags; ``QemuNbd`` runs it. A start returns once
qemu-nbd has greeted a probing client, so a caller can connect right away. Neither the socket file (it
appears at ``bind()``) nor an accepted connection says so: qemu-nbd listens before it opens the image, and
the kernel accepts into the backlog meanwhile, so a start would pass and the image's failure (a held lock, a
missing backing file) reach the first real client as a reset connection. The probe then leaves the
negotiation with ``NBD_OPT_ABORT``, which qemu-nbd takes quietly. Every export is ``--persistent``, as the
probe is a client of its own and qemu-nbd would otherwise exit when it goes.

A process that exits on its own is reported with its stderr through the one error map, ``qemu_img.failure``;
stderr goes to an unnamed file, as a pipe nobody reads could fill up and stall qemu-nbd. The process is bound
to the daemon (``children.bound_to_daemon``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from standby.domain.errors import StandbyError, Unavailable
from standby.storage.children import bound_to_daemon
from standby.storage.qemu_img import failure, require

QEMU_NBD = "qemu-nbd"
START_TIMEOUT = 20.0
#: A writable export flushes on SIGTERM; that can take a while on a slow disk.
STOP_TIMEOUT = 30.0
_POLL = 0.005
#: The newstyle greeting: ``NBDMAGIC``, ``IHAVEOPT`` and the 16-bit handshake flags.
_GREETING = struct.Struct(">8s8sH")
_NBD_OPT_ABORT = 2


@dataclass(frozen=True, slots=True)
class NbdExport:
    """One qcow2 image (with its backing chain) served under ``name`` on the unix socket ``socket``."""

    image: Path
    socket: Path
    name: str
    writable: bool = False
    cache: str | None = None  # ``--cache``; None: qemu-nbd's default
    allocation_depth: bool = False  # ``-A``: the ``qemu:allocation-depth`` context
    clients: int = 1  # ``-e``: how many clients may be connected at once
    bitmap: str | None = None  # ``-B``: a dirty bitmap exposed as ``qemu:dirty-bitmap:<name>``

    def argv(self) -> list[str]:
        """The command line."""
        argv = [QEMU_NBD, "-f", "qcow2", "-k", str(self.socket), "-x", self.name, "--persistent"]
        argv += [f"--cache={self.cache}"] if self.cache else []
        argv += [] if self.writable else ["--read-only"]
        argv += ["-A"] if self.allocation_depth else []
        argv += ["-e", str(self.clients)] if self.clients != 1 else []
        argv += ["-B", self.bitmap] if self.bitmap else []
        return [*argv, str(self.image)]


class QemuNbd:
    """One ``qemu-nbd`` process: ``with`` or ``async with`` (or ``start``/``stop`` and their async forms)."""

    def __init__(self, export: NbdExport) -> None:
        self.spec = export
        self._proc: subprocess.Popen[bytes] | None = None
        self._errors: IO[bytes] | None = None
        self._probe: _Probe | None = None

    # -- starting ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start it and wait until it serves (``Unavailable`` after ``START_TIMEOUT``)."""
        self._spawn()
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not self._ready(deadline):
                time.sleep(_POLL)
        except BaseException:
            self.stop()
            raise

    async def start_async(self) -> None:
        """``start`` without blocking the event loop."""
        self._spawn()
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not self._ready(deadline):
                await asyncio.sleep(_POLL)
        except BaseException:
            await self.stop_async()
            raise

    def _spawn(self) -> None:
        require(QEMU_NBD)
        self.spec.socket.unlink(missing_ok=True)
        # Open as long as the process runs (its stderr); ``_forget`` closes it.
        self._errors = tempfile.TemporaryFile(prefix="standby-nbd-")  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(bound_to_daemon(self.spec.argv()), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=self._errors)
        except OSError as exc:
            self._forget()
            raise Unavailable(f"cannot start {QEMU_NBD}: {exc.strerror}", message_id="ToolMissing",
                              tool=QEMU_NBD) from None
        self._probe = _Probe(self.spec.socket)

    def _ready(self, deadline: float) -> bool:
        assert self._proc is not None and self._probe is not None
        if self._probe.step():
            return True
        if self._proc.poll() is not None:
            raise self._failure()
        if time.monotonic() > deadline:
            raise Unavailable(f"qemu-nbd did not start for {self.spec.image}", message_id="NbdStartTimeout",
                              path=str(self.spec.image))
        return False

    # -- after it started ---------------------------------------------------------------------------------

    def exited(self, timeout: float) -> StandbyError | None:
        """Why it ended, if it does within ``timeout`` seconds (None: it still runs).

        qemu-nbd opens the backing chain when the first client arrives: a broken chain ends it then, and a
        client that lost its connection asks here for the reason rather than reporting the reset.
        """
        if self._proc is None:
            return None
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self._failure()

    def _failure(self) -> StandbyError:
        assert self._proc is not None
        err = ""
        if self._errors is not None:
            self._errors.seek(0)
            err = self._errors.read().decode(errors="replace")
        return failure(QEMU_NBD, self.spec.image, err, self._proc.returncode or 0)

    # -- stopping -----------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after ``STOP_TIMEOUT``), reap it and remove the socket."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._forget()

    async def stop_async(self) -> None:
        """``stop`` without blocking the event loop."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            deadline = time.monotonic() + STOP_TIMEOUT
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self._forget()

    def _forget(self) -> None:
        self.spec.socket.unlink(missing_ok=True)
        if self._errors is not None:
            self._errors.close()
        if self._probe is not None:
            self._probe.close()
        self._proc, self._errors, self._probe = None, None, None

    def __enter__(self) -> QemuNbd:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> QemuNbd:
        await self.start_async()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop_async()


class _Probe:
    """A client that waits, one non-blocking step at a time, for qemu-nbd's greeting, then leaves."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._got = b""

    def step(self) -> bool:
        """True once the server greeted (and was told goodbye); False while it has not yet."""
        if self._sock is None and not self._connect():
            return False
        assert self._sock is not None
        try:
            data = self._sock.recv(_GREETING.size - len(self._got))
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:  # closed before it greeted: the process is ending, and its exit says why
            self.close()
            return False
        self._got += data
        if len(self._got) < _GREETING.size:
            return False
        magic, option_magic, flags = _GREETING.unpack(self._got)
        if (magic, option_magic) != (b"NBDMAGIC", b"IHAVEOPT"):
            self.close()
            return False
        # Client flags mirror the fixed-newstyle and no-zeroes bits it offered, then the one option.
        with contextlib.suppress(OSError):
            self._sock.send(struct.pack(">I8sII", flags & 0b11, b"IHAVEOPT", _NBD_OPT_ABORT, 0))
        self.close()
        return True

    def _connect(self) -> bool:
        if not self.path.exists():
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(str(self.path))
        except OSError:
            sock.close()
            return False
        self._sock, self._got = sock, b""
        return True

    def close(self) -> None:
        """Hang up (nothing to do when not connected)."""
        if self._sock is not None:
            self._sock.close()
        self._sock = None
