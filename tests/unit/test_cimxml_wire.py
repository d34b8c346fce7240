"""Request parsing (``cimxml.wire``): every REF form, typed and untyped values, and every rejection."""

from __future__ import annotations

import pytest
from pywbem import CIMClassName, CIMInstanceName

from standby.cimxml import wire
from standby.cimxml.messages import ExtrinsicCall, IntrinsicCall, ProtocolError

NS = (
    '<LOCALNAMESPACEPATH><NAMESPACE NAME="root"/><NAMESPACE NAME="virtualization"/><NAMESPACE NAME="v2"/>'
    "</LOCALNAMESPACEPATH>"
)
VM_KEYS = (
    '<KEYBINDING NAME="CreationClassName"><KEYVALUE VALUETYPE="string">Msvm_ComputerSystem</KEYVALUE>'
    '</KEYBINDING><KEYBINDING NAME="Name"><KEYVALUE VALUETYPE="string">VM-1</KEYVALUE></KEYBINDING>'
)
VM_NAME = f'<INSTANCENAME CLASSNAME="Msvm_ComputerSystem">{VM_KEYS}</INSTANCENAME>'
SERVICE = (
    '<INSTANCENAME CLASSNAME="Msvm_ReplicationService">'
    '<KEYBINDING NAME="Name"><KEYVALUE VALUETYPE="string">replicasvc</KEYVALUE></KEYBINDING></INSTANCENAME>'
)


def envelope(inner: str, *, cim: str = "2.0", dtd: str = "2.0", protocol: str = "1.0") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8" ?><CIM CIMVERSION="{cim}" DTDVERSION="{dtd}">'
        f'<MESSAGE ID="42" PROTOCOLVERSION="{protocol}">{inner}</MESSAGE></CIM>'
    ).encode()


def methodcall(params: str, name: str = "InitiateFailover") -> bytes:
    return envelope(
        f'<SIMPLEREQ><METHODCALL NAME="{name}"><LOCALINSTANCEPATH>{NS}{SERVICE}</LOCALINSTANCEPATH>'
        f"{params}</METHODCALL></SIMPLEREQ>"
    )


def one_param(params: str) -> object:
    call = wire.parse_request(methodcall(params))
    assert isinstance(call, ExtrinsicCall)
    assert len(call.params) == 1
    return call.params[0]


def test_intrinsic_call_with_typed_parameters() -> None:
    body = envelope(
        f'<SIMPLEREQ><IMETHODCALL NAME="GetInstance">{NS}'
        f'<IPARAMVALUE NAME="InstanceName">{VM_NAME}</IPARAMVALUE>'
        '<IPARAMVALUE NAME="LocalOnly"><VALUE>FALSE</VALUE></IPARAMVALUE>'
        '<IPARAMVALUE NAME="PropertyList"><VALUE.ARRAY><VALUE>Name</VALUE></VALUE.ARRAY></IPARAMVALUE>'
        "</IMETHODCALL></SIMPLEREQ>"
    )
    call = wire.parse_request(body)
    assert isinstance(call, IntrinsicCall)
    assert call.message_id == "42"
    assert call.method == "GetInstance"
    assert call.namespace == "root/virtualization/v2"
    assert call.params["LocalOnly"] is False
    assert call.params["PropertyList"] == ["Name"]
    path = call.params["InstanceName"]
    assert isinstance(path, CIMInstanceName)
    assert path.keybindings["Name"] == "VM-1"


def test_extrinsic_target_is_an_instance_path_with_namespace() -> None:
    call = wire.parse_request(methodcall(""))
    assert isinstance(call, ExtrinsicCall)
    assert isinstance(call.target, CIMInstanceName)
    assert call.target.classname == "Msvm_ReplicationService"
    assert call.namespace == "root/virtualization/v2"


def test_static_call_target_is_a_class_path() -> None:
    body = envelope(
        f'<SIMPLEREQ><METHODCALL NAME="GetSystemCertificates"><LOCALCLASSPATH>{NS}'
        '<CLASSNAME NAME="Msvm_ReplicationService"/></LOCALCLASSPATH></METHODCALL></SIMPLEREQ>'
    )
    call = wire.parse_request(body)
    assert isinstance(call, ExtrinsicCall)
    assert isinstance(call.target, CIMClassName)
    assert call.target.namespace == "root/virtualization/v2"


@pytest.mark.parametrize(
    ("value_xml", "host", "namespace"),
    [
        (
            f"<VALUE.REFERENCE><LOCALINSTANCEPATH>{NS}{VM_NAME}</LOCALINSTANCEPATH></VALUE.REFERENCE>",
            None,
            "root/virtualization/v2",
        ),
        (
            f"<VALUE.REFERENCE><INSTANCEPATH><NAMESPACEPATH><HOST>hv1.example</HOST>{NS}</NAMESPACEPATH>"
            f"{VM_NAME}</INSTANCEPATH></VALUE.REFERENCE>",
            "hv1.example",
            "root/virtualization/v2",
        ),
        (f"<VALUE.REFERENCE>{VM_NAME}</VALUE.REFERENCE>", None, None),
        (VM_NAME, None, None),
    ],
    ids=["localinstancepath", "instancepath-with-host", "value-reference-instancename", "bare-instancename"],
)
@pytest.mark.parametrize("paramtype", ['PARAMTYPE="reference"', ""], ids=["paramtype", "no-paramtype"])
def test_every_ref_form_becomes_an_instance_name(
    value_xml: str, host: str | None, namespace: str | None, paramtype: str
) -> None:
    param = one_param(f'<PARAMVALUE NAME="ComputerSystem" {paramtype}>{value_xml}</PARAMVALUE>')
    assert param.name == "ComputerSystem"  # type: ignore[attr-defined]
    value = param.value  # type: ignore[attr-defined]
    assert isinstance(value, CIMInstanceName)
    assert value.classname == "Msvm_ComputerSystem"
    assert dict(value.keybindings) == {"CreationClassName": "Msvm_ComputerSystem", "Name": "VM-1"}
    assert value.host == host
    assert value.namespace == namespace


def test_null_parameter_has_no_value() -> None:
    param = one_param('<PARAMVALUE NAME="SnapshotSettingData" PARAMTYPE="reference"/>')
    assert param.value is None  # type: ignore[attr-defined]
    assert param.param_type == "reference"  # type: ignore[attr-defined]


def test_untyped_values_stay_strings() -> None:
    call = wire.parse_request(
        methodcall(
            '<PARAMVALUE NAME="RequestedState"><VALUE>7</VALUE></PARAMVALUE>'
            '<PARAMVALUE NAME="Names"><VALUE.ARRAY><VALUE>a</VALUE><VALUE.NULL/></VALUE.ARRAY></PARAMVALUE>'
            '<PARAMVALUE NAME="Count" TYPE="uint32"><VALUE>3</VALUE></PARAMVALUE>',
            name="RequestReplicationStateChange",
        )
    )
    assert isinstance(call, ExtrinsicCall)
    state, names, count = call.params
    assert (state.value, state.param_type) == ("7", None)
    assert names.value == ["a", None]
    assert (count.value, count.param_type) == ("3", "uint32")  # TYPE is accepted as PARAMTYPE


def test_embedded_instance_stays_text() -> None:
    text = '&lt;INSTANCE CLASSNAME="Msvm_ReplicationSettingData"&gt;&lt;/INSTANCE&gt;'
    param = one_param(
        f'<PARAMVALUE NAME="ReplicationSettingData" PARAMTYPE="string" EmbeddedObject="instance">'
        f"<VALUE>{text}</VALUE></PARAMVALUE>"
    )
    assert param.value == '<INSTANCE CLASSNAME="Msvm_ReplicationSettingData"></INSTANCE>'  # type: ignore[attr-defined]
    assert param.embedded is True  # type: ignore[attr-defined]


def test_ref_array_parameter() -> None:
    value = one_param(
        f'<PARAMVALUE NAME="Members" PARAMTYPE="reference"><VALUE.REFARRAY>'
        f"<VALUE.REFERENCE>{VM_NAME}</VALUE.REFERENCE><VALUE.NULL/></VALUE.REFARRAY></PARAMVALUE>"
    ).value  # type: ignore[attr-defined]
    assert isinstance(value[0], CIMInstanceName)
    assert value[1] is None


def _rejected(body: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        wire.parse_request(body)
    return info.value


@pytest.mark.parametrize(
    "body",
    [b"", b"not xml at all", b"<CIM", b"<CIM></MESSAGE>", b"\xff\xfe<CIM/>", b"<a><b></a>"],
    ids=["empty", "text", "truncated", "mismatched-tags", "bad-utf8", "bad-nesting"],
)
def test_malformed_xml_is_not_well_formed(body: bytes) -> None:
    exc = _rejected(body)
    assert (exc.status, exc.cim_error) == (400, "request-not-well-formed")
    assert exc.message


@pytest.mark.parametrize(
    "body",
    [
        b"<FOO/>",
        b'<CIM CIMVERSION="2.0"/>',
        envelope("<SIMPLEREQ/>"),
        envelope("<SIMPLEREQ><IMETHODCALL/></SIMPLEREQ>"),
        envelope('<SIMPLEREQ><IMETHODCALL NAME="GetClass"/></SIMPLEREQ>'),
        envelope(f'<SIMPLEREQ><IMETHODCALL NAME="GetClass">{NS}<BOGUS/></IMETHODCALL></SIMPLEREQ>'),
        envelope('<SIMPLEREQ><METHODCALL NAME="X"></METHODCALL></SIMPLEREQ>'),
        methodcall('<PARAMVALUE NAME="A"><VALUE>1</VALUE><VALUE>2</VALUE></PARAMVALUE>'),
        methodcall('<PARAMVALUE NAME="A"><FOO/></PARAMVALUE>'),
        methodcall('<PARAMVALUE NAME="A"><VALUE>1</VALUE></PARAMVALUE><PARAMVALUE NAME="a"/>'),
        methodcall("<PARAMVALUE><VALUE>1</VALUE></PARAMVALUE>"),
        methodcall('<PARAMVALUE NAME="A" BOGUS="1"/>'),
        methodcall(
            '<PARAMVALUE NAME="A"><INSTANCENAME CLASSNAME="X"><KEYBINDING NAME="k">'
            '<KEYVALUE VALUETYPE="numeric">abc</KEYVALUE></KEYBINDING></INSTANCENAME></PARAMVALUE>'
        ),
        envelope('<SIMPLEEXPREQ><EXPMETHODCALL NAME="ExportIndication"/></SIMPLEEXPREQ>'),
        b'<?xml version="1.0"?><!DOCTYPE CIM [<!ENTITY a "b">]><CIM CIMVERSION="2.0" DTDVERSION="2.0"/>',
        b'<CIM CIMVERSION="2.0" DTDVERSION="2.0"><DECLARATION/></CIM>',
    ],
)
def test_invalid_requests_are_not_valid(body: bytes) -> None:
    exc = _rejected(body)
    assert (exc.status, exc.cim_error) == (400, "request-not-valid")
    assert exc.message


@pytest.mark.parametrize(
    ("kwargs", "cim_error"),
    [
        ({"cim": "3.0"}, "unsupported-cim-version"),
        ({"dtd": "1.1"}, "unsupported-dtd-version"),
        ({"protocol": "2.0"}, "unsupported-protocol-version"),
    ],
)
def test_versions(kwargs: dict[str, str], cim_error: str) -> None:
    exc = _rejected(
        envelope(f'<SIMPLEREQ><IMETHODCALL NAME="GetClass">{NS}</IMETHODCALL></SIMPLEREQ>', **kwargs)
    )
    assert (exc.status, exc.cim_error) == (501, cim_error)


def test_multireq_is_refused() -> None:
    single = f'<SIMPLEREQ><IMETHODCALL NAME="GetClass">{NS}</IMETHODCALL></SIMPLEREQ>'
    exc = _rejected(envelope(f"<MULTIREQ>{single}{single}</MULTIREQ>"))
    assert (exc.status, exc.cim_error) == (501, "multiple-requests-unsupported")


def test_response_document_echoes_the_message_id() -> None:
    body = wire.response_document("777", wire.error_response("GetClass", 5, "no such class", intrinsic=True))
    assert body.startswith(b'<?xml version="1.0" encoding="utf-8" ?>')
    assert b'<MESSAGE ID="777" PROTOCOLVERSION="1.0">' in body
    assert b'<ERROR CODE="5" DESCRIPTION="no such class"></ERROR>' in body


def test_response_has_no_empty_element_tags() -> None:
    # SBLIM wbemcli cannot parse <PROPERTY .../>; every element gets an explicit end tag.
    from pywbem import CIMInstance, CIMInstanceName, CIMProperty

    path = CIMInstanceName("X", {"K": "a/>b"}, namespace="root/virtualization/v2")
    inst = CIMInstance("X", {"K": "a/>b", "Empty": CIMProperty("Empty", None, type="string")}, path=path)
    body = wire.response_document(
        "1", wire.imethod_response("EnumerateInstances", [wire.named_instance_element(inst)])
    )
    assert b"/>" not in body.replace(b"a/&gt;b", b"")
    assert b'<PROPERTY NAME="Empty" TYPE="string"></PROPERTY>' in body
    assert body.count(b"a/&gt;b") == 2  # values are untouched
