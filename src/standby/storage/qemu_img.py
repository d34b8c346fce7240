"""``qemu-img``: the one place that runs it, and the one place its failures become ``domain.errors``.

Every caller (recovery-point chains, failover overlays, VM disks, offline bitmaps, reverse replication, block
hashes, the guest verifier) goes through the typed functions below; ``failure`` is the error map, shared
with ``storage.qemu_nbd`` because both print the same block-layer messages. What a failure becomes:

* ``No space left on device``: ``OutOfMemory`` (``NoSpace``);
* ``Failed to get "write" lock`` (or its shared form, or another permission's): ``InUse`` (``ImageLocked``);
* ``Could not create`` (a new image, e.g. in a folder that is not there): ``StandbyError``
  (``ImageOperationFailed``);
* ``No such file or directory``: ``FileNotFound`` (``DiskFileMissing``, naming the missing file, which may be
  a backing file);
* ``Could not open`` otherwise, not a qcow2, an unknown format, corrupt: ``InvalidParameter`` (``BadImage``);
* anything else: ``StandbyError`` (``ImageOperationFailed``).

A missing program is ``Unavailable`` (``ToolMissing``). The first match wins: a lock or a missing file is
reported as such although qemu-img words both as "Could not open …".

Children run through ``children.bound_to_daemon``: a commit or convert left behind by a killed daemon would
hold the image's lock against the restarted daemon redoing the same step.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from standby.domain.errors import (
    FileNotFound,
    InUse,
    InvalidParameter,
    OutOfMemory,
    StandbyError,
    Unavailable,
)
from standby.storage.children import bound_to_daemon

QEMU_IMG = "qemu-img"


# -- the error map ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One kind of failure: what its stderr matches, the error it becomes and that error's English text."""

    pattern: re.Pattern[str]
    error: type[StandbyError]
    message_id: str
    text: str  # filled with ``path`` and ``reason``


RULES: tuple[Rule, ...] = (
    Rule(re.compile(r"No space left"), OutOfMemory, "NoSpace", "no space for {path}: {reason}"),
    Rule(re.compile(r'Failed to get (?:shared )?"[^"]+" lock|Failed to lock byte'), InUse, "ImageLocked",
         "{path} is in use by another process: {reason}"),
    Rule(re.compile(r"Could not create"), StandbyError, "ImageOperationFailed",
         "cannot create {path}: {reason}"),
    Rule(re.compile(r"No such file or directory"), FileNotFound, "DiskFileMissing",
         "{path} does not exist: {reason}"),
    Rule(re.compile(r"Could not open|is not in qcow2 format|Unknown (?:file )?format|[Ii]mage is corrupt"),
         InvalidParameter, "BadImage", "{path} is not a usable disk image: {reason}"),
)

#: The file a "No such file" names, which may be a backing file rather than the image asked about.
_MISSING = re.compile(r"'([^']+)': No such file or directory")
_PROGRAM_PREFIX = re.compile(r"^(?:qemu-img|qemu-nbd): ")


def reason_of(stderr: str, returncode: int) -> str:
    """What a failed QEMU tool said, on one line without its program prefix (its exit code if nothing)."""
    lines = [_PROGRAM_PREFIX.sub("", line.strip()) for line in stderr.splitlines() if line.strip()]
    return " ".join(lines) or f"exit {returncode}"


def failure(command: str, path: Path, stderr: str, returncode: int) -> StandbyError:
    """The domain error for ``command`` (``"qemu-img commit"``, ``"qemu-nbd"``) failing on ``path``."""
    reason = reason_of(stderr, returncode)
    for rule in RULES:
        if rule.pattern.search(reason):
            named = str(path)
            if rule.error is FileNotFound and (missing := _MISSING.search(reason)):
                named = missing.group(1)
            return rule.error(rule.text.format(path=named, reason=reason), message_id=rule.message_id,
                              path=named, reason=reason)
    return StandbyError(f"{command} {path} failed: {reason}", message_id="ImageOperationFailed",
                        path=str(path), reason=reason)


def require(program: str) -> None:
    """``Unavailable`` unless ``program`` is on the PATH."""
    if shutil.which(program) is None:
        raise Unavailable(f"{program} is not installed", message_id="ToolMissing", tool=program)


def _run(args: Sequence[str], path: Path) -> str:
    """Run ``qemu-img args`` about ``path``: its stdout, or its failure as ``failure`` maps it."""
    require(QEMU_IMG)
    try:
        proc = subprocess.run(bound_to_daemon([QEMU_IMG, *args]), capture_output=True, text=True,
                              errors="replace", check=False)
    except OSError as exc:
        raise Unavailable(f"cannot start {QEMU_IMG}: {exc.strerror}", message_id="ToolMissing",
                          tool=QEMU_IMG) from None
    if proc.returncode != 0:
        raise failure(f"{QEMU_IMG} {args[0]}", path, proc.stderr, proc.returncode)
    return proc.stdout


def _json(out: str, command: str, path: Path) -> object:
    try:
        return json.loads(out)
    except ValueError as bad:
        raise StandbyError(f"qemu-img {command} {path} printed what we cannot read: {bad}",
                           message_id="ImageOperationFailed", path=str(path), reason=str(bad)) from None


# -- images -------------------------------------------------------------------------------------------------


def _refuse_existing(path: Path) -> None:
    if path.exists() or path.is_symlink():
        raise InvalidParameter(f"{path} already exists", message_id="AlreadyExists", kind="image",
                               key=str(path))


def create(path: Path, size: int) -> None:
    """A new standalone qcow2 image of ``size`` bytes (``path`` must not exist)."""
    if size <= 0:
        raise InvalidParameter(f"disk size {size} is not positive", message_id="InvalidDiskSize", size=size)
    _refuse_existing(path)
    _run(["create", "-q", "-f", "qcow2", str(path), str(size)], path)


def create_overlay(path: Path, backing: Path, *, backing_format: str = "qcow2", size: int | None = None,
                   relative: bool = True, replace: bool = False) -> Path:
    """A new qcow2 overlay at ``path`` on ``backing``; ``path``.

    * ``relative``: the backing is named relative to the overlay when both share a folder (renames inside
      the folder keep the chain intact); otherwise, and always without it, by its absolute path.
    * ``size`` (the disk's virtual size): qemu-img does not open the backing chain (``-u``), which costs time
      linear in its depth (bench P7: 3-4 s at 570 points, 9 ms with ``-u``). Only for callers that checked
      the chain already or open it right after anyway; without it qemu-img opens and checks the chain.
    * ``replace``: an old file at ``path`` is replaced (the overlay is made beside it and renamed over it);
      otherwise an existing ``path`` is refused.
    """
    if size is not None and size <= 0:
        raise InvalidParameter(f"disk size {size} is not positive", message_id="InvalidDiskSize", size=size)
    if not replace:
        _refuse_existing(path)
    if not backing.is_file():
        raise FileNotFound(f"backing image {backing} does not exist", message_id="DiskFileMissing",
                           path=str(backing))
    same_folder = backing.parent.resolve() == path.parent.resolve()
    name = backing.name if relative and same_folder else str(backing.absolute())
    unsafe = ["-u"] if size is not None else []
    sized = [str(size)] if size is not None else []
    target = path.with_name(path.name + ".partial") if replace else path
    if replace:
        target.unlink(missing_ok=True)
    _run(["create", "-q", "-f", "qcow2", *unsafe, "-b", name, "-F", backing_format, str(target), *sized],
         path)
    if replace:
        target.replace(path)
    return path


@dataclass(frozen=True, slots=True)
class ImageBitmap:
    """A persistent bitmap stored in a qcow2 image (``inconsistent``: left by a QEMU that did not exit
    cleanly; it can only be removed)."""

    name: str
    granularity: int
    enabled: bool
    inconsistent: bool


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What ``qemu-img info`` says about an image."""

    path: str
    format: str
    virtual_size: int
    backing_file: str | None = None  # as the header names it (possibly relative to the image)
    bitmaps: tuple[ImageBitmap, ...] = ()


def info(path: Path, *, shared: bool = True, fmt: str | None = None) -> ImageInfo:
    """``qemu-img info`` of one image; ``shared`` (``-U``): readable while another process holds it."""
    if not path.is_file():
        raise FileNotFound(f"{path} does not exist", message_id="DiskFileMissing", path=str(path))
    args = ["info", "--output=json", *(["-U"] if shared else []), *(["-f", fmt] if fmt else []), str(path)]
    data = _json(_run(args, path), "info", path)
    try:
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        specific = data.get("format-specific") or {}
        found = (specific.get("data") or {}).get("bitmaps", [])
        bitmaps = tuple(ImageBitmap(str(b["name"]), int(b["granularity"]), "auto" in b.get("flags", []),
                                    "in-use" in b.get("flags", [])) for b in found)
        backing = data.get("backing-filename")
        return ImageInfo(str(path), str(data["format"]), int(data["virtual-size"]),
                         str(backing) if backing is not None else None, bitmaps)
    except (KeyError, TypeError, ValueError, AttributeError) as bad:
        raise StandbyError(f"qemu-img info {path} printed what we cannot read: {bad!r}",
                           message_id="ImageOperationFailed", path=str(path), reason=repr(bad)) from None


def virtual_size(path: Path) -> int:
    """The image's virtual size in bytes."""
    return info(path).virtual_size


def image_map(path: Path, *, shared: bool) -> list[dict[str, object]]:
    """``qemu-img map`` of a qcow2 image with its backing chain: one JSON object per extent."""
    args = ["map", "--output=json", *(["-U"] if shared else []), "-f", "qcow2", str(path)]
    rows = _json(_run(args, path), "map", path)
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise StandbyError(f"qemu-img map {path} printed no list of extents",
                           message_id="ImageOperationFailed", path=str(path), reason="not a list of extents")
    return rows


def commit(path: Path) -> None:
    """Write the qcow2 overlay ``path``'s clusters into its backing file (``-d``: ``path`` keeps them, it is
    not emptied, as the caller replaces it with the backing file afterwards)."""
    _run(["commit", "-q", "-d", "-f", "qcow2", str(path)], path)


def rebase_unsafe(path: Path, backing: Path, *, backing_format: str = "qcow2") -> None:
    """Point the qcow2 ``path`` at ``backing`` without reading either (``-u``: the content must match)."""
    _run(["rebase", "-u", "-f", "qcow2", "-F", backing_format, "-b", str(backing), str(path)], path)


def convert(source: Path, target: Path, *, out_format: str = "raw", shared: bool = False) -> None:
    """Copy ``source`` (any format, its backing chain resolved) into a new ``target`` of ``out_format``;
    ``shared`` (``-U``): while another process holds ``source``."""
    _run(["convert", *(["-U"] if shared else []), "-O", out_format, str(source), str(target)], source)


# -- persistent dirty bitmaps of an image no process holds open ------------------------------------------


def bitmaps(path: Path) -> list[ImageBitmap]:
    """The persistent bitmaps of a qcow2 image (taking its lock: ``InUse`` while a QEMU runs on it)."""
    return list(info(path, shared=False, fmt="qcow2").bitmaps)


def bitmap_add(path: Path, name: str, granularity: int) -> None:
    """Add an enabled persistent bitmap (it records writes once a QEMU opens the image)."""
    _run(["bitmap", "--add", "-g", str(granularity), "-f", "qcow2", str(path), name], path)


def bitmap_disable(path: Path, name: str) -> None:
    """Stop a bitmap from recording."""
    _run(["bitmap", "--disable", "-f", "qcow2", str(path), name], path)


def bitmap_remove(path: Path, name: str) -> None:
    """Remove a bitmap (also an inconsistent one)."""
    _run(["bitmap", "--remove", "-f", "qcow2", str(path), name], path)


def bitmap_merge(path: Path, source: str, target: str) -> None:
    """Merge bitmap ``source`` into ``target`` (same image)."""
    _run(["bitmap", "--merge", source, "-f", "qcow2", str(path), target], path)
