"""The ``/cimom`` endpoint over HTTP: every HTTP-level answer and every CIM status code the server returns.

Requests are hand-written CIM-XML (what a client would put on the wire) sent with httpx to the real ASGI app
under a real uvicorn on loopback, on top of the compiled-MOF object manager of ``test_cimxml_support``.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import httpx
import pytest
from pywbem import CIM_ERR_ACCESS_DENIED, CIMError

from standby.cimxml import create_app
from standby.domain import errors
from tests.unit.test_cimxml_support import HOST, MockObjectManager, build_object_manager, serve_in_thread

VIRT_NS = '<NAMESPACE NAME="root"/><NAMESPACE NAME="virtualization"/><NAMESPACE NAME="v2"/>'
VM = (
    '<INSTANCENAME CLASSNAME="Msvm_ComputerSystem">'
    '<KEYBINDING NAME="CreationClassName"><KEYVALUE VALUETYPE="string">Msvm_ComputerSystem</KEYVALUE>'
    "</KEYBINDING>"
    '<KEYBINDING NAME="Name"><KEYVALUE VALUETYPE="string">{name}</KEYVALUE></KEYBINDING></INSTANCENAME>'
)
SERVICE = (
    '<INSTANCENAME CLASSNAME="Msvm_ReplicationService">'
    '<KEYBINDING NAME="CreationClassName"><KEYVALUE>Msvm_ReplicationService</KEYVALUE></KEYBINDING>'
    '<KEYBINDING NAME="Name"><KEYVALUE>replicasvc</KEYVALUE></KEYBINDING>'
    '<KEYBINDING NAME="SystemCreationClassName"><KEYVALUE>Msvm_ComputerSystem</KEYVALUE></KEYBINDING>'
    f'<KEYBINDING NAME="SystemName"><KEYVALUE>{HOST}</KEYVALUE></KEYBINDING></INSTANCENAME>'
)
USERS = {"admin": "s3cret"}


def ns_xml(namespace: str) -> str:
    return "".join(f'<NAMESPACE NAME="{part}"/>' for part in namespace.split("/"))


def imethod(name: str, params: str = "", namespace: str = "root/virtualization/v2") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8" ?><CIM CIMVERSION="2.0" DTDVERSION="2.0">'
        f'<MESSAGE ID="1001" PROTOCOLVERSION="1.0"><SIMPLEREQ><IMETHODCALL NAME="{name}">'
        f"<LOCALNAMESPACEPATH>{ns_xml(namespace)}</LOCALNAMESPACEPATH>{params}"
        "</IMETHODCALL></SIMPLEREQ></MESSAGE></CIM>"
    ).encode()


def methodcall(name: str, params: str = "", target: str = SERVICE) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8" ?><CIM CIMVERSION="2.0" DTDVERSION="2.0">'
        f'<MESSAGE ID="1002" PROTOCOLVERSION="1.0"><SIMPLEREQ><METHODCALL NAME="{name}">'
        f"<LOCALINSTANCEPATH><LOCALNAMESPACEPATH>{VIRT_NS}</LOCALNAMESPACEPATH>{target}</LOCALINSTANCEPATH>"
        f"{params}</METHODCALL></SIMPLEREQ></MESSAGE></CIM>"
    ).encode()


def cim_headers(method: str, obj: str = "root/virtualization/v2", **extra: str) -> dict[str, str]:
    auth = base64.b64encode(b"admin:s3cret").decode()
    return {
        "Content-Type": 'application/xml; charset="utf-8"',
        "CIMOperation": "MethodCall",
        "CIMMethod": method,
        "CIMObject": obj,
        "Authorization": f"Basic {auth}",
        **extra,
    }


def _verify(user: str, password: str) -> bool:
    return USERS.get(user) == password


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[MockObjectManager, str]]:
    om = build_object_manager()
    with serve_in_thread(create_app(om, _verify, host_name=HOST, max_body=64 * 1024)) as url:
        yield om, url


@pytest.fixture
def om(served: tuple[MockObjectManager, str]) -> MockObjectManager:
    om = served[0]
    om.fail_with = None
    om.calls.clear()
    return om


@pytest.fixture
def client(served: tuple[MockObjectManager, str], om: MockObjectManager) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[1], timeout=30) as test_client:
        yield test_client


def post(client: httpx.Client, body: bytes, method: str, obj: str = "root/virtualization/v2", **extra: str):  # type: ignore[no-untyped-def]
    return client.post("/cimom", content=body, headers=cim_headers(method, obj, **extra))


def error_code(response) -> int | None:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    assert response.headers["cimoperation"] == "MethodResponse"
    error = ET.fromstring(response.content).find(".//ERROR")
    return None if error is None else int(error.attrib["CODE"])


def cim_error(
    client: httpx.Client, body: bytes, method: str, obj: str = "root/virtualization/v2"
) -> tuple[int, str]:
    response = post(client, body, method, obj)
    error = ET.fromstring(response.content).find(".//ERROR")
    assert error is not None, response.text
    return int(error.attrib["CODE"]), error.attrib.get("DESCRIPTION", "")


# ------------------------------------------------------------------------------------------- HTTP level


def test_success_has_dsp0200_headers(client: httpx.Client) -> None:
    response = post(
        client,
        imethod(
            "EnumerateInstanceNames",
            '<IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="Msvm_ComputerSystem"/></IPARAMVALUE>',
        ),
        "EnumerateInstanceNames",
    )
    assert error_code(response) is None
    assert response.headers["content-type"].startswith("application/xml")
    assert response.headers["content-language"] == "en"
    assert ET.fromstring(response.content).find("MESSAGE").attrib["ID"] == "1001"  # type: ignore[union-attr]
    names = ET.fromstring(response.content).findall(".//IRETURNVALUE/INSTANCENAME")
    assert len(names) == 2


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic " + base64.b64encode(b"admin:wrong").decode(),
        "Basic !!!",
        "Bearer abc",
        "Basic " + base64.b64encode(b"nocolon").decode(),
    ],
)
def test_401_without_valid_credentials(client: httpx.Client, authorization: str | None) -> None:
    headers = cim_headers("GetClass")
    del headers["Authorization"]
    if authorization:
        headers["Authorization"] = authorization
    response = client.post("/cimom", content=imethod("GetClass"), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="standby"'


def test_verifier_that_raises_reads_as_not_authenticated(om: MockObjectManager) -> None:
    def broken(user: str, password: str) -> bool:
        raise OSError("user store unreadable")

    with (
        serve_in_thread(create_app(om, broken, host_name=HOST)) as url,
        httpx.Client(base_url=url) as test_client,
    ):
        response = post(test_client, imethod("GetClass"), "GetClass")
    assert response.status_code == 401


def test_405_for_get(client: httpx.Client) -> None:
    response = client.get("/cimom")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_501_for_m_post(client: httpx.Client) -> None:
    response = client.request(
        "M-POST", "/cimom", content=imethod("GetClass"), headers=cim_headers("GetClass")
    )
    assert response.status_code == 501
    assert "POST" in response.text


@pytest.mark.parametrize("value", [None, "MethodResponse", "ExportMethodCall"])
def test_unsupported_operation_header(client: httpx.Client, value: str | None) -> None:
    headers = cim_headers("GetClass")
    del headers["CIMOperation"]
    if value:
        headers["CIMOperation"] = value
    response = client.post("/cimom", content=imethod("GetClass"), headers=headers)
    assert (response.status_code, response.headers["cimerror"]) == (400, "unsupported-operation")


def test_request_not_well_formed(client: httpx.Client) -> None:
    response = post(client, b"<CIM><oops", "GetClass")
    assert (response.status_code, response.headers["cimerror"]) == (400, "request-not-well-formed")
    assert "XML" in response.text


def test_request_not_valid(client: httpx.Client) -> None:
    response = post(client, b"<NOTCIM/>", "GetClass")
    assert (response.status_code, response.headers["cimerror"]) == (400, "request-not-valid")


def test_unsupported_cim_version(client: httpx.Client) -> None:
    response = post(client, imethod("GetClass").replace(b'CIMVERSION="2.0"', b'CIMVERSION="3.0"'), "GetClass")
    assert (response.status_code, response.headers["cimerror"]) == (501, "unsupported-cim-version")


def test_unsupported_dtd_version(client: httpx.Client) -> None:
    response = post(client, imethod("GetClass").replace(b'DTDVERSION="2.0"', b'DTDVERSION="9.0"'), "GetClass")
    assert (response.status_code, response.headers["cimerror"]) == (501, "unsupported-dtd-version")


def test_unsupported_protocol_version(client: httpx.Client) -> None:
    response = post(client, imethod("GetClass"), "GetClass", CIMProtocolVersion="2.0")
    assert (response.status_code, response.headers["cimerror"]) == (501, "unsupported-protocol-version")


def test_multiple_requests_unsupported_multireq(client: httpx.Client) -> None:
    single = imethod("GetClass").split(b"<SIMPLEREQ>")[1].split(b"</SIMPLEREQ>")[0]
    body = imethod("GetClass").replace(
        b"<SIMPLEREQ>" + single + b"</SIMPLEREQ>",
        b"<MULTIREQ><SIMPLEREQ>" + single + b"</SIMPLEREQ><SIMPLEREQ>" + single + b"</SIMPLEREQ></MULTIREQ>",
    )
    response = post(client, body, "GetClass")
    assert (response.status_code, response.headers["cimerror"]) == (501, "multiple-requests-unsupported")


def test_multiple_requests_unsupported_batch_header(client: httpx.Client) -> None:
    response = post(client, imethod("GetClass"), "GetClass", CIMBatch="")
    assert (response.status_code, response.headers["cimerror"]) == (501, "multiple-requests-unsupported")


@pytest.mark.parametrize(
    ("method", "obj"),
    [("EnumerateClasses", "root/virtualization/v2"), ("GetClass", "root/HyperVCluster/v2")],
)
def test_header_mismatch(client: httpx.Client, method: str, obj: str) -> None:
    response = client.post("/cimom", content=imethod("GetClass"), headers=cim_headers(method, obj))
    assert (response.status_code, response.headers["cimerror"]) == (400, "header-mismatch")


def test_cimobject_header_may_be_url_encoded(client: httpx.Client) -> None:
    response = post(
        client, imethod("EnumerateClassNames"), "EnumerateClassNames", "root%2Fvirtualization%2Fv2"
    )
    assert error_code(response) is None


def test_413_for_oversize_body(client: httpx.Client) -> None:
    big = imethod("GetClass", "<!--" + "x" * 70_000 + "-->")
    response = post(client, big, "GetClass")
    assert response.status_code == 413


def test_415_for_json(client: httpx.Client) -> None:
    response = post(client, b"{}", "GetClass", **{"Content-Type": "application/json"})
    assert response.status_code == 415


def test_no_auth_when_no_verifier(om: MockObjectManager) -> None:
    with (
        serve_in_thread(create_app(om, None, host_name=HOST)) as url,
        httpx.Client(base_url=url) as test_client,
    ):
        headers = cim_headers("EnumerateClassNames")
        del headers["Authorization"]
        response = test_client.post("/cimom", content=imethod("EnumerateClassNames"), headers=headers)
    assert error_code(response) is None


# -------------------------------------------------------------------------------------------- languages


@pytest.mark.parametrize(
    ("accept", "language"),
    [
        ("de", "de"),
        ("de-DE", "de"),
        ("de-DE,de;q=0.9,en;q=0.8", "de"),
        ("en-US", "en"),
        ("fr", "en"),
        (None, "en"),
    ],
)
def test_accept_language_reaches_the_object_manager(
    client: httpx.Client, om: MockObjectManager, accept: str | None, language: str
) -> None:
    extra = {"Accept-Language": accept} if accept else {}
    response = post(
        client,
        methodcall(
            "GetReplicationStatistics",
            '<PARAMVALUE NAME="ComputerSystem">' + VM.format(name="PRIMARY-1") + "</PARAMVALUE>",
        ),
        "GetReplicationStatistics",
        "root/virtualization/v2:Msvm_ReplicationService",
        **extra,
    )
    assert error_code(response) is None
    assert response.headers["content-language"] == language
    assert om.calls[-1].ctx.language == language
    assert om.calls[-1].ctx.user == "admin"
    expected = "Statistik" if language == "de" else "statistics"
    assert expected in response.text


# ------------------------------------------------------------------------------------ CIM status codes


def test_cim_err_failed_for_unexpected_exception(client: httpx.Client, om: MockObjectManager) -> None:
    om.fail_with = RuntimeError("database exploded")
    code, text = cim_error(
        client,
        imethod(
            "GetInstance",
            '<IPARAMVALUE NAME="InstanceName">' + VM.format(name="PRIMARY-1") + "</IPARAMVALUE>",
        ),
        "GetInstance",
    )
    assert code == 1
    assert "exploded" not in text  # no internals leak to the client
    assert "GetInstance" in text


def test_cim_err_failed_for_unexpected_exception_in_a_method(
    client: httpx.Client, om: MockObjectManager
) -> None:
    om.fail_with = KeyError("boom")
    code, _ = cim_error(
        client,
        methodcall("GetSystemCertificates"),
        "GetSystemCertificates",
        "root/virtualization/v2:Msvm_ReplicationService",
    )
    assert code == 1


def test_cim_err_access_denied(client: httpx.Client, om: MockObjectManager) -> None:
    om.fail_with = CIMError(CIM_ERR_ACCESS_DENIED, "not for you")
    assert cim_error(
        client,
        imethod(
            "EnumerateInstances",
            '<IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="Msvm_ComputerSystem"/></IPARAMVALUE>',
        ),
        "EnumerateInstances",
    ) == (2, "not for you")


def test_engine_errors_map_to_cim_status(client: httpx.Client, om: MockObjectManager) -> None:
    body = imethod(
        "GetInstance", '<IPARAMVALUE NAME="InstanceName">' + VM.format(name="A") + "</IPARAMVALUE>"
    )
    expected = [
        (errors.AccessDenied("no"), 2),
        (errors.NotFound("gone"), 6),
        (errors.InvalidParameter("bad"), 4),
        (errors.NotSupported("later"), 7),
        (errors.InvalidState("state"), 1),
    ]
    for exc, code in expected:
        om.fail_with = exc
        assert cim_error(client, body, "GetInstance")[0] == code


@pytest.mark.parametrize("namespace", ["root/nope", "root/cimv2", "interop/extra"])
def test_cim_err_invalid_namespace(client: httpx.Client, namespace: str) -> None:
    code, text = cim_error(
        client, imethod("EnumerateClassNames", namespace=namespace), "EnumerateClassNames", namespace
    )
    assert code == 3
    assert namespace in text


def test_cim_err_invalid_namespace_for_a_method(client: httpx.Client) -> None:
    body = methodcall("GetSystemCertificates").replace(b'<NAMESPACE NAME="virtualization"/>', b"")
    assert cim_error(client, body, "GetSystemCertificates", "root/v2:Msvm_ReplicationService")[0] == 3


@pytest.mark.parametrize(
    "params",
    [
        '<IPARAMVALUE NAME="Bogus"><VALUE>1</VALUE></IPARAMVALUE>',
        '<IPARAMVALUE NAME="ClassName"><VALUE>Msvm_ComputerSystem</VALUE></IPARAMVALUE>'
        '<IPARAMVALUE NAME="DeepInheritance"><VALUE>maybe</VALUE></IPARAMVALUE>',
        '<IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="Msvm_ComputerSystem"/></IPARAMVALUE>'
        '<IPARAMVALUE NAME="PropertyList"><CLASSNAME NAME="X"/></IPARAMVALUE>',
        "",
    ],
    ids=["unknown-parameter", "bad-boolean", "bad-property-list", "missing-class-name"],
)
def test_cim_err_invalid_parameter(client: httpx.Client, params: str) -> None:
    code, text = cim_error(client, imethod("EnumerateInstances", params), "EnumerateInstances")
    assert code == 4
    assert text


def test_cim_err_invalid_parameter_wrong_kind_of_name(client: httpx.Client) -> None:
    body = imethod("GetInstance", '<IPARAMVALUE NAME="InstanceName"><CLASSNAME NAME="X"/></IPARAMVALUE>')
    assert cim_error(client, body, "GetInstance")[0] == 4


@pytest.mark.parametrize("operation", ["EnumerateInstances", "EnumerateInstanceNames", "EnumerateClasses"])
def test_cim_err_invalid_class(client: httpx.Client, operation: str) -> None:
    body = imethod(operation, '<IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="Msvm_Nope"/></IPARAMVALUE>')
    assert cim_error(client, body, operation)[0] == 5


def test_cim_err_not_found(client: httpx.Client) -> None:
    body = imethod(
        "GetInstance", '<IPARAMVALUE NAME="InstanceName">' + VM.format(name="NOPE") + "</IPARAMVALUE>"
    )
    assert cim_error(client, body, "GetInstance")[0] == 6
    body = imethod("GetClass", '<IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="Msvm_Nope"/></IPARAMVALUE>')
    assert cim_error(client, body, "GetClass")[0] == 6


@pytest.mark.parametrize(
    "operation",
    [
        "OpenEnumerateInstances",
        "OpenEnumerateInstancePaths",
        "OpenAssociatorInstances",
        "OpenReferenceInstances",
        "OpenQueryInstances",
        "PullInstancesWithPath",
        "PullInstancePaths",
        "CloseEnumeration",
        "EnumerationCount",
        "CreateInstance",
        "ModifyInstance",
        "DeleteInstance",
        "CreateClass",
        "ModifyClass",
        "DeleteClass",
        "SetProperty",
        "GetQualifier",
        "SetQualifier",
        "DeleteQualifier",
        "EnumerateQualifiers",
        "FrobnicateAll",
    ],
)
def test_cim_err_not_supported(client: httpx.Client, operation: str) -> None:
    code, text = cim_error(client, imethod(operation), operation)
    assert code == 7
    assert operation in text


def test_cim_err_not_supported_for_class_level_associators(client: httpx.Client) -> None:
    body = imethod(
        "Associators", '<IPARAMVALUE NAME="ObjectName"><CLASSNAME NAME="Msvm_ComputerSystem"/></IPARAMVALUE>'
    )
    assert cim_error(client, body, "Associators")[0] == 7


def test_cim_err_no_such_property(client: httpx.Client) -> None:
    body = imethod(
        "GetProperty",
        '<IPARAMVALUE NAME="InstanceName">'
        + VM.format(name="PRIMARY-1")
        + '</IPARAMVALUE><IPARAMVALUE NAME="PropertyName"><VALUE>Bogus</VALUE></IPARAMVALUE>',
    )
    assert cim_error(client, body, "GetProperty")[0] == 12


def test_get_property_returns_the_value(client: httpx.Client) -> None:
    body = imethod(
        "GetProperty",
        '<IPARAMVALUE NAME="InstanceName">'
        + VM.format(name="PRIMARY-1")
        + '</IPARAMVALUE><IPARAMVALUE NAME="PropertyName"><VALUE>ElementName</VALUE></IPARAMVALUE>',
    )
    response = post(client, body, "GetProperty")
    assert error_code(response) is None
    assert ET.fromstring(response.content).findtext(".//IRETURNVALUE/VALUE") == "web"


def _query(language: str, query: str) -> bytes:
    return imethod(
        "ExecQuery",
        f'<IPARAMVALUE NAME="QueryLanguage"><VALUE>{language}</VALUE></IPARAMVALUE>'
        f'<IPARAMVALUE NAME="Query"><VALUE>{query}</VALUE></IPARAMVALUE>',
    )


def test_cim_err_query_language_not_supported(client: httpx.Client) -> None:
    assert cim_error(client, _query("DMTF:CQL", "SELECT * FROM Msvm_ComputerSystem"), "ExecQuery")[0] == 14


@pytest.mark.parametrize(
    "query",
    [
        "SELECT FROM",
        "SELECT * FROM Msvm_Nope",
        "SELECT Bogus FROM Msvm_ComputerSystem",
        "SELECT * FROM Msvm_ComputerSystem WHERE Bogus = 1",
    ],
)
def test_cim_err_invalid_query(client: httpx.Client, query: str) -> None:
    code, text = cim_error(client, _query("WQL", query), "ExecQuery")
    assert code == 15
    assert "WQL" in text


def test_exec_query_filters_and_projects(client: httpx.Client) -> None:
    response = post(
        client,
        _query("wql", "SELECT ElementName FROM CIM_ComputerSystem WHERE EnabledState = 3"),
        "ExecQuery",
    )
    assert error_code(response) is None
    objects = ET.fromstring(response.content).findall(".//IRETURNVALUE/VALUE.OBJECTWITHPATH")
    assert len(objects) == 1
    assert objects[0].findtext("INSTANCEPATH/NAMESPACEPATH/HOST") == HOST
    props = {p.attrib["NAME"]: p.findtext("VALUE") for p in objects[0].findall("INSTANCE/PROPERTY")}
    assert props == {"ElementName": "db"}


def test_cim_err_method_not_found(client: httpx.Client) -> None:
    code, text = cim_error(
        client, methodcall("NoSuchMethod"), "NoSuchMethod", "root/virtualization/v2:Msvm_ReplicationService"
    )
    assert code == 17
    assert "NoSuchMethod" in text


def test_method_return_value_and_out_params_carry_paramtype(client: httpx.Client) -> None:
    response = post(
        client,
        methodcall(
            "InitiateFailover",
            '<PARAMVALUE NAME="ComputerSystem">' + VM.format(name="REPLICA-1") + "</PARAMVALUE>",
        ),
        "InitiateFailover",
        "root/virtualization/v2:Msvm_ReplicationService",
    )
    assert error_code(response) is None
    root = ET.fromstring(response.content)
    rv = root.find(".//METHODRESPONSE/RETURNVALUE")
    assert rv is not None
    assert (rv.attrib["PARAMTYPE"], rv.findtext("VALUE")) == ("uint32", "4096")
    job = root.find(".//METHODRESPONSE/PARAMVALUE[@NAME='Job']")
    assert job is not None
    assert job.attrib["PARAMTYPE"] == "reference"
    assert job.findtext("VALUE.REFERENCE/INSTANCEPATH/NAMESPACEPATH/HOST") == HOST
    assert job.find("VALUE.REFERENCE/INSTANCEPATH/INSTANCENAME").attrib["CLASSNAME"] == "Msvm_ConcreteJob"  # type: ignore[union-attr]


def test_null_out_ref_is_left_out(client: httpx.Client) -> None:
    response = post(
        client,
        methodcall(
            "InitiateFailover",
            '<PARAMVALUE NAME="ComputerSystem">' + VM.format(name="PRIMARY-1") + "</PARAMVALUE>",
        ),
        "InitiateFailover",
        "root/virtualization/v2:Msvm_ReplicationService",
    )
    root = ET.fromstring(response.content)
    assert root.findtext(".//RETURNVALUE/VALUE") == "32775"
    assert root.find(".//PARAMVALUE[@NAME='Job']") is None


def test_untyped_parameters_reach_the_object_manager_as_strings(
    client: httpx.Client, om: MockObjectManager
) -> None:
    params = (
        '<PARAMVALUE NAME="RequestedState"><VALUE>3</VALUE></PARAMVALUE>'
        '<PARAMVALUE NAME="TimeoutPeriod"><VALUE>00000000000100.000000:000</VALUE></PARAMVALUE>'
    )
    response = post(
        client,
        methodcall("RequestReplicationStateChange", params, VM.format(name="PRIMARY-1")),
        "RequestReplicationStateChange",
        "root/virtualization/v2:Msvm_ComputerSystem",
    )
    assert error_code(response) is None
    assert om.calls[-1].params == {"RequestedState": "3", "TimeoutPeriod": "00000000000100.000000:000"}


def test_typed_parameter_that_does_not_parse_is_passed_as_sent(
    client: httpx.Client, om: MockObjectManager
) -> None:
    params = '<PARAMVALUE NAME="RequestedState" PARAMTYPE="uint16"><VALUE>lots</VALUE></PARAMVALUE>'
    response = post(
        client,
        methodcall("RequestReplicationStateChange", params, VM.format(name="PRIMARY-1")),
        "RequestReplicationStateChange",
        "root/virtualization/v2:Msvm_ComputerSystem",
    )
    assert ET.fromstring(response.content).findtext(".//RETURNVALUE/VALUE") == "32773"
    assert om.calls[-1].params == {"RequestedState": "lots"}


def test_user_authenticated_by_the_daemon_gate_is_trusted(om: MockObjectManager) -> None:
    import asyncio

    app = create_app(om, lambda user, password: False, host_name=HOST)
    body = methodcall("GetSystemCertificates")
    sent: list[dict[str, object]] = []
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/cimom",
        "headers": [
            (k.lower().encode(), v.encode())
            for k, v in cim_headers(
                "GetSystemCertificates", "root/virtualization/v2:Msvm_ReplicationService"
            ).items()
            if k != "Authorization"
        ],
        "state": {"user": "operator"},
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 200
    assert om.calls[-1].ctx.user == "operator"
