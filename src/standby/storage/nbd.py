"""A small NBD client: fixed-newstyle handshake, structured replies, block status, pipelined I/O.

standby reads the dirty extents of a fleecing export and writes logs into replica overlays through NBD
(DESIGN §4). libnbd's Python binding exists only for Debian's system Python, so this is our own client of the
protocol (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md). It is synchronous on purpose:
callers run it in a worker thread; throughput comes from keeping several requests in flight, not from asyncio
(``read_many``, ``write_many``, and ``WriteWindow`` for writes that stay in flight across calls).

Every socket or protocol failure is translated here into ``domain.errors`` (``Unavailable`` when the server
cannot be reached or goes away, ``StandbyError`` for protocol violations and server-side errors).
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from standby.domain.errors import InvalidParameter, StandbyError, Unavailable

_NBDMAGIC: Final = 0x4E42444D41474943
_IHAVEOPT: Final = 0x49484156454F5054
_OPT_REPLY_MAGIC: Final = 0x3E889045565A9
_REQUEST_MAGIC: Final = 0x25609513
_SIMPLE_REPLY_MAGIC: Final = 0x67446698
_STRUCTURED_REPLY_MAGIC: Final = 0x668E33EF

_FLAG_FIXED_NEWSTYLE: Final = 1
_FLAG_NO_ZEROES: Final = 2

_OPT_GO: Final = 7
_OPT_STRUCTURED_REPLY: Final = 8
_OPT_SET_META_CONTEXT: Final = 10

_REP_ACK: Final = 1
_REP_INFO: Final = 3
_REP_META_CONTEXT: Final = 4
_REP_ERROR_BIT: Final = 1 << 31

_INFO_EXPORT: Final = 0
_INFO_BLOCK_SIZE: Final = 3

_CMD_READ: Final = 0
_CMD_WRITE: Final = 1
_CMD_DISC: Final = 2
_CMD_FLUSH: Final = 3
_CMD_WRITE_ZEROES: Final = 6
_CMD_BLOCK_STATUS: Final = 7

_CMD_FLAG_FUA: Final = 1

_TX_READ_ONLY: Final = 2
_TX_SEND_FLUSH: Final = 4
_TX_SEND_WRITE_ZEROES: Final = 64

_REPLY_FLAG_DONE: Final = 1
_REPLY_NONE: Final = 0
_REPLY_OFFSET_DATA: Final = 1
_REPLY_OFFSET_HOLE: Final = 2
_REPLY_BLOCK_STATUS: Final = 5
_REPLY_ERROR_BIT: Final = 1 << 15

#: ``base:allocation`` flags.
STATE_HOLE: Final = 1
STATE_ZERO: Final = 2
#: ``qemu:dirty-bitmap:NAME`` flag: the extent is dirty.
STATE_DIRTY: Final = 1

#: Largest single request we send; QEMU accepts up to 32 MiB.
MAX_REQUEST: Final = 32 * 1024 * 1024
#: Block status asks cover at most this much (the answer may cover less).
_STATUS_WINDOW: Final = 1 << 30

_REQUEST = struct.Struct(">IHHQQI")
_SIMPLE_REPLY = struct.Struct(">IIQ")
_STRUCTURED_HEADER = struct.Struct(">HHQI")


@dataclass(frozen=True, slots=True)
class Extent:
    """A run of bytes that share the same status flags in one metadata context."""

    offset: int
    length: int
    flags: int

    @property
    def end(self) -> int:
        """First byte after the extent."""
        return self.offset + self.length


class NbdError(StandbyError):
    """The NBD server answered a request with an error, or broke the protocol."""


class _Pending:
    """One request in flight and what its replies have delivered so far."""

    __slots__ = ("buffer", "error", "extents", "length", "offset")

    def __init__(self, offset: int, length: int, want_data: bool) -> None:
        self.offset = offset
        self.length = length
        self.buffer = bytearray(length) if want_data else bytearray()
        self.extents: list[tuple[int, list[tuple[int, int]]]] = []
        self.error = 0


class NbdClient:
    """One NBD connection to one export.

    Build it with :meth:`connect_unix` or :meth:`connect_tcp`; close it with :meth:`close` or ``with``.
    """

    def __init__(self, sock: socket.socket, export: str, meta_contexts: Iterable[str] = ()) -> None:
        self._sock = sock
        self._cookie = 0
        self._pending: dict[int, _Pending] = {}
        # Replies may come in any order; those that complete while we wait for another request wait here.
        self._finished: dict[int, _Pending] = {}
        self.size = 0
        self.transmission_flags = 0
        self.contexts: dict[str, int] = {}
        try:
            self._handshake(export, tuple(meta_contexts))
        except OSError as exc:
            self._sock.close()
            raise Unavailable(f"NBD handshake with export {export!r} failed: {exc}") from exc
        except StandbyError:
            self._sock.close()
            raise

    # --- construction -------------------------------------------------------------------------------

    @classmethod
    def connect_unix(cls, path: str, export: str = "", meta_contexts: Iterable[str] = ()) -> NbdClient:
        """Connect to an NBD server on a unix socket."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise Unavailable(f"cannot connect to NBD socket {path}: {exc}") from exc
        return cls(sock, export, meta_contexts)

    @classmethod
    def connect_tcp(
        cls,
        host: str,
        port: int,
        export: str = "",
        meta_contexts: Iterable[str] = (),
        timeout: float | None = 30.0,
    ) -> NbdClient:
        """Connect to an NBD server over TCP (TCP_NODELAY set: requests are small and pipelined)."""
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise Unavailable(f"cannot connect to NBD server {host}:{port}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        return cls(sock, export, meta_contexts)

    def __enter__(self) -> NbdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- properties ---------------------------------------------------------------------------------

    @property
    def read_only(self) -> bool:
        """Whether the server refuses writes on this export."""
        return bool(self.transmission_flags & _TX_READ_ONLY)

    @property
    def can_write_zeroes(self) -> bool:
        """Whether WRITE_ZEROES may be sent (else zeros must be written as data)."""
        return bool(self.transmission_flags & _TX_SEND_WRITE_ZEROES)

    # --- handshake ----------------------------------------------------------------------------------

    def _handshake(self, export: str, meta_contexts: tuple[str, ...]) -> None:
        magic, opt_magic, flags = struct.unpack(">QQH", self._recv_exact(18))
        if magic != _NBDMAGIC or opt_magic != _IHAVEOPT:
            raise NbdError("not an NBD fixed-newstyle server")
        if not flags & _FLAG_FIXED_NEWSTYLE:
            raise NbdError("the NBD server does not speak fixed newstyle")
        client_flags = _FLAG_FIXED_NEWSTYLE | (flags & _FLAG_NO_ZEROES)
        self._sock.sendall(struct.pack(">I", client_flags))
        self._option_expect_ack(_OPT_STRUCTURED_REPLY, b"")
        if meta_contexts:
            self._set_meta_contexts(export, meta_contexts)
        self._go(export)

    def _send_option(self, option: int, data: bytes) -> None:
        self._sock.sendall(struct.pack(">QII", _IHAVEOPT, option, len(data)) + data)

    def _read_option_reply(self, option: int) -> tuple[int, bytes]:
        magic, reply_option, reply_type, length = struct.unpack(">QIII", self._recv_exact(20))
        if magic != _OPT_REPLY_MAGIC or reply_option != option:
            raise NbdError(f"unexpected NBD option reply (option {reply_option}, expected {option})")
        data = self._recv_exact(length) if length else b""
        if reply_type & _REP_ERROR_BIT:
            text = data.decode("utf-8", "replace")
            raise NbdError(f"NBD server refused option {option}: error {reply_type & 0xFFFF} {text}".strip())
        return reply_type, data

    def _option_expect_ack(self, option: int, data: bytes) -> None:
        self._send_option(option, data)
        reply_type, _ = self._read_option_reply(option)
        if reply_type != _REP_ACK:
            raise NbdError(f"NBD option {option} answered with reply type {reply_type}")

    def _set_meta_contexts(self, export: str, queries: tuple[str, ...]) -> None:
        name = export.encode()
        data = struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries))
        for query in queries:
            encoded = query.encode()
            data += struct.pack(">I", len(encoded)) + encoded
        self._send_option(_OPT_SET_META_CONTEXT, data)
        while True:
            reply_type, payload = self._read_option_reply(_OPT_SET_META_CONTEXT)
            if reply_type == _REP_ACK:
                break
            if reply_type == _REP_META_CONTEXT:
                (context_id,) = struct.unpack_from(">I", payload)
                self.contexts[payload[4:].decode()] = context_id
        missing = [q for q in queries if q not in self.contexts]
        if missing:
            raise NbdError(f"NBD export {export!r} has no metadata context {', '.join(missing)}")

    def _go(self, export: str) -> None:
        name = export.encode()
        infos = (_INFO_EXPORT, _INFO_BLOCK_SIZE)
        data = struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos))
        data += b"".join(struct.pack(">H", info) for info in infos)
        self._send_option(_OPT_GO, data)
        while True:
            reply_type, payload = self._read_option_reply(_OPT_GO)
            if reply_type == _REP_ACK:
                return
            if reply_type == _REP_INFO and len(payload) >= 12:
                (info,) = struct.unpack_from(">H", payload)
                if info == _INFO_EXPORT:
                    self.size, self.transmission_flags = struct.unpack_from(">QH", payload, 2)

    # --- transmission -------------------------------------------------------------------------------

    def _send_request(  # noqa: PLR0917 - mirrors the wire request's fields
        self,
        command: int,
        offset: int,
        length: int,
        data: bytes = b"",
        flags: int = 0,
        want_data: bool = False,
    ) -> int:
        self._cookie += 1
        cookie = self._cookie
        header = _REQUEST.pack(_REQUEST_MAGIC, flags, command, cookie, offset, length)
        try:
            self._sock.sendall(header + data if len(data) < 65536 else header)
            if len(data) >= 65536:
                self._sock.sendall(data)
        except OSError as exc:
            raise Unavailable(f"NBD connection lost: {exc}") from exc
        self._pending[cookie] = _Pending(offset, length, want_data)
        return cookie

    def _receive_one(self) -> tuple[int, _Pending, bool]:
        """Read one reply (or chunk); return (cookie, its request, whether the request is complete)."""
        (magic,) = struct.unpack(">I", self._recv_exact(4))
        if magic == _SIMPLE_REPLY_MAGIC:
            error, cookie = struct.unpack(">IQ", self._recv_exact(12))
            pending = self._pop_pending(cookie)
            pending.error = error
            if not error and pending.buffer:
                self._recv_into(memoryview(pending.buffer))
            return cookie, pending, True
        if magic != _STRUCTURED_REPLY_MAGIC:
            raise NbdError(f"bad NBD reply magic {magic:#x}")
        flags, reply_type, cookie, length = _STRUCTURED_HEADER.unpack(self._recv_exact(16))
        chunk_owner = self._pending.get(cookie)
        if chunk_owner is None:
            raise NbdError(f"NBD reply for unknown request {cookie}")
        self._read_chunk(chunk_owner, reply_type, length)
        done = bool(flags & _REPLY_FLAG_DONE)
        if done:
            del self._pending[cookie]
        return cookie, chunk_owner, done

    def _read_chunk(self, pending: _Pending, reply_type: int, length: int) -> None:
        if reply_type == _REPLY_OFFSET_DATA:
            (offset,) = struct.unpack(">Q", self._recv_exact(8))
            start = offset - pending.offset
            size = length - 8
            if start < 0 or start + size > pending.length:
                raise NbdError("NBD data chunk outside its request")
            self._recv_into(memoryview(pending.buffer)[start : start + size])
        elif reply_type == _REPLY_OFFSET_HOLE:
            offset, size = struct.unpack(">QI", self._recv_exact(12))
            start = offset - pending.offset
            pending.buffer[start : start + size] = bytes(size)
        elif reply_type == _REPLY_BLOCK_STATUS:
            payload = self._recv_exact(length)
            (context_id,) = struct.unpack_from(">I", payload)
            pairs = list(struct.iter_unpack(">II", payload[4:]))
            pending.extents.append((context_id, pairs))
        elif reply_type & _REPLY_ERROR_BIT:
            payload = self._recv_exact(length)
            (pending.error,) = struct.unpack_from(">I", payload)
        elif reply_type == _REPLY_NONE:
            self._recv_exact(length)
        else:
            self._recv_exact(length)

    def _pop_pending(self, cookie: int) -> _Pending:
        try:
            return self._pending.pop(cookie)
        except KeyError:
            raise NbdError(f"NBD reply for unknown request {cookie}") from None

    def _wait(self, cookie: int) -> _Pending:
        while cookie not in self._finished:
            got, pending, done = self._receive_one()
            if done:
                self._finished[got] = pending
        pending = self._finished.pop(cookie)
        self._raise_for(pending)
        return pending

    @staticmethod
    def _raise_for(pending: _Pending) -> None:
        if pending.error:
            raise NbdError(
                f"NBD request at {pending.offset}+{pending.length} failed: error {pending.error}"
            )

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise InvalidParameter(f"range {offset}+{length} is outside the export ({self.size} bytes)")
        if length > MAX_REQUEST:
            raise InvalidParameter(f"request of {length} bytes exceeds {MAX_REQUEST}")

    # --- public I/O ---------------------------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset`` (holes read as zeros)."""
        self._check_range(offset, length)
        cookie = self._send_request(_CMD_READ, offset, length, want_data=True)
        return bytes(self._wait(cookie).buffer)

    def read_many(self, ranges: Iterable[tuple[int, int]], depth: int = 8) -> Iterator[tuple[int, bytes]]:
        """Read ranges with up to ``depth`` requests in flight; yield ``(offset, data)`` in request order."""
        if depth < 1:
            raise InvalidParameter("depth must be at least 1")
        queue: deque[int] = deque()
        for offset, length in ranges:
            self._check_range(offset, length)
            queue.append(self._send_request(_CMD_READ, offset, length, want_data=True))
            while len(queue) >= depth:
                pending = self._wait(queue.popleft())
                yield pending.offset, bytes(pending.buffer)
        while queue:
            pending = self._wait(queue.popleft())
            yield pending.offset, bytes(pending.buffer)

    def write(self, offset: int, data: bytes, fua: bool = False) -> None:
        """Write ``data`` at ``offset``; with ``fua`` the write is durable when this returns."""
        self._require_writable()
        self._check_range(offset, len(data))
        flags = _CMD_FLAG_FUA if fua else 0
        self._wait(self._send_request(_CMD_WRITE, offset, len(data), data, flags))

    def write_many(self, writes: Iterable[tuple[int, bytes | None, int]], depth: int = 8) -> int:
        """Pipeline ``(offset, data, length)`` writes; ``data`` None writes zeros. Returns bytes written."""
        window = self.write_window(depth)
        for offset, data, length in writes:
            window.write(offset, data, length)
        window.drain()
        return window.written

    def write_window(self, depth: int = 8) -> WriteWindow:
        """A :class:`WriteWindow` on this connection: writes stay in flight across calls."""
        self._require_writable()
        return WriteWindow(self, depth)

    def _zero_request(self, offset: int, length: int) -> int:
        if self.can_write_zeroes:
            return self._send_request(_CMD_WRITE_ZEROES, offset, length)
        return self._send_request(_CMD_WRITE, offset, length, bytes(length))

    def write_zeroes(self, offset: int, length: int) -> None:
        """Make a range read as zeros (a zero cluster in qcow2, not written data)."""
        self._require_writable()
        self._check_range(offset, length)
        self._wait(self._zero_request(offset, length))

    def flush(self) -> None:
        """Make every completed write durable."""
        if self.transmission_flags & _TX_SEND_FLUSH:
            self._wait(self._send_request(_CMD_FLUSH, 0, 0))

    def block_status(self, context: str, offset: int = 0, length: int | None = None) -> list[Extent]:
        """Extents of ``context`` covering ``[offset, offset+length)`` (whole export by default), merged."""
        if context not in self.contexts:
            raise InvalidParameter(f"metadata context {context!r} was not negotiated")
        end = self.size if length is None else offset + length
        if offset < 0 or end < offset or end > self.size:
            raise InvalidParameter(f"range {offset}..{end} is outside the export ({self.size} bytes)")
        context_id = self.contexts[context]
        extents: list[Extent] = []
        position = offset
        while position < end:
            window = min(end - position, _STATUS_WINDOW)
            pending = self._wait(self._send_request(_CMD_BLOCK_STATUS, position, window))
            covered = 0
            for got_id, pairs in pending.extents:
                if got_id != context_id:
                    continue
                for reported, flags in pairs:
                    ext_length = min(reported, end - position - covered)
                    if ext_length <= 0:
                        break
                    _append_merged(extents, Extent(position + covered, ext_length, flags))
                    covered += ext_length
            if covered == 0:
                raise NbdError(f"NBD block status made no progress at offset {position}")
            position += covered
        return extents

    def close(self) -> None:
        """Tell the server we are done and close the socket."""
        try:
            if not self._pending:
                self._sock.sendall(_REQUEST.pack(_REQUEST_MAGIC, 0, _CMD_DISC, 0, 0, 0))
        except OSError:
            pass
        finally:
            self._sock.close()

    def _require_writable(self) -> None:
        if self.read_only:
            raise InvalidParameter("the NBD export is read-only")

    # --- socket helpers -----------------------------------------------------------------------------

    def _recv_exact(self, length: int) -> bytes:
        buffer = bytearray(length)
        self._recv_into(memoryview(buffer))
        return bytes(buffer)

    def _recv_into(self, view: memoryview) -> None:
        received = 0
        total = len(view)
        while received < total:
            try:
                count = self._sock.recv_into(view[received:], total - received)
            except (OSError, ssl.SSLError) as exc:
                raise Unavailable(f"NBD connection lost: {exc}") from exc
            if count == 0:
                raise Unavailable("NBD server closed the connection")
            received += count


class WriteWindow:
    """Writes kept in flight across calls: at most ``depth`` requests wait for their reply.

    A caller that writes as data arrives (the replica's applier) sends the next request while the server
    still works on the earlier ones, instead of waiting for every reply at the end of each batch. Replies
    are checked in request order; the first error raises (``NbdError``) from ``write`` or ``drain``.
    NBD does not order requests in flight, so a write that overlaps one still unanswered waits for it first:
    the later write always wins, as it would one at a time.
    """

    def __init__(self, client: NbdClient, depth: int = 8) -> None:
        if depth < 1:
            raise InvalidParameter("depth must be at least 1")
        self._client = client
        self._depth = depth
        self._in_flight: deque[tuple[int, int, int]] = deque()  # (cookie, offset, end)
        #: Bytes sent so far (data and zero ranges).
        self.written = 0

    def write(self, offset: int, data: bytes | None, length: int) -> None:
        """Send one write (``data`` None: zeros); wait for the oldest reply only when the window is full."""
        client = self._client
        client._check_range(offset, length)  # the window is part of the client: its private helpers
        end = offset + length
        while any(start < end and offset < stop for _, start, stop in self._in_flight):
            client._wait(self._in_flight.popleft()[0])
        if data is None:
            cookie = client._zero_request(offset, length)
        else:
            cookie = client._send_request(_CMD_WRITE, offset, length, data)
        self._in_flight.append((cookie, offset, end))
        self.written += length
        while len(self._in_flight) >= self._depth:
            client._wait(self._in_flight.popleft()[0])

    def drain(self) -> None:
        """Wait until every write sent is answered (raise the first error)."""
        while self._in_flight:
            self._client._wait(self._in_flight.popleft()[0])

    @property
    def in_flight(self) -> int:
        """Writes sent and not yet answered."""
        return len(self._in_flight)


def _append_merged(extents: list[Extent], extent: Extent) -> None:
    """Append, joining with the previous extent when it is adjacent and has the same flags."""
    if extents and extents[-1].end == extent.offset and extents[-1].flags == extent.flags:
        last = extents[-1]
        extents[-1] = Extent(last.offset, last.length + extent.length, last.flags)
    else:
        extents.append(extent)


def dirty_ranges(extents: Iterable[Extent], flag: int = STATE_DIRTY, chunk: int = 4 * 1024 * 1024) -> list[
    tuple[int, int]
]:
    """Split the extents that carry ``flag`` into read requests of at most ``chunk`` bytes."""
    ranges: list[tuple[int, int]] = []
    for extent in extents:
        if not extent.flags & flag:
            continue
        position = extent.offset
        while position < extent.end:
            length = min(chunk, extent.end - position)
            ranges.append((position, length))
            position += length
    return ranges
