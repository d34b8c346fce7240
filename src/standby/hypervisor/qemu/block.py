"""The QMP block commands capture needs: thin one-call wrappers (``QemuBlockOps``) and, over them, the
hypervisor port's ``BlockOps`` (``QemuBlockPort``), where a cut becomes QMP (DESIGN §7).

Each wrapper is one QMP command with Pythonic arguments; errors come from ``qmp.QmpChannel`` already
translated. Waits register their event listener first and then look at the current state, so an event that
fires between the command and the wait is never missed.

``QemuBlockPort`` names disks by id and finds their format nodes (``cmdline.fmt_node``), where the dirty
bitmaps live. Each of its operations costs the QMP round trips the measured figures were taken with: a cut
is one ``transaction`` whatever the number of disks, and so is every change to several bitmaps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from standby.domain.errors import NotFound, StandbyError
from standby.hypervisor.port import Bitmap, CutDisk
from standby.hypervisor.qemu.cmdline import fmt_node
from standby.hypervisor.qemu.images import create_qcow2
from standby.hypervisor.qemu.qmp import QmpChannel, require_text

#: A job's final statuses (``JOB_STATUS_CHANGE``): concluded waits for dismissal, null is gone.
FINAL_JOB_STATUSES = ("concluded", "null")


def bitmap_action(kind: str, node: str, name: str, **extra: Any) -> dict[str, Any]:
    """A ``transaction`` action on a dirty bitmap (``block-dirty-bitmap-add``/``-disable``/…)."""
    return {"type": f"block-dirty-bitmap-{kind}", "data": {"node": node, "name": name, **extra}}


def backup_action(
    job_id: str, device: str, target: str, *, sync: str = "none", **extra: Any
) -> dict[str, Any]:
    """A ``blockdev-backup`` transaction action (``sync=none`` is the fleecing copy-before-write job)."""
    return {
        "type": "blockdev-backup",
        "data": {"job-id": job_id, "device": device, "target": target, "sync": sync, **extra},
    }


def as_bitmap(entry: Mapping[str, Any]) -> Bitmap:
    """A ``dirty-bitmaps`` entry of ``query-named-block-nodes`` as the port reports it."""
    return Bitmap(str(entry.get("name", "")), int(entry.get("count", 0)), bool(entry.get("recording", True)),
                  bool(entry.get("inconsistent", False)))


class QemuBlockOps:
    """The block operations of one running VM."""

    def __init__(self, channel: QmpChannel) -> None:
        self._qmp = channel

    async def execute(self, command: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """Run one QMP command and return its ``return`` value."""
        return await self._qmp.execute(command, arguments)

    async def hmp(self, command_line: str) -> str:
        """A human-monitor command (e.g. ``qemu-io -d /machine/peripheral/disk-d0/virtio-backend "…"``)."""
        return await self._qmp.hmp(command_line)

    async def guest_write(self, disk_id: str, offset: int, length: int, pattern: int = 0xAB) -> str:
        """Write ``length`` bytes of ``pattern`` at ``offset`` through the device, as the guest would."""
        qio = f"write -P {pattern} {offset} {length}"
        out = await self.hmp(f'qemu-io -d /machine/peripheral/disk-{disk_id}/virtio-backend "{qio}"')
        if "error" in out.lower() or "failed" in out.lower():
            raise StandbyError(f"qemu-io write on disk {disk_id} failed: {out.strip()}")
        return out

    # dirty bitmaps -----------------------------------------------------------------------------------------
    async def bitmap_add(
        self,
        node: str,
        name: str,
        *,
        persistent: bool = True,
        granularity: int | None = None,
        disabled: bool = False,
    ) -> None:
        """``block-dirty-bitmap-add`` on a format node (``fmt-<disk>``)."""
        args: dict[str, Any] = {
            "node": require_text(node, "node"),
            "name": require_text(name, "bitmap name"),
            "persistent": persistent,
            "disabled": disabled,
        }
        if granularity is not None:
            args["granularity"] = granularity
        await self._qmp.execute("block-dirty-bitmap-add", args)

    async def bitmap_remove(self, node: str, name: str) -> None:
        """``block-dirty-bitmap-remove``."""
        await self._qmp.execute("block-dirty-bitmap-remove", {"node": node, "name": name})

    async def bitmap_disable(self, node: str, name: str) -> None:
        """``block-dirty-bitmap-disable``: the bitmap stops recording writes."""
        await self._qmp.execute("block-dirty-bitmap-disable", {"node": node, "name": name})

    async def bitmap_merge(self, node: str, target: str, sources: Sequence[str]) -> None:
        """``block-dirty-bitmap-merge`` of ``sources`` (bitmaps on the same node) into ``target``."""
        await self._qmp.execute(
            "block-dirty-bitmap-merge", {"node": node, "target": target, "bitmaps": list(sources)}
        )

    async def bitmaps(self, node: str) -> list[dict[str, Any]]:
        """The dirty bitmaps of a node (``query-named-block-nodes``): name, count, recording, persistent…"""
        nodes = await self._qmp.execute("query-named-block-nodes", {"flat": True})
        for entry in nodes:
            if entry.get("node-name") == node:
                return list(entry.get("dirty-bitmaps", []))
        raise StandbyError(f"no block node {node}")

    async def dirty_counts(self, node: str) -> dict[str, int]:
        """Bytes each named, recording dirty bitmap of a node has set (``dirty-bitmaps[].count``), by name.

        Anonymous bitmaps (a backup job's own) are left out, and so are disabled or inconsistent ones: a
        bitmap that does not record would read 0 forever, which must not pass for "nothing was written".
        """
        typed = [as_bitmap(b) for b in await self.bitmaps(node)]
        return {b.name: b.dirty_bytes for b in typed if b.counts_writes}

    async def transaction(self, actions: Sequence[Mapping[str, Any]]) -> None:
        """``transaction``: every action or none (``bitmap_action``, ``backup_action``)."""
        await self._qmp.execute("transaction", {"actions": [dict(a) for a in actions]})

    # nodes and jobs ----------------------------------------------------------------------------------------
    async def blockdev_add(self, options: Mapping[str, Any]) -> None:
        """``blockdev-add`` with the node's options (must carry ``node-name``)."""
        await self._qmp.execute("blockdev-add", dict(options))

    async def blockdev_del(self, node: str) -> None:
        """``blockdev-del``."""
        await self._qmp.execute("blockdev-del", {"node-name": node})

    async def blockdev_backup(
        self, job_id: str, device: str, target: str, *, sync: str = "none", **extra: Any
    ) -> None:
        """``blockdev-backup`` (``sync=none``: copy-before-write into ``target``, the fleecing job)."""
        await self._qmp.execute(
            "blockdev-backup", backup_action(job_id, device, target, sync=sync, **extra)["data"]
        )

    async def query_block_jobs(self) -> list[dict[str, Any]]:
        """``query-block-jobs``."""
        return list(await self._qmp.execute("query-block-jobs"))

    async def query_jobs(self) -> list[dict[str, Any]]:
        """``query-jobs`` (every job with its status)."""
        return list(await self._qmp.execute("query-jobs"))

    async def job_cancel(self, job_id: str) -> None:
        """``job-cancel``."""
        await self._qmp.execute("job-cancel", {"id": job_id})

    async def job_dismiss(self, job_id: str) -> None:
        """``job-dismiss`` of a concluded job."""
        await self._qmp.execute("job-dismiss", {"id": job_id})

    async def wait_job(
        self, job_id: str, *, statuses: Sequence[str] = FINAL_JOB_STATUSES, timeout: float = 60.0
    ) -> str:
        """Wait until job ``job_id`` reaches one of ``statuses`` (``JOB_STATUS_CHANGE``); its status."""
        async with self._qmp.listen("JOB_STATUS_CHANGE") as events:
            current = {j["id"]: j["status"] for j in await self.query_jobs()}
            status = current.get(job_id, "null")
            while status not in statuses:
                event = await events.wait_for("JOB_STATUS_CHANGE", timeout=timeout, id=job_id)
                status = event["data"]["status"]
            return str(status)

    # NBD export --------------------------------------------------------------------------------------------
    async def nbd_server_start(self, socket_path: Path) -> None:
        """``nbd-server-start`` on a unix socket."""
        addr = {"type": "unix", "data": {"path": str(socket_path)}}  # SocketAddressLegacy
        await self._qmp.execute("nbd-server-start", {"addr": addr})

    async def nbd_server_stop(self) -> None:
        """``nbd-server-stop``."""
        await self._qmp.execute("nbd-server-stop")

    async def block_export_add(
        self,
        export_id: str,
        node: str,
        *,
        name: str | None = None,
        bitmaps: Sequence[str] = (),
        allocation_depth: bool = False,
        writable: bool = False,
    ) -> None:
        """``block-export-add`` of ``node`` over the running NBD server (export name defaults to the id)."""
        args: dict[str, Any] = {
            "type": "nbd",
            "id": export_id,
            "node-name": node,
            "name": name or export_id,
            "writable": writable,
            "allocation-depth": allocation_depth,
        }
        if bitmaps:
            args["bitmaps"] = list(bitmaps)
        await self._qmp.execute("block-export-add", args)

    async def block_export_del(
        self, export_id: str, *, wait: bool = True, timeout: float = 30.0, mode: str | None = None
    ) -> None:
        """``block-export-del``; with ``wait`` returns once ``BLOCK_EXPORT_DELETED`` says it is gone.

        ``mode="hard"`` drops clients still connected (QEMU's default ``safe`` refuses while any is).
        """
        args: dict[str, Any] = {"id": export_id}
        if mode is not None:
            args["mode"] = mode
        async with self._qmp.listen("BLOCK_EXPORT_DELETED") as events:
            await self._qmp.execute("block-export-del", args)
            if wait and any(e.get("id") == export_id for e in await self.query_exports()):
                await events.wait_for("BLOCK_EXPORT_DELETED", timeout=timeout, id=export_id)

    async def query_exports(self) -> list[dict[str, Any]]:
        """``query-block-exports``."""
        return list(await self._qmp.execute("query-block-exports"))

    async def wait_block_job_completed(self, job_id: str, *, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until block job ``job_id`` completes (``BLOCK_JOB_COMPLETED``); ``{"device", "error"?}``.

        Start the job with ``auto-dismiss: false`` so a job that finished before this call is still listed as
        concluded (with its error, if any); then ``job_dismiss`` it.
        """
        async with self._qmp.listen("BLOCK_JOB_COMPLETED") as events:
            job = next((j for j in await self.query_jobs() if j.get("id") == job_id), None)
            if job is None:
                raise StandbyError(
                    f"no block job {job_id}", message_id="QmpCommandFailed", command="query-jobs"
                )
            if job.get("status") in FINAL_JOB_STATUSES:
                done = {"device": job_id}
                return done | ({"error": job["error"]} if job.get("error") else {})
            event = await events.wait_for("BLOCK_JOB_COMPLETED", timeout=timeout, device=job_id)
            return dict(event["data"])


class QemuBlockPort:
    """``hypervisor.port.BlockOps`` of one running VM, over its QMP wrappers."""

    def __init__(self, ops: QemuBlockOps) -> None:
        self._ops = ops

    async def bitmaps(self, disk_id: str) -> list[Bitmap]:
        """``query-named-block-nodes``: the bitmaps of the disk's format node."""
        return [as_bitmap(b) for b in await self._ops.bitmaps(fmt_node(disk_id))]

    async def add_bitmaps(self, disk_ids: Sequence[str], name: str, *, granularity: int) -> None:
        """One ``transaction`` adding the persistent bitmap to every disk (it survives a clean QEMU stop)."""
        await self._ops.transaction([_add(disk_id, name, granularity) for disk_id in disk_ids])

    async def drop_bitmaps(self, bitmaps: Mapping[str, Sequence[str]]) -> None:
        """One ``transaction`` of ``block-dirty-bitmap-remove`` actions."""
        actions = [bitmap_action("remove", fmt_node(disk_id), name)
                   for disk_id, names in bitmaps.items() for name in names]
        if actions:
            await self._ops.transaction(actions)

    async def merge_back(self, bitmaps: Mapping[str, Sequence[str]], into: str) -> None:
        """One ``transaction``: per disk a ``block-dirty-bitmap-merge`` into ``into``, then the removes."""
        actions: list[dict[str, Any]] = []
        for disk_id, names in bitmaps.items():
            if not names:
                continue
            node = fmt_node(disk_id)
            actions.append({"type": "block-dirty-bitmap-merge",
                            "data": {"node": node, "target": into, "bitmaps": list(names)}})
            actions.extend(bitmap_action("remove", node, name) for name in names)
        if actions:
            await self._ops.transaction(actions)

    async def add_fleecing(self, disk: CutDisk, size: int | None) -> None:
        """``qemu-img create`` of the scratch qcow2 (its size asked of QEMU only when not given), then
        ``blockdev-add`` of the node over it with the disk's format node as its backing."""
        disk.scratch.unlink(missing_ok=True)
        await asyncio.to_thread(create_qcow2, disk.scratch, size or await self._virtual_size(disk.disk_id))
        await self._ops.blockdev_add({
            "driver": "qcow2", "node-name": disk.node, "discard": "unmap",
            "file": {"driver": "file", "filename": str(disk.scratch)}, "backing": fmt_node(disk.disk_id)})

    async def cut(self, disks: Sequence[CutDisk], *, new_bitmap: str | None, old_bitmap: str | None,
                  granularity: int) -> None:
        """One ``transaction`` over every disk: add ``new_bitmap``, disable ``old_bitmap``, and start a
        ``blockdev-backup sync=none`` into the fleecing node (kept until dismissed, so ``release_cut`` finds
        it concluded with its error, if any)."""
        actions: list[dict[str, Any]] = []
        for disk in disks:
            node = fmt_node(disk.disk_id)
            if new_bitmap is not None:
                actions.append(_add(disk.disk_id, new_bitmap, granularity))
            if old_bitmap is not None:
                actions.append(bitmap_action("disable", node, old_bitmap))
            actions.append(backup_action(disk.job, node, disk.node, sync="none", **{"auto-dismiss": False}))
        await self._ops.transaction(actions)

    async def export_cut(self, socket: Path, disks: Sequence[CutDisk], *, bitmap: str | None) -> None:
        """``nbd-server-start`` (once per QEMU process: an earlier cut's server is reused), then one
        ``block-export-add`` per disk; an exported bitmap must be disabled, and is busy until the export
        is deleted."""
        try:
            await self._ops.nbd_server_start(socket)
        except StandbyError as exc:
            if "already" not in str(exc).lower():
                raise
        for disk in disks:
            await self._ops.block_export_add(disk.node, disk.node, bitmaps=[bitmap] if bitmap else [],
                                             allocation_depth=True)

    async def release_cut(self, disks: Sequence[CutDisk]) -> None:
        """``block-export-del`` (hard: a reader still connected, as after a cancelled cycle, must not keep
        the cut; waits for ``BLOCK_EXPORT_DELETED``), ``job-cancel`` + ``job-dismiss``, ``blockdev-del``,
        then the scratch files."""
        exports = {e.get("id") for e in await self._ops.query_exports()}
        for disk in disks:
            if disk.node in exports:
                await self._ops.block_export_del(disk.node, mode="hard")
        jobs = {j.get("id"): j.get("status") for j in await self._ops.query_jobs()}
        for disk in disks:
            if disk.job not in jobs:
                continue
            if jobs[disk.job] not in FINAL_JOB_STATUSES:
                with contextlib.suppress(StandbyError):  # it may conclude on its own meanwhile
                    await self._ops.job_cancel(disk.job)
                await self._ops.wait_job(disk.job)
            with contextlib.suppress(StandbyError):  # already dismissed
                await self._ops.job_dismiss(disk.job)
        nodes = await self._node_names()
        for disk in disks:
            if disk.node in nodes:
                await self._ops.blockdev_del(disk.node)
            disk.scratch.unlink(missing_ok=True)

    async def _nodes(self) -> list[dict[str, Any]]:
        return list(await self._ops.execute("query-named-block-nodes", {"flat": True}))

    async def _node_names(self) -> set[str]:
        return {str(node.get("node-name")) for node in await self._nodes()}

    async def _virtual_size(self, disk_id: str) -> int:
        for node in await self._nodes():
            if node.get("node-name") == fmt_node(disk_id):
                return int(node["image"]["virtual-size"])
        raise NotFound(f"no block node for disk {disk_id}", message_id="ObjectNotFound", kind="disk",
                       key=disk_id)


def _add(disk_id: str, name: str, granularity: int) -> dict[str, Any]:
    return bitmap_action("add", fmt_node(disk_id), name, persistent=True, granularity=granularity)
