"""The one adapter over pywbem's private CIM-XML modules (``_tupletree``, ``_tupleparse``, ``_cim_xml``).

pywbem is a client library; its request parser and XML element builders are private (pinned by
``pywbem>=1.9,<2``). Everything that touches them lives here, so a pywbem upgrade is a change to one file:

* :func:`parse_request` turns a request body into a :mod:`standby.cimxml.messages` call, or raises
  :class:`~standby.cimxml.messages.ProtocolError` with the DSP0200 ``CIMError`` header value. The body is
  read into pywbem's tuple tree by :func:`tuple_tree` (expat, with limits) rather than pywbem's SAX
  handler, whose text accumulation is quadratic (1 MiB of multi-line text took 8 s of CPU, 4 MiB minutes).
* The ``*_element`` helpers and :func:`response_document` build the response with pywbem's builders.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn
from xml.parsers import expat

import pywbem
from pywbem import (
    CIMClass,
    CIMClassName,
    CIMInstance,
    CIMInstanceName,
    CIMVersionError,
    DTDVersionError,
    ProtocolVersionError,
)
from pywbem import _cim_xml as cx
from pywbem import _tupleparse as tp

from standby.cimxml.messages import Call, ExtrinsicCall, IntrinsicCall, ParamValue, ProtocolError

#: An element of pywbem's builders (an ``xml.dom.minidom.Element``); opaque outside this module.
Element = Any

# pywbem's parser warns about things a *server* sent (it was written for clients); here the sender is a client
# and the request is judged on its own, so those warnings would only flood the daemon log.
warnings.filterwarnings("ignore", category=pywbem.ToleratedServerIssueWarning)
warnings.filterwarnings("ignore", category=pywbem.MissingKeybindingsWarning)

#: Deepest element nesting accepted: a method call with a REF inside an instance inside a parameter is ~12.
MAX_DEPTH = 64
#: Most elements in one request: an array parameter of a few thousand values stays far below it.
MAX_ELEMENTS = 200_000

_XML_DECLARATION = b'<?xml version="1.0" encoding="utf-8" ?>\n'
_EMPTY_ELEMENT = re.compile(r"<([A-Za-z][A-Za-z0-9._]*)((?:\s[^<>]*?)?)/>")
_PARAM_CHILDREN = frozenset(
    {
        "VALUE",
        "VALUE.REFERENCE",
        "VALUE.ARRAY",
        "VALUE.REFARRAY",
        "CLASSNAME",
        "INSTANCENAME",
        "CLASS",
        "INSTANCE",
        "VALUE.NAMEDINSTANCE",
    }
)


def _not_valid(message: str) -> ProtocolError:
    return ProtocolError(400, "request-not-valid", message)


def _unsupported(cim_error: str, message: str) -> ProtocolError:
    return ProtocolError(501, cim_error, message)


# --------------------------------------------------------------------------------------------- parsing


def parse_request(body: bytes) -> Call:
    """Parse a request body (DSP0201 ``CIM/MESSAGE/SIMPLEREQ``) into an intrinsic or extrinsic call."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        # CIM-XML never needs an inline DTD; refusing it closes the entity-expansion door for good.
        raise _not_valid("Inline DTDs and entity declarations are not accepted")
    tree = tuple_tree(body)
    if not isinstance(tree, tuple) or len(tree) < 3:
        raise ProtocolError(400, "request-not-well-formed", "The body is empty")
    parser = tp.TupleParser()
    try:
        return _parse_cim(parser, tree)
    except ProtocolError:
        raise
    except CIMVersionError as exc:
        raise _unsupported("unsupported-cim-version", _first_line(exc)) from None
    except DTDVersionError as exc:
        raise _unsupported("unsupported-dtd-version", _first_line(exc)) from None
    except ProtocolVersionError as exc:
        raise _unsupported("unsupported-protocol-version", _first_line(exc)) from None
    except Exception as exc:  # CIMXMLParseError and the odd TypeError/ValueError from bad key values
        raise _not_valid(_first_line(exc)) from None


class _TreeBuilder:
    """pywbem's tuple tree ``(name, attrs, children)`` from expat events; text kept as one string per run."""

    def __init__(self) -> None:
        self.stack: list[tuple[str, dict[str, str], list[Any]]] = []
        self.texts: list[list[str]] = []
        self.root: tuple[str, dict[str, str], list[Any]] | None = None
        self.elements = 0

    def start(self, name: str, attrs: dict[str, str]) -> None:
        self.elements += 1
        if len(self.stack) >= MAX_DEPTH:
            raise _not_valid(f"Elements are nested deeper than {MAX_DEPTH} levels")
        if self.elements > MAX_ELEMENTS:
            raise _not_valid(f"The request has more than {MAX_ELEMENTS} elements")
        element: tuple[str, dict[str, str], list[Any]] = (name, dict(attrs), [])
        if self.stack:
            self._flush()
            self.stack[-1][2].append(element)
        elif self.root is not None:
            raise ProtocolError(400, "request-not-well-formed", "More than one root element")
        else:
            self.root = element
        self.stack.append(element)
        self.texts.append([])

    def end(self, name: str) -> None:
        self._flush()
        self.stack.pop()
        self.texts.pop()

    def text(self, data: str) -> None:
        if self.texts:
            self.texts[-1].append(data)

    def _flush(self) -> None:
        pending = self.texts[-1]
        if pending:
            self.stack[-1][2].append("".join(pending))
            pending.clear()


def _refuse_declarations(*_args: object) -> NoReturn:
    raise _not_valid("Inline DTDs and entity declarations are not accepted")


def tuple_tree(body: bytes) -> tuple[Any, ...]:
    """Parse ``body`` into pywbem's tuple tree (what ``_tupletree.xml_to_tupletree_sax`` returns) in linear
    time, refusing DTDs, entity declarations, nesting deeper than ``MAX_DEPTH`` and more than
    ``MAX_ELEMENTS`` elements (the byte check above misses them in UTF-16; expat's handlers do not)."""
    builder = _TreeBuilder()
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.text
    parser.StartDoctypeDeclHandler = _refuse_declarations
    parser.EntityDeclHandler = _refuse_declarations
    parser.ExternalEntityRefHandler = _refuse_declarations
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        where = f"line {exc.lineno} column {exc.offset + 1}"
        raise ProtocolError(400, "request-not-well-formed",
                            f"XML parsing error at {where}: {expat.ErrorString(exc.code)}") from None
    if builder.root is None:
        raise ProtocolError(400, "request-not-well-formed", "The body is empty")
    return builder.root


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _kids(node: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return tp.kids(node)  # type: ignore[no-any-return]


def _only_child(node: tuple[Any, ...], expected: Sequence[str]) -> tuple[Any, ...]:
    kids = _kids(node)
    if len(kids) != 1 or tp.name(kids[0]) not in expected:
        found = [tp.name(k) for k in kids]
        raise _not_valid(f"Element {tp.name(node)} must hold exactly one of {list(expected)}, found {found}")
    return kids[0]


def _parse_cim(parser: tp.TupleParser, root: tuple[Any, ...]) -> Call:
    parser.check_node(root, "CIM", ("CIMVERSION", "DTDVERSION"))
    if not tp.attrs(root)["CIMVERSION"].startswith("2."):
        raise _unsupported("unsupported-cim-version", f"CIMVERSION {tp.attrs(root)['CIMVERSION']} is not 2.x")
    if not tp.attrs(root)["DTDVERSION"].startswith("2."):
        raise _unsupported("unsupported-dtd-version", f"DTDVERSION {tp.attrs(root)['DTDVERSION']} is not 2.x")
    message = _only_child(root, ("MESSAGE", "DECLARATION"))
    if tp.name(message) != "MESSAGE":
        raise _not_valid("A DECLARATION is not an operation request")
    parser.check_node(message, "MESSAGE", ("ID", "PROTOCOLVERSION"))
    if not tp.attrs(message)["PROTOCOLVERSION"].startswith("1."):
        raise _unsupported(
            "unsupported-protocol-version",
            f"PROTOCOLVERSION {tp.attrs(message)['PROTOCOLVERSION']} is not 1.x",
        )
    message_id = str(tp.attrs(message)["ID"])
    request = _only_child(message, ("SIMPLEREQ", "MULTIREQ", "SIMPLEEXPREQ", "MULTIEXPREQ"))
    if tp.name(request) in ("MULTIREQ", "MULTIEXPREQ"):
        raise _unsupported(
            "multiple-requests-unsupported", "Multiple requests in one message are not supported"
        )
    if tp.name(request) == "SIMPLEEXPREQ":
        raise _not_valid("Export requests (indications) are not accepted at /cimom")
    parser.check_node(request, "SIMPLEREQ", (), (), ("IMETHODCALL", "METHODCALL"))
    call = _only_child(request, ("IMETHODCALL", "METHODCALL"))
    if tp.name(call) == "IMETHODCALL":
        return _parse_imethodcall(parser, message_id, call)
    return _parse_methodcall(parser, message_id, call)


def _parse_imethodcall(parser: tp.TupleParser, message_id: str, node: tuple[Any, ...]) -> IntrinsicCall:
    _, attrs, namespace, params = parser.parse_imethodcall(node)
    values: dict[str, Any] = {}
    for name, value in params:
        if name in values:
            raise _not_valid(f"Parameter {name} is given twice")
        values[name] = value
    return IntrinsicCall(message_id=message_id, method=attrs["NAME"], namespace=namespace, params=values)


def _parse_methodcall(parser: tp.TupleParser, message_id: str, node: tuple[Any, ...]) -> ExtrinsicCall:
    parser.check_node(
        node, "METHODCALL", ("NAME",), (), ("LOCALCLASSPATH", "LOCALINSTANCEPATH", "PARAMVALUE")
    )
    kids = _kids(node)
    paths = [k for k in kids if tp.name(k) in ("LOCALCLASSPATH", "LOCALINSTANCEPATH")]
    if len(paths) != 1:
        raise _not_valid("METHODCALL needs exactly one LOCALCLASSPATH or LOCALINSTANCEPATH")
    target = parser.parse_any(paths[0])
    params = tuple(_parse_paramvalue(parser, k) for k in kids if tp.name(k) == "PARAMVALUE")
    names = [p.name.lower() for p in params]
    if len(set(names)) != len(names):
        raise _not_valid("A method parameter is given twice")
    return ExtrinsicCall(message_id=message_id, method=tp.attrs(node)["NAME"], target=target, params=params)


def _parse_paramvalue(parser: tp.TupleParser, node: tuple[Any, ...]) -> ParamValue:
    # Not pywbem's parse_paramvalue: it decodes embedded instances, but the object model wants the text.
    parser.check_node(
        node, "PARAMVALUE", ("NAME",), ("TYPE", "PARAMTYPE", "EmbeddedObject", "EMBEDDEDOBJECT")
    )
    attrs = tp.attrs(node)
    kids = _kids(node)
    if len(kids) > 1:
        raise _not_valid(f"Parameter {attrs['NAME']} has more than one value element")
    value: Any = None
    if kids:
        if tp.name(kids[0]) not in _PARAM_CHILDREN:
            raise _not_valid(f"Parameter {attrs['NAME']} has an invalid element {tp.name(kids[0])}")
        value = parser.parse_any(kids[0])
    return ParamValue(
        name=attrs["NAME"],
        value=value,
        param_type=attrs.get("PARAMTYPE") or attrs.get("TYPE"),
        embedded=bool(attrs.get("EmbeddedObject") or attrs.get("EMBEDDEDOBJECT")),
    )


# --------------------------------------------------------------------------------------------- building


def response_document(message_id: str, response: Element) -> bytes:
    """The whole response body: ``CIM/MESSAGE/SIMPLERSP`` around one (I)METHODRESPONSE."""
    doc = cx.CIM(cx.MESSAGE(cx.SIMPLERSP(response), message_id, "1.0"), "2.0", "2.0")
    xml: str = doc.toxml()
    # SBLIM wbemcli's parser cannot read empty-element tags such as <PROPERTY NAME="x" TYPE="string"/>;
    # the explicit start/end pair means the same to every XML reader. Attribute values and text are escaped
    # by minidom, so '<' and '>' only delimit tags here.
    return _XML_DECLARATION + _EMPTY_ELEMENT.sub(r"<\1\2></\1>", xml).encode("utf-8")


def imethod_response(name: str, values: Element | list[Element] | None) -> Element:
    """``IMETHODRESPONSE`` with an ``IRETURNVALUE`` (omitted when ``values`` is None)."""
    if values is None:
        return cx.IMETHODRESPONSE(name)
    return cx.IMETHODRESPONSE(name, cx.IRETURNVALUE(values))


def error_response(name: str, code: int, description: str | None, *, intrinsic: bool) -> Element:
    """``(I)METHODRESPONSE`` holding ``ERROR CODE=… DESCRIPTION=…``."""
    error = cx.ERROR(str(int(code)), description or None)
    return cx.IMETHODRESPONSE(name, error) if intrinsic else cx.METHODRESPONSE(name, error)


def method_response(name: str, return_value: Element | None, params: list[Element]) -> Element:
    """``METHODRESPONSE`` with ``RETURNVALUE`` and out ``PARAMVALUE`` elements."""
    children = ([return_value] if return_value is not None else []) + params
    return cx.METHODRESPONSE(name, children)


def return_value_element(value: Any, param_type: str | None) -> Element:
    """``RETURNVALUE PARAMTYPE=…`` around the value."""
    return cx.RETURNVALUE(value_element(value), param_type=param_type)


def param_value_element(name: str, value: Any, param_type: str | None, *, embedded: bool = False) -> Element:
    """One out-parameter; embedded instances travel as escaped CIM-XML text with ``EmbeddedObject``."""
    if isinstance(value, CIMInstance):
        value = value.tocimxmlstr()
        embedded = True
    elif isinstance(value, list) and value and all(isinstance(v, CIMInstance) for v in value):
        value = [v.tocimxmlstr() for v in value]
        embedded = True
    return cx.PARAMVALUE(
        name, value_element(value), paramtype=param_type, embedded_object="instance" if embedded else None
    )


def value_element(value: Any) -> Element | None:
    """VALUE / VALUE.ARRAY / VALUE.REFERENCE / VALUE.REFARRAY for a typed value; None for NULL."""
    if value is None:
        return None
    if isinstance(value, (CIMInstanceName, CIMClassName)):
        return cx.VALUE_REFERENCE(value.tocimxml())
    if isinstance(value, list) and value and all(isinstance(v, (CIMInstanceName, type(None))) for v in value):
        return cx.VALUE_REFARRAY(
            [cx.VALUE_REFERENCE(v.tocimxml()) if v is not None else cx.VALUE_NULL() for v in value]
        )
    return pywbem.tocimxml(value)


def class_element(cls: CIMClass) -> Element:
    """``CLASS``."""
    return cls.tocimxml()


def class_name_element(name: str) -> Element:
    """``CLASSNAME``."""
    return cx.CLASSNAME(name)


def instance_element(inst: CIMInstance) -> Element:
    """``INSTANCE`` without its path."""
    return inst.tocimxml(ignore_path=True)


def instance_name_element(path: CIMInstanceName) -> Element:
    """``INSTANCENAME`` (keys only)."""
    return path.tocimxml(ignore_host=True, ignore_namespace=True)


def named_instance_element(inst: CIMInstance) -> Element:
    """``VALUE.NAMEDINSTANCE`` (EnumerateInstances)."""
    return cx.VALUE_NAMEDINSTANCE(instance_name_element(inst.path), instance_element(inst))


def object_with_path_element(inst: CIMInstance) -> Element:
    """``VALUE.OBJECTWITHPATH`` (Associators, References, ExecQuery); the path needs host and namespace."""
    return cx.VALUE_OBJECTWITHPATH(inst.path.tocimxml(), instance_element(inst))


def object_path_element(path: CIMInstanceName) -> Element:
    """``OBJECTPATH`` around an ``INSTANCEPATH`` (AssociatorNames, ReferenceNames)."""
    return cx.OBJECTPATH(path.tocimxml())
