"""``daemon.allocator``: the malloc thresholds ``standby serve`` sets before its loop starts."""

from __future__ import annotations

import ctypes

from standby.daemon import allocator


class FakeLibc:
    def __init__(self, answer: int = 1) -> None:
        self.answer = answer
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.answer


def test_sets_both_thresholds() -> None:
    libc = FakeLibc()
    assert allocator.tune(libc)
    assert libc.calls == [(allocator.M_MMAP_THRESHOLD, 16 << 20), (allocator.M_TRIM_THRESHOLD, 64 << 20)]


def test_a_refused_setting_is_reported() -> None:
    assert not allocator.tune(FakeLibc(answer=0))


def test_this_systems_libc_takes_them() -> None:
    # glibc here (Debian): mallopt answers 1 for a valid parameter and value; the values are in its range
    # (the mmap threshold at most 32 MiB on 64-bit).
    assert hasattr(ctypes.CDLL(None), "mallopt")
    assert allocator.tune()
