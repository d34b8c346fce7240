"""Fuzzing request bodies: whatever arrives, the server answers a well-formed CIM-XML response or a clean
HTTP-level refusal (400/501 with a CIMError value) — never an exception, never a 500.

Bounded: a few hundred examples per property, well under a minute on a CI core.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from standby.cim.backend import RequestContext
from standby.cimxml import create_app
from standby.cimxml.messages import ProtocolError
from standby.cimxml.server import CimServer
from tests.unit.test_cimxml_support import HOST, build_object_manager

# pytest resets warning filters per test; the daemon ignores these client-side parser warnings (see wire.py).
pytestmark = [
    pytest.mark.filterwarnings("ignore::pywbem.ToleratedServerIssueWarning"),
    pytest.mark.filterwarnings("ignore::pywbem.MissingKeybindingsWarning"),
]
SERVER = CimServer(build_object_manager(), HOST)
CTX = RequestContext(user="fuzz", language="de")
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CIM_ERRORS = {
    "request-not-well-formed",
    "request-not-valid",
    "unsupported-cim-version",
    "unsupported-dtd-version",
    "unsupported-protocol-version",
    "multiple-requests-unsupported",
}

ELEMENTS = [
    "CIM",
    "MESSAGE",
    "SIMPLEREQ",
    "MULTIREQ",
    "IMETHODCALL",
    "METHODCALL",
    "LOCALNAMESPACEPATH",
    "NAMESPACE",
    "IPARAMVALUE",
    "PARAMVALUE",
    "VALUE",
    "VALUE.ARRAY",
    "VALUE.REFERENCE",
    "VALUE.NULL",
    "CLASSNAME",
    "INSTANCENAME",
    "KEYBINDING",
    "KEYVALUE",
    "LOCALINSTANCEPATH",
    "LOCALCLASSPATH",
    "INSTANCEPATH",
    "NAMESPACEPATH",
    "HOST",
    "INSTANCE",
    "PROPERTY",
    "VALUE.REFARRAY",
    "CLASS",
]
ATTRS = [
    "NAME",
    "CLASSNAME",
    "CIMVERSION",
    "DTDVERSION",
    "ID",
    "PROTOCOLVERSION",
    "VALUETYPE",
    "TYPE",
    "PARAMTYPE",
    "EmbeddedObject",
]
METHODS = [
    "GetClass",
    "EnumerateClasses",
    "EnumerateClassNames",
    "GetInstance",
    "EnumerateInstances",
    "EnumerateInstanceNames",
    "Associators",
    "AssociatorNames",
    "References",
    "ReferenceNames",
    "ExecQuery",
    "GetProperty",
    "OpenEnumerateInstances",
    "CreateInstance",
    "Bogus",
]
PARAMS = [
    "ClassName",
    "InstanceName",
    "ObjectName",
    "PropertyList",
    "DeepInheritance",
    "LocalOnly",
    "IncludeQualifiers",
    "AssocClass",
    "ResultClass",
    "Role",
    "ResultRole",
    "QueryLanguage",
    "Query",
    "PropertyName",
    "Unknown",
]
CLASSES = [
    "Msvm_ComputerSystem",
    "CIM_ComputerSystem",
    "Msvm_ReplicationService",
    "Msvm_ConcreteJob",
    "CIM_ManagedElement",
    "Msvm_SystemReplicationRelationship",
    "Nope",
    "",
]
NAMESPACES = ["root/virtualization/v2", "root/HyperVCluster/v2", "interop", "root/interop", "root/nope", "x"]
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


def _check(body: bytes) -> None:
    try:
        reply = SERVER.handle(body, CTX, verify_headers=False)
    except ProtocolError as exc:
        assert exc.status in (400, 501)
        assert exc.cim_error in CIM_ERRORS
        assert exc.message
        return
    root = ET.fromstring(reply.body)
    assert root.tag == "CIM"
    response = root.find("MESSAGE/SIMPLERSP")
    assert response is not None and len(response) == 1


@st.composite
def xml_trees(draw: st.DrawFn, depth: int = 0) -> str:
    tag = draw(st.sampled_from(ELEMENTS))
    attrs = draw(st.dictionaries(st.sampled_from(ATTRS), text, max_size=3))
    attr_text = "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items())
    children = [] if depth >= 4 else draw(st.lists(xml_trees(depth + 1), max_size=3))
    body = escape(draw(text)) if not children and draw(st.booleans()) else "".join(children)
    return f"<{tag}{attr_text}>{body}</{tag}>"


def _keys() -> st.SearchStrategy[str]:
    binding = st.builds(
        lambda n, v, t: (
            f'<KEYBINDING NAME={quoteattr(n)}><KEYVALUE VALUETYPE="{t}">{escape(v)}</KEYVALUE></KEYBINDING>'
        ),
        st.sampled_from(["Name", "CreationClassName", "InstanceID", "X"]),
        text,
        st.sampled_from(["string", "numeric", "boolean"]),
    )
    return st.builds(
        lambda c, b: f"<INSTANCENAME CLASSNAME={quoteattr(c)}>{''.join(b)}</INSTANCENAME>",
        st.sampled_from(CLASSES),
        st.lists(binding, max_size=3),
    )


def _param_value() -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda v: f"<VALUE>{escape(v)}</VALUE>", text),
        st.builds(lambda c: f"<CLASSNAME NAME={quoteattr(c)}/>", st.sampled_from(CLASSES)),
        _keys(),
        st.builds(
            lambda vs: (
                "<VALUE.ARRAY>" + "".join(f"<VALUE>{escape(v)}</VALUE>" for v in vs) + "</VALUE.ARRAY>"
            ),
            st.lists(text, max_size=3),
        ),
        st.just(""),
    )


def _namespace(ns: str) -> str:
    return "".join(f"<NAMESPACE NAME={quoteattr(p)}/>" for p in ns.split("/"))


@st.composite
def intrinsic_requests(draw: st.DrawFn) -> bytes:
    params = draw(
        st.lists(st.tuples(st.sampled_from(PARAMS), _param_value()), max_size=4, unique_by=lambda p: p[0])
    )
    param_xml = "".join(f"<IPARAMVALUE NAME={quoteattr(n)}>{v}</IPARAMVALUE>" for n, v in params)
    return (
        f'<CIM CIMVERSION="2.0" DTDVERSION="2.0"><MESSAGE ID="1" PROTOCOLVERSION="1.0"><SIMPLEREQ>'
        f"<IMETHODCALL NAME={quoteattr(draw(st.sampled_from(METHODS)))}><LOCALNAMESPACEPATH>"
        f"{_namespace(draw(st.sampled_from(NAMESPACES)))}</LOCALNAMESPACEPATH>{param_xml}</IMETHODCALL>"
        "</SIMPLEREQ></MESSAGE></CIM>"
    ).encode()


@st.composite
def extrinsic_requests(draw: st.DrawFn) -> bytes:
    target = draw(
        st.one_of(
            _keys().map(
                lambda k: (
                    f"<LOCALINSTANCEPATH><LOCALNAMESPACEPATH>{_namespace('root/virtualization/v2')}"
                    f"</LOCALNAMESPACEPATH>{k}</LOCALINSTANCEPATH>"
                )
            ),
            st.sampled_from(CLASSES).map(
                lambda c: (
                    f"<LOCALCLASSPATH><LOCALNAMESPACEPATH>{_namespace('root/virtualization/v2')}"
                    f"</LOCALNAMESPACEPATH><CLASSNAME NAME={quoteattr(c)}/></LOCALCLASSPATH>"
                )
            ),
        )
    )
    params = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["ComputerSystem", "RequestedState", "Text", "Count", "SettingData", "X"]),
                st.sampled_from(
                    [
                        "",
                        ' PARAMTYPE="uint16"',
                        ' PARAMTYPE="reference"',
                        ' PARAMTYPE="string" EmbeddedObject="instance"',
                    ]
                ),
                _param_value(),
            ),
            max_size=4,
            unique_by=lambda p: p[0],
        )
    )
    param_xml = "".join(f"<PARAMVALUE NAME={quoteattr(n)}{t}>{v}</PARAMVALUE>" for n, t, v in params)
    method = draw(
        st.sampled_from(
            [
                "InitiateFailover",
                "RequestReplicationStateChange",
                "Ping",
                "GetSystemCertificates",
                "ModifyServiceSettings",
                "Nope",
            ]
        )
    )
    return (
        f'<CIM CIMVERSION="2.0" DTDVERSION="2.0"><MESSAGE ID="2" PROTOCOLVERSION="1.0"><SIMPLEREQ>'
        f"<METHODCALL NAME={quoteattr(method)}>{target}{param_xml}</METHODCALL></SIMPLEREQ></MESSAGE></CIM>"
    ).encode()


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes(body: bytes) -> None:
    _check(body)


@FUZZ
@given(xml_trees())
def test_random_cim_xml_shapes(body: str) -> None:
    _check(body.encode())


@FUZZ
@given(intrinsic_requests())
def test_intrinsic_requests(body: bytes) -> None:
    _check(body)


@FUZZ
@given(extrinsic_requests())
def test_extrinsic_requests(body: bytes) -> None:
    _check(body)


@FUZZ
@given(intrinsic_requests(), st.integers(min_value=0, max_value=400), st.binary(max_size=8))
def test_truncated_and_spliced_requests(body: bytes, cut: int, junk: bytes) -> None:
    _check(body[:cut] + junk + body[cut:])


APP = create_app(
    build_object_manager(),
    lambda user, password: (user, password) == ("admin", "pw"),
    host_name=HOST,
    max_body=4096,
)
HEADER_NAMES = [
    "CIMOperation",
    "CIMMethod",
    "CIMObject",
    "Content-Type",
    "Content-Length",
    "Accept-Language",
    "Authorization",
    "CIMProtocolVersion",
    "CIMBatch",
]
HEADER_VALUES = st.one_of(
    text,
    st.sampled_from(
        [
            "MethodCall",
            "GetClass",
            "root/virtualization/v2",
            "application/xml",
            "de-DE",
            "1.0",
            "Basic YWRtaW46cHc=",
            "Basic !!",
            "99999999",
            "-1",
            "",
        ]
    ),
)


def _asgi(method: str, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    sent: list[dict[str, object]] = []
    scope = {"type": "http", "method": method, "path": "/cimom", "headers": headers}

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(APP(scope, receive, send))  # type: ignore[arg-type]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    return int(sent[0]["status"])  # type: ignore[call-overload]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["POST", "POST", "POST", "M-POST", "GET", "PUT"]),
    st.dictionaries(st.sampled_from(HEADER_NAMES), HEADER_VALUES, max_size=7),
    st.one_of(intrinsic_requests(), st.binary(max_size=256)),
)
def test_random_headers_over_asgi(method: str, headers: dict[str, str], body: bytes) -> None:
    raw = [(k.lower().encode(), v.encode("utf-8", "surrogatepass")) for k, v in headers.items()]
    status = _asgi(method, raw, body)
    assert status in (200, 400, 401, 405, 413, 415, 501)
