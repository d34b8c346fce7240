"""Builds the test guest: Debian's kernel (as an ELF vmlinux for PVH boot) and a busybox initramfs.

Everything comes from Debian packages: ``linux-image-<ver>-amd64`` (the one ``linux-image-amd64`` depends on)
and ``qemu-guest-agent`` are fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``; busybox,
mke2fs and the C library come from the installed ``busybox-static``, ``e2fsprogs`` and ``libc6-dev``. The
workload writer (``writer.c``) is compiled with ``gcc -static``.

The result is cached in the cache directory (``$STANDBY_GUEST_CACHE`` or ``/var/cache/standby/guest``) under
a key made of every input (package versions, file hashes); a build with the same key returns the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from standby.domain.errors import StandbyError, Unavailable
from standby.guest.cpio import Entry, parents, write_archive
from standby.guest.kernel import extract_vmlinux, modules_from_show_depends

#: Bump when the layout of the initramfs changes in a way the file hashes do not show.
BUILD_FORMAT = 2
DEFAULT_CACHE = Path("/var/cache/standby/guest")
READY_MARKER = "STANDBY-GUEST-READY"
MODULES = ("virtio_pci", "virtio_blk", "virtio_console", "virtio_net", "ext4")
#: For the ACPI power button (busybox acpid reads /dev/input/event*); skipped when built in or absent.
OPTIONAL_MODULES = ("button", "evdev")
_HERE = Path(__file__).parent
_SOURCES = ("writer.c", "init.sh", "halt.sh", "build.py", "cpio.py", "kernel.py")
_BUSYBOX = Path("/bin/busybox")
_MKE2FS = Path("/sbin/mke2fs")
_MKE2FS_CONF = Path("/etc/mke2fs.conf")

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class GuestImage:
    """A built test guest: boot it with ``-kernel kernel -initrd initrd -append append()``."""

    kernel: Path
    initrd: Path
    kernel_version: str
    key: str

    def append(self, *extra: str) -> str:
        """A kernel command line: serial console, quiet boot, then ``extra`` (e.g. ``standby.writer=…``)."""
        return " ".join(("console=ttyS0", "quiet", *extra))


def default_cache_dir() -> Path:
    """``$STANDBY_GUEST_CACHE`` if set, else ``/var/cache/standby/guest``."""
    env = os.environ.get("STANDBY_GUEST_CACHE")
    return Path(env) if env else DEFAULT_CACHE


def build_guest(cache_dir: Path | None = None, *, force: bool = False, log: Log | None = None) -> GuestImage:
    """Build the guest into ``cache_dir`` unless a build of the same inputs is already there."""
    cache = cache_dir or default_cache_dir()
    say = log or (lambda _msg: None)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StandbyError(f"cannot create the guest cache {cache}: {exc.strerror}") from exc
    with _locked(cache / ".lock"):
        inputs = _resolve_inputs()
        key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
        cached = _load_manifest(cache, key)
        if cached is not None and not force:
            say(f"guest cache is current ({cached.kernel_version}, key {key[:12]})")
            return cached
        say(f"building the test guest (kernel {inputs['kernel_package']} {inputs['kernel_version']})")
        return _build(cache, inputs, key, say)


def _build(cache: Path, inputs: dict[str, str], key: str, say: Log) -> GuestImage:
    debs = cache / "debs"
    debs.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="standby-guest-") as tmp:
        work = Path(tmp)
        kdeb = _download(debs, inputs["kernel_package"], inputs["kernel_version"], say)
        qdeb = _download(debs, "qemu-guest-agent", inputs["qga_version"], say)
        kroot, qroot = work / "kernel", work / "qga"
        _run(["dpkg-deb", "-x", str(kdeb), str(kroot)])
        _run(["dpkg-deb", "-x", str(qdeb), str(qroot)])
        kver = inputs["kernel_package"].removeprefix("linux-image-")
        vmlinux = extract_vmlinux((kroot / "boot" / f"vmlinuz-{kver}").read_bytes())
        entries = _initramfs_entries(work, kroot, qroot, kver)
        say(f"initramfs: {len(entries)} entries")
        (cache / "vmlinux.tmp").write_bytes(vmlinux)
        with (cache / "initrd.img.tmp").open("wb") as out:
            write_archive(out, entries)
    os.replace(cache / "vmlinux.tmp", cache / "vmlinux")
    os.replace(cache / "initrd.img.tmp", cache / "initrd.img")
    manifest = {"key": key, "kernel_version": kver, "inputs": inputs}
    (cache / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    say(f"guest built in {cache}")
    return GuestImage(cache / "vmlinux", cache / "initrd.img", kver, key)


def _initramfs_entries(work: Path, kroot: Path, qroot: Path, kver: str) -> list[Entry]:
    files: dict[str, Entry] = {}

    def add(entry: Entry) -> None:
        files[entry.name.lstrip("/")] = entry

    add(Entry.file("/init", (_HERE / "init.sh").read_bytes(), executable=True))
    add(Entry.file("/sbin/shutdown", (_HERE / "halt.sh").read_bytes(), executable=True))
    add(Entry.file("/etc/acpi/PWRF/00000080", (_HERE / "halt.sh").read_bytes(), executable=True))
    add(Entry.file("/bin/busybox", _BUSYBOX.read_bytes(), executable=True))
    add(Entry.file("/bin/writer", _compile_writer(work), executable=True))
    add(Entry.file("/etc/mke2fs.conf", _MKE2FS_CONF.read_bytes()))
    for binary, dest in ((qroot / "usr/sbin/qemu-ga", "/usr/sbin/qemu-ga"), (_MKE2FS, "/sbin/mke2fs")):
        add(Entry.file(dest, binary.read_bytes(), executable=True))
        for lib in _shared_libraries(binary):
            add(Entry.file(lib, Path(lib).resolve().read_bytes(), executable=True))
    order = []
    for rel, data in _modules(kroot, kver):
        add(Entry.file(rel, data))
        order.append(rel)
    add(Entry.file("/etc/modules.order", ("\n".join(order) + "\n").encode()))
    for d in ("proc", "sys", "dev", "run", "tmp", "mnt"):
        add(Entry.directory(d))
    add(Entry.chardev("/dev/console", 5, 1))
    return _with_parents(files)


def _with_parents(files: dict[str, Entry]) -> list[Entry]:
    dirs = {p for name in files for p in parents(name)} - set(files)
    ordered = [Entry.directory(d) for d in sorted(dirs)]
    return ordered + [files[name] for name in sorted(files)]


def _modules(kroot: Path, kver: str) -> Iterator[tuple[str, bytes]]:
    if not (kroot / "lib/modules" / kver / "modules.dep").exists():
        _run(["depmod", "-b", str(kroot), kver])
    wanted = list(MODULES)
    for name in OPTIONAL_MODULES:
        probe = subprocess.run(
            ["modprobe", "-S", kver, "-d", str(kroot), "--show-depends", name],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            wanted.append(name)
    out = _run(["modprobe", "-a", "-S", kver, "-d", str(kroot), "--show-depends", *wanted])
    for rel in modules_from_show_depends(out, str(kroot)):
        yield _uncompressed(rel, (kroot / rel.lstrip("/")).read_bytes())


def _uncompressed(rel: str, data: bytes) -> tuple[str, bytes]:
    # busybox insmod loads plain .ko files only.
    if rel.endswith(".xz"):
        return rel.removesuffix(".xz"), lzma.decompress(data)
    if rel.endswith(".zst"):
        import zstandard

        return rel.removesuffix(".zst"), zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return rel, data


def _compile_writer(work: Path) -> bytes:
    out = work / "writer"
    _run(["gcc", "-static", "-O2", "-Wall", "-o", str(out), str(_HERE / "writer.c")])
    return out.read_bytes()


def _shared_libraries(binary: Path) -> list[str]:
    """Absolute paths of the libraries (and loader) ``binary`` needs, as ldd resolves them on this host."""
    libs = []
    for line in _run(["ldd", str(binary)]).splitlines():
        if "not found" in line:
            raise StandbyError(f"{binary.name} needs a library this host lacks: {line.strip()}")
        for word in line.split():
            if word.startswith("/"):
                libs.append(word)
    return libs


def _resolve_inputs() -> dict[str, str]:
    kernel = _kernel_package()
    inputs = {
        "format": str(BUILD_FORMAT),
        "kernel_package": kernel,
        "kernel_version": _candidate(kernel),
        "qga_version": _candidate("qemu-guest-agent"),
        "busybox": _sha(_BUSYBOX),
        "mke2fs": _sha(_MKE2FS),
    }
    for name in _SOURCES:
        inputs[name] = _sha(_HERE / name)
    return inputs


def _kernel_package() -> str:
    out = _run(["apt-cache", "depends", "linux-image-amd64"])
    for line in out.splitlines():
        dep = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and dep.startswith("linux-image-"):
            return dep
    raise Unavailable(
        "apt knows no linux-image-amd64: run `apt-get update` first", message_id="GuestAptLists"
    )


def _candidate(package: str) -> str:
    for line in _run(["apt-cache", "policy", package]).splitlines():
        if line.strip().startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            if version and version != "(none)":
                return version
    raise Unavailable(f"apt has no candidate for {package}: run `apt-get update` first")


def _download(debs: Path, package: str, version: str, say: Log) -> Path:
    stem = f"{package}_{version.replace(':', '%3a')}_amd64.deb"
    target = debs / stem
    if not target.exists():
        say(f"apt-get download {package}={version}")
        _run(["apt-get", "download", "-q", f"{package}={version}"], cwd=debs)
    if not target.exists():
        raise Unavailable(f"apt-get download gave no {stem}")
    return target


def _sha(path: Path) -> str:
    if not path.exists():
        raise StandbyError(f"{path} is missing: run scripts/setup.sh (it installs the guest's packages)")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(argv: list[str], cwd: Path | None = None) -> str:
    if shutil.which(argv[0]) is None:
        raise StandbyError(f"{argv[0]} is not installed: run scripts/setup.sh", message_id="ToolMissing")
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise StandbyError(f"{' '.join(argv[:2])} failed: {tail}", message_id="GuestBuildStep")
    return proc.stdout


def _load_manifest(cache: Path, key: str) -> GuestImage | None:
    try:
        manifest = json.loads((cache / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    kernel, initrd = cache / "vmlinux", cache / "initrd.img"
    if manifest.get("key") != key or not kernel.exists() or not initrd.exists():
        return None
    return GuestImage(kernel, initrd, str(manifest.get("kernel_version", "")), key)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Parallel test sessions share one cache: one builds, the others wait and then find it current.
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
