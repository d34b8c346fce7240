"""The CIM-XML server on top of the REAL object manager (``cim.object_manager``) with an in-memory store.

Checks the Interop namespace (this module's ``cim/providers/interop.py`` + ``cim/mof/interop.mof``) the way
pywbem discovers a server, and a few reads and methods through pywbem over real HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import pywbem
from pywbem import CIMClassName, CIMInstanceName

from standby.cimxml import create_app
from standby.domain.entities import Host
from tests.unit.test_cim_support import make_world
from tests.unit.test_cimxml_support import serve_in_thread

VIRT = "root/virtualization/v2"


def _clock() -> datetime:
    return datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    world = make_world(host=Host(host_id="H1", name="hv1", fqdn="hv1.example"), world_clock=_clock)
    app = create_app(world.om, None, host_name="hv1.example")
    with serve_in_thread(app) as base:
        yield base
    world.services.close()


def _conn(url: str, namespace: str = VIRT) -> pywbem.WBEMConnection:
    return pywbem.WBEMConnection(url, default_namespace=namespace, timeout=30)


@pytest.mark.parametrize("interop", ["interop", "root/interop"])
def test_wbemserver_discovers_brand_version_and_namespaces(url: str, interop: str) -> None:
    server = pywbem.WBEMServer(_conn(url, interop))
    assert server.interop_ns == "interop"
    assert server.brand == "standby"
    assert server.version == "0.1.0"
    assert sorted(server.namespaces) == ["interop", "root/HyperVCluster/v2", "root/virtualization/v2"]
    assert server.profiles == []


def test_namespace_instances_carry_the_object_manager(url: str) -> None:
    names = _conn(url, "interop").EnumerateInstanceNames("CIM_Namespace")
    assert {n.keybindings["Name"] for n in names} == {"interop", "root/HyperVCluster/v2", VIRT}
    assert {n.keybindings["ObjectManagerName"] for n in names} == {"standby"}
    inst = _conn(url, "interop").GetInstance(names[0])
    assert inst["CreationClassName"] == "CIM_Namespace"


def test_object_manager_is_a_service_of_the_host(url: str) -> None:
    (om,) = _conn(url, "root/interop").EnumerateInstances("CIM_ObjectManager")
    assert om["SystemName"] == "hv1"
    assert om["Started"] is True
    assert om.path.host == "hv1.example" or om.path.host is None


def test_interop_classes_exist_only_in_interop(url: str) -> None:
    with pytest.raises(pywbem.CIMError) as info:
        _conn(url).EnumerateInstances("CIM_Namespace")
    assert info.value.status_code == pywbem.CIM_ERR_INVALID_CLASS


def test_host_replication_service_and_static_call(url: str) -> None:
    conn = _conn(url)
    (service,) = conn.EnumerateInstanceNames("Msvm_ReplicationService")
    assert conn.GetInstance(service)["Caption"] == "Hyper-V Replica Service"
    rv, out = conn.InvokeMethod("GetSystemCertificates", service)
    assert rv == 0
    assert list(out.get("EncodedCertificates") or []) == []
    rv, _ = conn.InvokeMethod(
        "RequestStateChange", CIMClassName("Msvm_ReplicationService"), RequestedState=pywbem.Uint16(2)
    )
    assert rv in (0, 1)


def test_failover_of_the_host_is_refused(url: str) -> None:
    conn = _conn(url)
    (service,) = conn.EnumerateInstanceNames("Msvm_ReplicationService")
    hosts = [p for p in conn.EnumerateInstanceNames("Msvm_ComputerSystem") if p.keybindings["Name"] == "hv1"]
    assert hosts, "the host itself is an Msvm_ComputerSystem"
    rv, out = conn.InvokeMethod(
        "InitiateFailover", service, ComputerSystem=hosts[0], SnapshotSettingData=None
    )
    assert rv == 32773
    assert out.get("Job") is None
    dangling = CIMInstanceName(
        "Msvm_ComputerSystem",
        {"CreationClassName": "Msvm_ComputerSystem", "Name": "NO-SUCH-VM"},
        namespace=VIRT,
    )
    rv, _ = conn.InvokeMethod("InitiateFailover", service, ComputerSystem=dangling)
    assert rv == 32773
