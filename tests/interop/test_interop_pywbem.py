"""pywbem (PyPI) against a real daemon: reads, every failover method with its job polled to completion and its
effect checked (states, the failover overlays on the real images), refusals, German text."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import pywbem
from pywbem import CIMClassName, CIMInstanceName, Uint16

from standby import i18n
from standby.daemon.testing import DaemonProcess
from tests.interop.conftest import (
    COLLECTION_ID,
    LOST_VM,
    PEER_VM,
    POINT_ID,
    PRIMARY_VM,
    REDUNDANCY_SET_ID,
    REPLICA_VM,
    SECOND_VM,
    Seeded,
)
from tests.interop.helpers import (
    CLUSTER,
    VIRT,
    backing_of,
    collection_state,
    completed,
    connect,
    failover_overlay,
    replication_state,
    same_content,
    service_path,
    vm_path,
    wait_for_job,
)


def test_enumerate_vms(url: str) -> None:
    systems = {str(i["Name"]): i for i in connect(url).EnumerateInstances("Msvm_ComputerSystem")}
    assert {PRIMARY_VM, REPLICA_VM} <= set(systems)
    assert systems[PRIMARY_VM]["ElementName"] == "web"
    assert systems[PRIMARY_VM]["ReplicationMode"] == 1
    assert systems[REPLICA_VM]["ReplicationMode"] == 2
    assert systems[REPLICA_VM]["ReplicationState"] == 3


def test_pull_operations_fall_back(url: str) -> None:
    names = [str(p["Name"]) for p in connect(url).IterEnumerateInstancePaths("Msvm_ComputerSystem")]
    assert REPLICA_VM in names


def test_wbemserver_discovery(url: str) -> None:
    server = pywbem.WBEMServer(connect(url, "interop"))
    assert server.brand == "standby"
    assert {VIRT, CLUSTER, "interop"} <= set(server.namespaces)


def test_initiate_failover_on_a_primary_is_an_invalid_state(url: str) -> None:
    conn = connect(url)
    rv, out = conn.InvokeMethod(
        "InitiateFailover",
        service_path(conn),
        ComputerSystem=vm_path(conn, PRIMARY_VM),
        SnapshotSettingData=None,
    )
    assert rv == 32775
    assert out.get("Job") is None


@pytest.mark.parametrize("form", ["INSTANCEPATH with HOST", "LOCALINSTANCEPATH", "INSTANCENAME"])
def test_every_ref_form_reaches_the_same_vm(url: str, form: str) -> None:
    conn = connect(url)
    path = vm_path(conn, PRIMARY_VM).copy()
    path.host = "testhost.example" if form.startswith("INSTANCEPATH") else None
    path.namespace = None if form == "INSTANCENAME" else VIRT
    rv, _ = conn.InvokeMethod("InitiateFailover", service_path(conn), ComputerSystem=path)
    assert rv == 32775


def _revert(conn: pywbem.WBEMConnection, vm_id: str) -> None:
    rv, out = conn.InvokeMethod("RevertFailover", service_path(conn), ComputerSystem=vm_path(conn, vm_id))
    job = completed(conn, int(rv), dict(out))
    assert job["JobType"] == 98
    assert replication_state(conn, vm_id) == 3


def test_initiate_failover_with_null_snapshot_and_revert(url: str, seeded: Seeded) -> None:
    conn = connect(url)
    rv, out = conn.InvokeMethod(
        "InitiateFailover",
        service_path(conn),
        ComputerSystem=vm_path(conn, REPLICA_VM),
        SnapshotSettingData=None,
    )
    job = completed(conn, int(rv), dict(out))
    assert job["JobType"] == 97
    assert replication_state(conn, REPLICA_VM) == 5
    # NULL is the latest point: the failover disk is an overlay on its image.
    overlay = failover_overlay(seeded, REPLICA_VM)
    assert backing_of(overlay) == seeded.images[REPLICA_VM][-1]
    _revert(conn, REPLICA_VM)
    assert not overlay.exists()


def test_initiate_failover_on_the_replica_with_a_real_recovery_point(url: str, seeded: Seeded) -> None:
    conn = connect(url)
    (point,) = [
        i.path
        for i in conn.EnumerateInstances("Msvm_VirtualSystemSettingData")
        if POINT_ID in str(i["InstanceID"])
    ]
    assert "Replica" in str(conn.GetInstance(point)["VirtualSystemType"])
    rv, out = conn.InvokeMethod(
        "InitiateFailover",
        service_path(conn),
        ComputerSystem=vm_path(conn, REPLICA_VM),
        SnapshotSettingData=point,
    )
    completed(conn, int(rv), dict(out))
    assert replication_state(conn, REPLICA_VM) == 5
    older, latest = seeded.images[REPLICA_VM]
    overlay = failover_overlay(seeded, REPLICA_VM)
    assert backing_of(overlay) == older
    assert same_content(overlay, older) and not same_content(overlay, latest)
    _revert(conn, REPLICA_VM)


def test_dangling_ref_is_an_invalid_parameter(url: str) -> None:
    conn = connect(url)
    dangling = CIMInstanceName(
        "Msvm_ComputerSystem",
        {"CreationClassName": "Msvm_ComputerSystem", "Name": "99999999-9999-4999-8999-999999999999"},
        namespace=VIRT,
    )
    rv, _ = conn.InvokeMethod("InitiateFailover", service_path(conn), ComputerSystem=dangling)
    assert rv == 32773


def test_ref_of_the_wrong_class_is_an_incorrect_data_type(url: str) -> None:
    conn = connect(url)
    job = _connection_test_job(conn)
    rv, _ = conn.InvokeMethod("InitiateFailover", service_path(conn), ComputerSystem=job)
    assert rv == 32776


def test_revert_failover_without_a_failover_is_an_invalid_state(url: str) -> None:
    conn = connect(url)
    rv, _ = conn.InvokeMethod("RevertFailover", service_path(conn), ComputerSystem=vm_path(conn, REPLICA_VM))
    assert rv == 32775


@pytest.mark.parametrize("point", ["NULL", "REF"])
def test_collection_initiate_failover_and_revert(url: str, seeded: Seeded, point: str) -> None:
    conn = connect(url, CLUSTER)
    (collection,) = [
        p
        for p in conn.EnumerateInstanceNames("Msvm_VirtualSystemCollection")
        if p.keybindings["CollectionID"] == COLLECTION_ID
    ]
    (cut,) = [
        p
        for p in conn.EnumerateInstanceNames("Msvm_CollectionRecoveryPoint")
        if p.keybindings["CollectionID"] == COLLECTION_ID
    ]
    assert list(conn.GetInstance(cut)["VirtualMachineIds"]) == [REPLICA_VM, SECOND_VM]
    service = service_path(conn, "Msvm_CollectionReplicationService")
    rv, out = conn.InvokeMethod(
        "InitiateFailover", service, Collection=collection,
        CollectionRecoveryPoint=cut if point == "REF" else None,
    )
    completed(conn, int(rv), dict(out))
    assert collection_state(conn) == 5
    for vm_id in (REPLICA_VM, SECOND_VM):
        assert replication_state(conn, vm_id) == 5
        assert backing_of(failover_overlay(seeded, vm_id)) == seeded.images[vm_id][-1]
    rv, out = conn.InvokeMethod("RevertFailover", service, Collection=collection)
    completed(conn, int(rv), dict(out))
    assert collection_state(conn) == 3
    assert replication_state(conn, REPLICA_VM) == 3 and replication_state(conn, SECOND_VM) == 3


def test_redundancy_set_failover_to_the_replica(url: str) -> None:
    conn = connect(url, CLUSTER)
    (rset,) = [
        p
        for p in conn.EnumerateInstanceNames("Msvm_RedundancySet")
        if p.keybindings["InstanceID"] == f"Microsoft:{REDUNDANCY_SET_ID}"
    ]
    members = {str(p["Name"]) for p in conn.Associators(rset, AssocClass="Msvm_MemberOfRedundancySet")}
    assert members == {REPLICA_VM, PEER_VM}
    # The primary host (hosta.invalid) cannot be reached: an unplanned failover to the latest point, code 0.
    rv, out = conn.InvokeMethod(
        "Failover", rset, FailoverFrom=cluster_vm(PEER_VM), FailoverTo=cluster_vm(REPLICA_VM)
    )
    assert rv == 0
    assert not out
    assert replication_state(conn, REPLICA_VM) == 5
    assert conn.GetInstance(rset)["RedundancyStatus"] == 4  # Redundancy Lost until reverted
    _revert(connect(url), REPLICA_VM)
    assert conn.GetInstance(rset)["RedundancyStatus"] == 2


def cluster_vm(name: str) -> CIMInstanceName:
    """An Msvm_ComputerSystem REF in the cluster namespace (peer VMs are named ``<GUID>@<host>``)."""
    return CIMInstanceName("Msvm_ComputerSystem", {"CreationClassName": "Msvm_ComputerSystem", "Name": name},
                           namespace=CLUSTER)


def test_failing_failover_job_in_german(url: str) -> None:
    english, german = connect(url), connect(url, language="de")
    rv, out = german.InvokeMethod(
        "InitiateFailover",
        service_path(german),
        ComputerSystem=vm_path(german, LOST_VM),
        SnapshotSettingData=None,
    )
    assert rv == 4096
    job = wait_for_job(german, out["Job"])
    assert (job["JobState"], job["ErrorCode"]) == (10, 32779)  # Exception, file not found
    assert job["ErrorDescription"].startswith("Das Datenträgerabbild ")
    assert job["ErrorDescription"].endswith(" ist nicht vorhanden.")
    summary = job["ErrorSummaryDescription"]
    assert summary == i18n.return_code_text(32779, "de") != i18n.return_code_text(32779, "en")
    assert job["JobStatus"] == i18n.job_state_text(10, "de")
    same = english.GetInstance(job.path)
    assert same["ErrorDescription"].endswith(f"{LOST_VM}/disks/d0/rp-0000000001.qcow2 does not exist")
    assert same["ErrorSummaryDescription"] == "Initiate Failover failed."
    assert replication_state(english, LOST_VM) == 3  # nothing stayed failed over


def test_completed_failover_job_in_german(url: str) -> None:
    conn = connect(url, language="de-DE")
    rv, out = conn.InvokeMethod(
        "InitiateFailover", service_path(conn), ComputerSystem=vm_path(conn, REPLICA_VM)
    )
    job = completed(conn, int(rv), dict(out))
    assert job["JobStatus"] == i18n.job_state_text(7, "de") != i18n.job_state_text(7, "en")
    _revert(conn, REPLICA_VM)


def test_system_certificates_static_and_on_the_instance(url: str) -> None:
    conn = connect(url)
    rv, out = conn.InvokeMethod("GetSystemCertificates", service_path(conn))
    assert rv == 0
    certificates = list(out["EncodedCertificates"])
    assert len(certificates) == 1 and len(certificates[0]) > 100
    rv, out = conn.InvokeMethod("GetSystemCertificates", CIMClassName("Msvm_ReplicationService"))
    assert rv == 0
    assert list(out["EncodedCertificates"]) == certificates


def test_request_replication_state_change(url: str) -> None:
    conn = connect(url)
    for requested in (7, 3):  # suspend the primary's replication, then resume it (the seeded state again)
        rv, out = conn.InvokeMethod(
            "RequestReplicationStateChange", vm_path(conn, PRIMARY_VM), RequestedState=Uint16(requested)
        )
        completed(conn, int(rv), dict(out))
        assert replication_state(conn, PRIMARY_VM) == requested
    rv, _ = conn.InvokeMethod(
        "RequestReplicationStateChange", vm_path(conn, PRIMARY_VM), RequestedState=Uint16(12345)
    )
    assert rv == 32773


def _connection_test_job(conn: pywbem.WBEMConnection) -> CIMInstanceName:
    rv, out = conn.InvokeMethod(
        "TestReplicationConnection",
        service_path(conn),
        RecoveryConnectionPoint="127.0.0.1",
        RecoveryServerPortNumber=Uint16(1),
        AuthenticationType=Uint16(2),
        CertificateThumbPrint="",
        BypassProxyServer=False,
    )
    assert rv == 4096
    return out["Job"]


def test_job_read_to_completion_english_and_german(url: str) -> None:
    conn = connect(url)
    job = wait_for_job(conn, _connection_test_job(conn))
    assert (job["JobState"], job["ErrorCode"]) == (10, 32777)
    assert "refused" in job["ErrorDescription"]
    german = connect(url, language="de").GetInstance(job.path)
    assert "abgelehnt" in german["ErrorDescription"]
    assert german["ErrorDescription"] != job["ErrorDescription"]
    assert german["JobStatus"] != job["JobStatus"]


def test_get_error_in_german(url: str) -> None:
    conn = connect(url, language="de-DE")
    job = wait_for_job(conn, _connection_test_job(conn))
    rv, out = conn.InvokeMethod("GetError", job.path)
    assert rv == 0
    error = out["Error"]
    assert error.classname == "Msvm_Error"
    assert "abgelehnt" in error["Message"]


def test_associators_and_query(url: str) -> None:
    conn = connect(url)
    related = conn.AssociatorNames(vm_path(conn, REPLICA_VM))
    assert related, "the replica VM has related objects (relationship, settings, points)"
    rows = conn.ExecQuery(
        "WQL", f"SELECT Name, ReplicationMode FROM Msvm_ComputerSystem WHERE Name = '{REPLICA_VM}'"
    )
    assert [(str(r["Name"]), int(r["ReplicationMode"])) for r in rows] == [(REPLICA_VM, 2)]
    assert set(rows[0].properties) == {"Name", "ReplicationMode"}


def test_unknown_namespace_class_and_method(url: str) -> None:
    conn = connect(url)
    calls: list[tuple[Callable[[], object], int]] = [
        (lambda: conn.EnumerateInstances("Msvm_ComputerSystem", namespace="root/nope"), 3),
        (lambda: conn.EnumerateInstances("Msvm_Nope"), 5),
        (lambda: conn.InvokeMethod("Frobnicate", service_path(conn)), 17),
    ]
    for call, code in calls:
        with pytest.raises(pywbem.CIMError) as info:
            call()
        assert info.value.status_code == code


def test_pywbem_over_https(daemon: DaemonProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    conn = pywbem.WBEMConnection(
        f"https://localhost:{daemon.https_port}",
        ("admin", "s3cret-pw"),
        default_namespace=VIRT,
        ca_certs=str(daemon.cert_file),
        timeout=60,
    )
    rv, _ = conn.InvokeMethod(
        "InitiateFailover", service_path(conn), ComputerSystem=vm_path(conn, PRIMARY_VM)
    )
    assert rv == 32775


def test_summary_description_and_content_language(daemon: DaemonProcess, url: str) -> None:
    english = wait_for_job(connect(url), _connection_test_job(connect(url)))
    german = connect(url, language="de").GetInstance(english.path)
    assert (
        german["ErrorSummaryDescription"]
        and german["ErrorSummaryDescription"] != english["ErrorSummaryDescription"]
    )
    body = (
        '<?xml version="1.0" encoding="utf-8" ?><CIM CIMVERSION="2.0" DTDVERSION="2.0">'
        '<MESSAGE ID="7" PROTOCOLVERSION="1.0"><SIMPLEREQ><IMETHODCALL NAME="GetInstance">'
        '<LOCALNAMESPACEPATH><NAMESPACE NAME="root"/><NAMESPACE NAME="virtualization"/><NAMESPACE NAME="v2"/>'
        '</LOCALNAMESPACEPATH><IPARAMVALUE NAME="InstanceName"><INSTANCENAME CLASSNAME="Msvm_ConcreteJob">'
        '<KEYBINDING NAME="InstanceID">'
        f"<KEYVALUE>{english['InstanceID']}</KEYVALUE></KEYBINDING></INSTANCENAME></IPARAMVALUE>"
        "</IMETHODCALL></SIMPLEREQ></MESSAGE></CIM>"
    ).encode()
    headers = {
        "Content-Type": "application/xml",
        "CIMOperation": "MethodCall",
        "CIMMethod": "GetInstance",
        "CIMObject": "root/virtualization/v2",
        "Accept-Language": "de-DE, en;q=0.5",
    }
    with daemon.http(user="admin", password="s3cret-pw") as client:
        response = client.post("/cimom", content=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-language"] == "de"
    assert "abgelehnt" in response.text
