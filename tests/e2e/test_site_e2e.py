"""The two-host site itself: both daemons up on their own addresses, each admitting the other, the hosts
reach each other over mutual TLS (TestReplicationConnection), and teardown leaves nothing behind."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import pywbem

from standby.guest.build import GuestImage
from standby.testing import cim, guestvm
from standby.testing.cluster import TwoHosts, processes_using
from standby.testing.scenario import connection_point


def entries(conn: Any) -> dict[str, str]:
    return {str(e["AllowedPrimaryHostSystem"]): str(e["ReplicaStorageLocation"])
            for e in conn.EnumerateInstances("Msvm_ReplicationAuthorizationSettingData")}


def netns_names() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout


@pytest.mark.parametrize("mode", ["netns", "loopback"])
def test_two_hosts_admit_each_other_and_leave_nothing_behind(mode: str, guest: GuestImage) -> None:
    try:
        site = TwoHosts.start(network_mode=mode)
    except RuntimeError as exc:  # NetworkUnavailable: not root, no iproute2
        if mode == "netns":
            pytest.skip(f"network namespaces not available here: {exc}")
        raise
    with site:
        assert site.a.address != site.b.address
        for host in site.hosts:
            other = site.other(host)
            conn = host.cim()
            assert entries(conn) == {other.name: str(host.replica_location)}
            settings = conn.EnumerateInstances("Msvm_ReplicationServiceSettingData")[0]
            assert settings["RecoveryServerEnabled"] is True
        # A VM left running is stopped by the teardown, not left behind.
        vm = guestvm.define_guest_vm(site.a, guest, "left-running")
        guestvm.power(site.a, vm.vm_id, "start")
        assert [cmd for _, cmd in processes_using(site.a.run_dir(vm.vm_id)) if "qemu-system" in cmd]
        namespaces = [h.namespace for h in site.network.hosts if h.namespace]
        root = site.root
    assert site.leftovers == []
    assert not root.exists()
    assert not processes_using(root)
    assert not [ns for ns in namespaces if ns in netns_names()]


def test_hosts_reach_each_other_over_mutual_tls(site: TwoHosts) -> None:
    for host in site.hosts:
        other = site.other(host)
        conn = host.cim()
        out = cim.call(conn, cim.service(conn), "TestReplicationConnection",
                       RecoveryConnectionPoint=connection_point(site, other),
                       RecoveryServerPortNumber=pywbem.Uint16(other.peer_port),
                       AuthenticationType=pywbem.Uint16(2), CertificateThumbPrint=host.cert.thumbprint,
                       BypassProxyServer=False)
        assert out.get("Job") is not None or out == {}
