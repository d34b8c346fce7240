"""CIM-XML as mounted by the daemon: pywbem over loopback HTTP and HTTPS, the control socket without auth."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pywbem = pytest.importorskip("pywbem")

from standby.daemon.testing import DaemonProcess  # noqa: E402

VIRT = "root/virtualization/v2"

ENUMERATE_NAMES = """<?xml version="1.0" encoding="utf-8" ?>
<CIM CIMVERSION="2.0" DTDVERSION="2.0"><MESSAGE ID="1001" PROTOCOLVERSION="1.0"><SIMPLEREQ>
<IMETHODCALL NAME="EnumerateInstanceNames"><LOCALNAMESPACEPATH><NAMESPACE NAME="root"/>
<NAMESPACE NAME="virtualization"/><NAMESPACE NAME="v2"/></LOCALNAMESPACEPATH>
<IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="Msvm_ComputerSystem"/></IPARAMVALUE>
</IMETHODCALL></SIMPLEREQ></MESSAGE></CIM>"""


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    folder = Path(tempfile.mkdtemp(prefix="sbcim-", dir="/tmp"))
    process = DaemonProcess.start(folder / "data", users={"admin": "pw"})
    try:
        if "CIM-XML mounted" not in process.log():
            pytest.skip("the CIM object model is not available in this checkout")
        yield process
    finally:
        process.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_pywbem_over_loopback_http(daemon: DaemonProcess) -> None:
    conn = pywbem.WBEMConnection(f"http://127.0.0.1:{daemon.http_port}", ("admin", "pw"),
                                 default_namespace=VIRT, timeout=30)
    hosts = conn.EnumerateInstances("Msvm_ComputerSystem")
    assert [str(i["Name"]) for i in hosts] == ["testhost"]


def test_pywbem_over_https(daemon: DaemonProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override pywbem's ca_certs; drop them here.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    conn = pywbem.WBEMConnection(f"https://localhost:{daemon.https_port}", ("admin", "pw"),
                                 default_namespace=VIRT, ca_certs=str(daemon.cert_file), timeout=30)
    names = conn.EnumerateInstanceNames("Msvm_ComputerSystem")
    assert [str(n["Name"]) for n in names] == ["testhost"]


def test_wrong_password_is_refused(daemon: DaemonProcess) -> None:
    conn = pywbem.WBEMConnection(f"http://127.0.0.1:{daemon.http_port}", ("admin", "wrong"),
                                 default_namespace=VIRT, timeout=30)
    with pytest.raises(pywbem.AuthError):
        conn.EnumerateInstanceNames("Msvm_ComputerSystem")


def test_control_socket_needs_no_credentials(daemon: DaemonProcess) -> None:
    headers = {"content-type": 'application/xml; charset="utf-8"', "cimoperation": "MethodCall",
               "cimmethod": "EnumerateInstanceNames", "cimobject": "root/virtualization/v2"}
    with daemon.control() as client:
        response = client.post("/cimom", content=ENUMERATE_NAMES.encode(), headers=headers)
    assert response.status_code == 200
    assert response.headers["cimoperation"] == "MethodResponse"
    assert '<KEYBINDING NAME="Name"><KEYVALUE VALUETYPE="string" TYPE="string">testhost</KEYVALUE>' \
        in response.text
