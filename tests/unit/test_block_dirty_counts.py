"""QemuBlockOps.dirty_counts: only named bitmaps that record can say "nothing was written" (a heartbeat)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from standby.hypervisor.qemu.block import QemuBlockOps


class AnsweringChannel:
    """A QMP channel that answers query-named-block-nodes with the given nodes."""

    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self.nodes = nodes

    async def execute(self, command: str, arguments: Mapping[str, Any] | None = None) -> Any:
        assert command == "query-named-block-nodes"
        return self.nodes

    async def hmp(self, command_line: str) -> str:
        raise AssertionError("not used")


def _counts(bitmaps: list[dict[str, Any]]) -> dict[str, int]:
    channel = AnsweringChannel([{"node-name": "other", "dirty-bitmaps": [{"name": "x", "count": 9}]},
                                {"node-name": "fmt-d0", "dirty-bitmaps": bitmaps}])
    return asyncio.run(QemuBlockOps(channel).dirty_counts("fmt-d0"))  # type: ignore[arg-type]


def test_recording_named_bitmaps_are_counted() -> None:
    assert _counts([{"name": "rep-4", "count": 0, "recording": True},
                    {"name": "rep-3", "count": 65536, "recording": True}]) == {"rep-4": 0, "rep-3": 65536}


def test_anonymous_disabled_and_inconsistent_bitmaps_are_left_out() -> None:
    assert _counts([{"count": 131072, "recording": True},  # a backup job's own
                    {"name": "rep-3", "count": 0, "recording": False},  # disabled: would read 0 forever
                    {"name": "rep-2", "count": 0, "recording": True, "inconsistent": True},
                    {"name": "rep-4", "count": 4096, "recording": True}]) == {"rep-4": 4096}
