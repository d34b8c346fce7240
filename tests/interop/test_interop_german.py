"""CIM errors in German from a real daemon: pywbem with ``Accept-Language: de`` on its session, and a raw
CIM-XML request posted with httpx as any other client would send it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import pywbem
from pywbem import CIMInstanceName

from standby.daemon.testing import DaemonProcess
from tests.interop.conftest import PASSWORD, USER
from tests.interop.helpers import VIRT, connect, service_path

MISSING = "99999999-9999-4999-8999-999999999999"


def _missing_vm() -> CIMInstanceName:
    keys = {"CreationClassName": "Msvm_ComputerSystem", "Name": MISSING}
    return CIMInstanceName("Msvm_ComputerSystem", keys, namespace=VIRT)


def test_get_instance_of_a_missing_vm_answers_in_german(url: str) -> None:
    with pytest.raises(pywbem.CIMError) as german:
        connect(url, language="de").GetInstance(_missing_vm())
    with pytest.raises(pywbem.CIMError) as english:
        connect(url).GetInstance(_missing_vm())
    assert german.value.status_code == english.value.status_code == pywbem.CIM_ERR_NOT_FOUND
    assert german.value.status_description.startswith("Die Instanz ")
    assert german.value.status_description.endswith(" ist nicht vorhanden.")
    assert MISSING in german.value.status_description
    assert english.value.status_description.startswith("No instance ")


def test_a_method_the_server_refuses_answers_in_german(url: str) -> None:
    conn = connect(url, language="de")
    with pytest.raises(pywbem.CIMError) as info:
        conn.InvokeMethod("InitiateFailover", service_path(conn), Bogus=pywbem.Uint16(1))
    assert info.value.status_code == pywbem.CIM_ERR_INVALID_PARAMETER
    assert info.value.status_description == "InitiateFailover hat keinen Parameter Bogus."


def test_a_raw_request_gets_a_german_error_element(daemon: DaemonProcess) -> None:
    body = (
        b'<?xml version="1.0" encoding="utf-8" ?><CIM CIMVERSION="2.0" DTDVERSION="2.0">'
        b'<MESSAGE ID="8" PROTOCOLVERSION="1.0"><SIMPLEREQ><IMETHODCALL NAME="EnumerateInstanceNames">'
        b'<LOCALNAMESPACEPATH><NAMESPACE NAME="root"/><NAMESPACE NAME="nowhere"/></LOCALNAMESPACEPATH>'
        b'<IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="Msvm_ComputerSystem"/></IPARAMVALUE>'
        b"</IMETHODCALL></SIMPLEREQ></MESSAGE></CIM>"
    )
    headers = {
        "Content-Type": "application/xml",
        "CIMOperation": "MethodCall",
        "CIMMethod": "EnumerateInstanceNames",
        "CIMObject": "root/nowhere",
        "Accept-Language": "de-DE, en;q=0.5",
    }
    with daemon.http(user=USER, password=PASSWORD) as client:
        response = client.post("/cimom", content=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-language"] == "de"
    error = ET.fromstring(response.content).find(".//ERROR")
    assert error is not None, response.text
    assert int(error.attrib["CODE"]) == pywbem.CIM_ERR_INVALID_NAMESPACE
    assert error.attrib["DESCRIPTION"] == "Der Namespace root/nowhere ist nicht vorhanden."
