"""Two real daemons' peer listeners on loopback with certificates from ``standby certs``: mutual TLS,
authorization entries, the replica routes end to end (a real log applied on the replica host)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from standby.daemon.testing import DaemonProcess, free_port
from standby.domain.entities import AuthorizationEntry, ReplicationSettings, ServiceSettings, VirtualMachine
from standby.domain.entities import Disk as VmDisk
from standby.domain.enums import EnabledState, ReplicationState
from standby.domain.errors import AccessDenied, NotFound, NotSupported, Unavailable
from standby.domain.replica import OutOfSequence
from standby.engine.connection import ConnectionTarget, client_ssl_context, probe
from standby.peer import pki
from standby.peer.client import PeerClient
from standby.peer.tls import PeerTls
from standby.storage import blockhash, chain, qemu_img
from standby.storage.logformat import DiskInfo, LogHeader, LogKind, encode_log
from standby.store.sqlite import Database

MiB = 1024 * 1024
VM_ID = "7B2C3D4E-0000-4000-8000-0000000000B2"
SIZE = 8 * MiB


def _certs(*args: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-m", "standby", "certs", *args, "--json"], capture_output=True,
                          text=True, check=True)
    data: dict[str, object] = json.loads(proc.stdout)
    return data


@dataclass
class Site:
    root: Path
    replica: DaemonProcess
    replica_tls: PeerTls
    location: Path
    tls: dict[str, PeerTls]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.peer_port}"

    peer_port: int = 0

    def client(self, who: str) -> PeerClient:
        return PeerClient(self.url, self.tls[who], timeout=20)


def _issue(ca: Path, name: str, out: Path) -> PeerTls:
    _certs("issue", name, "--ip", "127.0.0.1", "--ca-dir", str(ca), "--out", str(out))
    return PeerTls(out / "ca.crt", out / "host.crt", out / "host.key")


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    root = Path(tempfile.mkdtemp(prefix="sby-peer-", dir="/tmp"))
    ca, evil_ca = root / "ca", root / "evil-ca"
    _certs("init", "--dir", str(ca), "--name", "lab")
    _certs("init", "--dir", str(evil_ca), "--name", "evil")
    data_dir = root / "b"
    replica_tls = _issue(ca, "hv-b.test", data_dir / "tls")
    tls = {name: _issue(ca, name, root / name) for name in ("hv-a.test", "hv-x.test", "hv-e.test")}
    foreign = _issue(evil_ca, "hv-a.test", root / "foreign")
    tls["foreign"] = PeerTls(tls["hv-a.test"].ca_file, foreign.cert_file, foreign.key_file)
    location = root / "replicas"
    location.mkdir()
    (root / "outside").mkdir()
    with Database.open(data_dir / "standby.db") as db:  # the replica server's settings, before it starts
        db.service_settings.put(ServiceSettings(recovery_server_enabled=True))
        db.auth_entries.insert(AuthorizationEntry("hv-a.test", "lab", str(location)))
        db.auth_entries.insert(AuthorizationEntry("*.e.test", "escape", str(location)))
        db.auth_entries.insert(AuthorizationEntry("hv-e.test", "escape", str(location)))
    peer_port = free_port()
    extra = (f'[tls]\nca_file = "{ca / "ca.crt"}"\n'
             f'[peer]\naddress = "127.0.0.1"\nport = {peer_port}\n')
    daemon = DaemonProcess.start(data_dir, users={"admin": "pw"}, extra_config=extra)
    try:
        yield Site(root, daemon, replica_tls, location, tls, peer_port)
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


async def _call(site: Site, who: str, method: str, *args: object, **kwargs: object) -> object:
    async with site.client(who) as client:
        return await getattr(client, method)(*args, **kwargs)


def _vm() -> VirtualMachine:
    return VirtualMachine(VM_ID, "web", 256, 1, disks=(VmDisk("disk0", "/primary/web.qcow2", SIZE),))


def _log(source: Path, sequence: int, parent: int, kind: LogKind) -> list[bytes]:
    header = LogHeader(VM_ID, 0, sequence, parent, kind, "2026-05-01T12:00:00+00:00",
                       (DiskInfo("disk0", SIZE),))
    with chain.NbdServer(source, writable=False) as server, server.connect() as client:
        data = client.read(0, SIZE)
    frames = [(0, offset, data[offset:offset + MiB], MiB) for offset in range(0, SIZE, MiB)]
    return list(encode_log(header, frames))


async def _stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    data = b"".join(chunks)
    for offset in range(0, len(data), 100_000):
        yield data[offset:offset + 100_000]


def test_ping_identifies_both_ends(site: Site) -> None:
    answer = _run(_call(site, "hv-a.test", "ping"))
    assert isinstance(answer, dict)
    assert answer["service"] == "standby" and answer["caller"] == "hv-a.test"
    own = pki.summarize(pki.load_certificates(site.replica_tls.cert_file)[0])
    assert answer["thumbprint"] == own.thumbprint


def test_replica_routes_end_to_end(site: Site, tmp_path: Path) -> None:
    settings = ReplicationSettings(recovery_history=4)
    created = _run(_call(site, "hv-a.test", "create_replica", _vm(), settings, primary_host="hv-a.test"))
    assert created.state == ReplicationState.WAITING_TO_COMPLETE_INITIAL_REPLICATION  # type: ignore[attr-defined]
    again = _run(_call(site, "hv-a.test", "create_replica", _vm(), settings, primary_host="hv-a.test"))
    assert again.head_sequence == 0  # type: ignore[attr-defined]

    source = tmp_path / "src.qcow2"
    qemu_img.create(source, SIZE)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 300k", str(source)], check=True,
                   capture_output=True)
    ack = _run(_call(site, "hv-a.test", "put_log", VM_ID, 1, _stream(_log(source, 1, 0, LogKind.INITIAL))))
    assert ack.head_sequence == 1 and ack.point_id  # type: ignore[attr-defined]
    status = _run(_call(site, "hv-a.test", "replica_status", VM_ID))
    assert status.state == ReplicationState.REPLICATING
    assert [p.sequence for p in status.points] == [1]
    image = site.location / f"web_{VM_ID}" / "disks" / "disk0" / "rp-0000000001.qcow2"
    compared = subprocess.run(["qemu-img", "compare", "-q", "-U", str(source), str(image)], check=False)
    assert compared.returncode == 0

    with pytest.raises(OutOfSequence) as info:
        _run(_call(site, "hv-a.test", "put_log", VM_ID, 5, _stream(_log(source, 5, 4, LogKind.DELTA))))
    assert info.value.head_sequence == 1
    hashes = _run(_call(site, "hv-a.test", "hashes", VM_ID, "disk0", 64 * 1024))
    assert hashes == blockhash.image_block_hashes(source, 64 * 1024)

    assert _run(_call(site, "hv-a.test", "set_state", VM_ID, 7)) == ReplicationState.SUSPENDED
    with pytest.raises(Unavailable):
        _run(_call(site, "hv-a.test", "put_log", VM_ID, 2, _stream(_log(source, 2, 1, LogKind.DELTA))))
    assert _run(_call(site, "hv-a.test", "set_state", VM_ID, 3)) == ReplicationState.REPLICATING
    assert _run(_call(site, "hv-a.test", "vm_running", VM_ID)) == (False, EnabledState.DISABLED)

    # Another host of the site, without an entry, may not touch it.
    for method, args in (("replica_status", (VM_ID,)), ("remove_replica", (VM_ID,)), ("ping", ())):
        with pytest.raises(AccessDenied):
            _run(_call(site, "hv-x.test", method, *args))
    _run(_call(site, "hv-a.test", "remove_replica", VM_ID))
    with pytest.raises(NotFound):
        _run(_call(site, "hv-a.test", "replica_status", VM_ID))


def test_a_route_the_peer_lacks_is_not_supported_and_a_missing_replica_not_found(site: Site) -> None:
    async def probe() -> None:
        async with site.client("hv-a.test") as client:
            with pytest.raises(NotSupported) as missing:  # what an older standby answers a newer route
                await client._json("POST", f"/replicas/{VM_ID}/no-such-route", json={})
            assert missing.value.message_id == "PeerRouteMissing"
            assert "no-such-route" in str(missing.value)
            with pytest.raises(NotFound):  # the route exists, the replica does not: its own message
                await client.heartbeat("0F0F0F0F-0000-4000-8000-000000000000", 1)

    _run(probe())


def test_an_idle_connection_outlives_the_usual_five_seconds(site: Site) -> None:
    # A VM cycling every 30 s reuses one mutual-TLS connection instead of a handshake per cycle.
    async def local_ports() -> list[int]:
        async with site.client("hv-a.test") as client:
            ports = []
            for pause in (0.0, 6.5):
                await asyncio.sleep(pause)
                answer = await client._send("GET", "/ping")
                ports.append(answer.extensions["network_stream"].get_extra_info("client_addr")[1])
            return ports

    first, second = _run(local_ports())
    assert first == second, "the idle connection was closed after a few seconds and a new one opened"


def test_other_ca_and_no_certificate_are_refused(site: Site) -> None:
    with pytest.raises(Unavailable):
        _run(_call(site, "foreign", "ping"))
    anonymous = client_ssl_context(site.tls["hv-a.test"].ca_file)  # verifies the server, presents nothing
    with pytest.raises(Unavailable):
        _run(_anonymous_ping(site, anonymous))


async def _anonymous_ping(site: Site, context: object) -> None:
    async with PeerClient(site.url, context, timeout=20) as client:  # type: ignore[arg-type]
        await client.ping()


def test_storage_location_escapes_are_refused(site: Site) -> None:
    escape_id = "7B2C3D4E-0000-4000-8000-0000000000E1"
    (site.location / f"link_{escape_id}").symlink_to(site.root / "outside")
    for name in ("../evil", "link", ".."):
        vm = VirtualMachine(escape_id, name, 256, 1, disks=(VmDisk("disk0", "", SIZE),))
        with pytest.raises(AccessDenied):
            _run(_call(site, "hv-e.test", "create_replica", vm, ReplicationSettings(), primary_host="x"))
    bad_disk = VirtualMachine(escape_id, "fine", 256, 1, disks=(VmDisk("../../etc", "", SIZE),))
    with pytest.raises(Exception, match="disk"):
        _run(_call(site, "hv-e.test", "create_replica", bad_disk, ReplicationSettings(), primary_host="x"))
    assert list((site.root / "outside").iterdir()) == []


def test_test_replication_connection_with_mutual_tls(site: Site) -> None:
    a = site.tls["hv-a.test"]
    target = ConnectionTarget("127.0.0.1", site.peer_port)
    result = _run(probe(target, timeout=20, context=client_ssl_context(a.ca_file, (a.cert_file, a.key_file))))
    assert result["RecoveryHostFQDN"] == "testhost.example"
    assert result["ServerCertificateThumbprint"] == pki.summarize(
        pki.load_certificates(site.replica_tls.cert_file)[0]).thumbprint
    x = site.tls["hv-x.test"]
    with pytest.raises(AccessDenied):
        _run(probe(target, timeout=20, context=client_ssl_context(x.ca_file, (x.cert_file, x.key_file))))
