"""CutReader.blocks' read-ahead thread (engine.capture._prefetched): order, errors, early close."""

from __future__ import annotations

import threading
from collections.abc import Generator

import pytest

from standby.domain.errors import Unavailable
from standby.engine.capture import _prefetched

Block = tuple[int, int, bytes | None, int]


def _blocks(count: int, *, fail_at: int | None = None,
            log: list[str] | None = None) -> Generator[Block, None, None]:
    try:
        for index in range(count):
            if index == fail_at:
                raise Unavailable("NBD connection lost")
            yield 0, index * 4096, bytes([index % 256]) * 16, 16
    finally:
        if log is not None:
            log.append(f"closed in {threading.current_thread().name}")


def test_every_block_arrives_in_order() -> None:
    assert list(_prefetched(_blocks(50), 4)) == list(_blocks(50))


def test_the_producers_error_is_raised_to_the_consumer_after_the_blocks_before_it() -> None:
    got = []
    with pytest.raises(Unavailable, match="connection lost"):
        for block in _prefetched(_blocks(10, fail_at=6), 2):
            got.append(block[1])
    assert got == [index * 4096 for index in range(6)]


def test_closing_early_stops_the_thread_and_closes_the_source_first() -> None:
    log: list[str] = []
    before = threading.active_count()
    stream = _prefetched(_blocks(1000, log=log), 2)
    assert next(stream)[1] == 0
    stream.close()  # returns only after the producer closed the source (its NBD connection)
    assert log == ["closed in capture-prefetch"]
    assert threading.active_count() == before
