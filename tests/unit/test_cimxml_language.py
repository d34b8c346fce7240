"""CIM errors in the request's language: the CIM-XML server over the real object manager, driven by pywbem
with ``Accept-Language`` on its session, and the rendering rules of ``cimxml.language`` on their own."""

from __future__ import annotations

import pytest
import pywbem
from pywbem import CIMClassName, CIMError, CIMInstanceName

from standby.cim.errors import CimFault
from standby.cimxml.language import cim_status_text, describe_error, describe_standby_error
from standby.domain.errors import InvalidState
from tests.unit import test_cimxml_real_om

VIRT = "root/virtualization/v2"
MISSING_VM = CIMInstanceName(
    "Msvm_ComputerSystem", {"CreationClassName": "Msvm_ComputerSystem", "Name": "NO-SUCH-VM"}, namespace=VIRT
)


#: The CIM-XML server over the real object manager and an in-memory store, as that module builds it.
url = test_cimxml_real_om.url


def _conn(url: str, language: str | None, namespace: str = VIRT) -> pywbem.WBEMConnection:
    conn = pywbem.WBEMConnection(url, default_namespace=namespace, timeout=30)
    if language is not None:
        conn.session.headers["Accept-Language"] = language
    return conn


def _error(call: object) -> CIMError:
    assert callable(call)
    with pytest.raises(CIMError) as info:
        call()
    return info.value


def _service(url: str) -> CIMInstanceName:
    (service,) = _conn(url, None).EnumerateInstanceNames("Msvm_ReplicationService")
    return service


def test_get_instance_of_a_missing_vm_is_not_found_in_german(url: str) -> None:
    german = _error(lambda: _conn(url, "de-DE, en;q=0.5").GetInstance(MISSING_VM))
    english = _error(lambda: _conn(url, None).GetInstance(MISSING_VM))
    assert german.status_code == english.status_code == pywbem.CIM_ERR_NOT_FOUND
    assert german.status_description.startswith("Die Instanz ")
    assert german.status_description.endswith("NO-SUCH-VM\" ist nicht vorhanden.")
    assert english.status_description.startswith("No instance ")


def test_an_unknown_namespace_and_class_are_german(url: str) -> None:
    namespace = _error(lambda: _conn(url, "de", "root/nowhere").EnumerateInstanceNames("Msvm_ComputerSystem"))
    assert namespace.status_code == pywbem.CIM_ERR_INVALID_NAMESPACE
    assert namespace.status_description == "Der Namespace root/nowhere ist nicht vorhanden."
    cls = _error(lambda: _conn(url, "de").EnumerateInstances("Msvm_NoSuchClass"))
    assert cls.status_code == pywbem.CIM_ERR_INVALID_CLASS
    assert cls.status_description == f"Die Klasse Msvm_NoSuchClass ist im Namespace {VIRT} nicht vorhanden."
    get_class = _error(lambda: _conn(url, "de").GetClass("Msvm_NoSuchClass"))
    assert get_class.status_code == pywbem.CIM_ERR_NOT_FOUND
    assert "ist im Namespace" in get_class.status_description


def test_intrinsic_parameter_and_query_errors_are_german(url: str) -> None:
    conn = _conn(url, "de")
    query = _error(lambda: conn.ExecQuery("CQL", "SELECT * FROM Msvm_ComputerSystem"))
    assert query.status_code == pywbem.CIM_ERR_QUERY_LANGUAGE_NOT_SUPPORTED
    assert query.status_description == "Die Abfragesprache CQL wird nicht unterstützt; verwenden Sie WQL."
    no_class = _error(lambda: conn.ExecQuery("WQL", "SELECT * FROM Msvm_Nothing"))
    assert no_class.status_description == (
        "Ungültige WQL-Abfrage: Die Klasse Msvm_Nothing ist nicht vorhanden.")
    unsupported = _error(lambda: conn.CreateInstance(pywbem.CIMInstance("Msvm_ComputerSystem")))
    assert unsupported.status_code == pywbem.CIM_ERR_NOT_SUPPORTED
    assert "wird von diesem Server nicht unterstützt" in unsupported.status_description


def test_method_refusals_by_the_server_are_german(url: str) -> None:
    conn, service = _conn(url, "de"), _service(url)
    unknown = _error(lambda: conn.InvokeMethod("InitiateFailover", service, Bogus=pywbem.Uint16(1)))
    assert unknown.status_code == pywbem.CIM_ERR_INVALID_PARAMETER
    assert unknown.status_description == "InitiateFailover hat keinen Parameter Bogus."
    no_method = _error(lambda: conn.InvokeMethod("Frobnicate", service))
    assert no_method.status_code == pywbem.CIM_ERR_METHOD_NOT_FOUND
    assert no_method.status_description == "Msvm_ReplicationService hat keine Methode Frobnicate."
    gone = _error(lambda: conn.InvokeMethod("RequestStateChange", MISSING_VM,
                                            RequestedState=pywbem.Uint16(2)))
    assert gone.status_code == pywbem.CIM_ERR_NOT_FOUND
    assert gone.status_description.startswith("Die Instanz ")
    static = _error(lambda: conn.InvokeMethod("RequestStateChange", CIMClassName("Msvm_Nothing")))
    assert static.status_description == f"Die Klasse Msvm_Nothing ist im Namespace {VIRT} nicht vorhanden."


def test_english_descriptions_stay_as_they_were(url: str) -> None:
    conn, service = _conn(url, "en"), _service(url)
    unknown = _error(lambda: conn.InvokeMethod("InitiateFailover", service, Bogus=pywbem.Uint16(1)))
    assert unknown.status_description == "InitiateFailover has no parameter 'Bogus'"


# -- the rendering rules --------------------------------------------------------------------------------


def test_an_engine_error_behind_a_provider_failure_is_rendered_in_the_language_too() -> None:
    cause = InvalidState("replication of VM1 is suspended", message_id="ReplicaNotAccepting", vm="VM1",
                         state="6")
    fault = CimFault(pywbem.CIM_ERR_FAILED, f"Msvm_X: {cause.message}", message_id="CimProviderFailed",
                     classname="Msvm_X", reason=cause)
    assert describe_error(fault, "en") == "Msvm_X: replication of VM1 is suspended"
    german = describe_error(fault, "de")
    assert german.startswith("Msvm_X: ") and german != describe_error(fault, "en")
    assert german[len("Msvm_X: "):] == describe_standby_error(cause, "de")


def test_a_bare_cim_error_keeps_its_text_after_the_german_status_name() -> None:
    bare = CIMError(pywbem.CIM_ERR_NOT_FOUND, "Class 'X' does not exist in root/x")
    assert describe_error(bare, "en") == "Class 'X' does not exist in root/x"
    assert describe_error(bare, "de") == "Nicht gefunden: Class 'X' does not exist in root/x"
    assert describe_error(CIMError(pywbem.CIM_ERR_FAILED), "de") == "Fehlgeschlagen"
    assert cim_status_text(99, "de") == "CIM status 99"


def test_an_engine_error_in_an_intrinsic_operation_uses_its_catalog_text() -> None:
    error = InvalidState("cannot", message_id="NoSuchMessageId")
    assert describe_standby_error(error, "en") == "cannot"
    assert describe_standby_error(error, "de").endswith(": cannot")  # the code's German name, then the text
    assert describe_standby_error(error, "de") != "cannot"


def test_every_cim_error_id_raised_has_both_catalog_texts() -> None:
    import re
    from pathlib import Path

    import standby
    from standby import i18n

    root = Path(standby.__file__).parent
    sources = [root / "cim" / "dispatch.py", root / "cim" / "object_manager.py",
               *sorted((root / "cimxml").glob("*.py"))]
    found = set()
    for source in sources:
        text = source.read_text(encoding="utf-8")
        found |= set(re.findall(r'message_id="(Cim[A-Za-z]+)"', text))
        found |= set(re.findall(r'_invalid\([^)]*?"(Cim[A-Za-z]+)"', text, flags=re.DOTALL))
    assert {"CimInstanceNotFound", "CimNamespaceNotFound", "CimUnknownParameter",
            "CimParameterMissing"} <= found
    assert not found - set(i18n.catalog("en"))
    assert not found - set(i18n.catalog("de"))
