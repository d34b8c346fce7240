"""The WQL subset: parsing, checking against a class, filtering and projecting real pywbem instances."""

from __future__ import annotations

import pytest
from pywbem import CIMDateTime, CIMInstance, CIMInstanceName, CIMProperty, Uint16

from standby.cimxml import wql


def _vm(name: str, element: str, state: int, mode: int, notes: str | None = None) -> CIMInstance:
    path = CIMInstanceName("Msvm_ComputerSystem", {"Name": name}, namespace="root/virtualization/v2")
    return CIMInstance(
        "Msvm_ComputerSystem",
        {
            "Name": name,
            "ElementName": element,
            "ReplicationState": Uint16(state),
            "ReplicationMode": Uint16(mode),
            "Notes": CIMProperty("Notes", notes, type="string"),
            "Replicated": mode != 0,
            "InstallDate": CIMDateTime("20240101120000.000000+000"),
        },
        path=path,
    )


VMS = [
    _vm("A", "web", 3, 1, "front"),
    _vm("B", "db", 5, 2),
    _vm("C", "Mail", 0, 0, "old"),
]


def _select(text: str) -> list[str]:
    query = wql.parse(text)
    return [str(v["Name"]) for v in VMS if wql.matches(query.where, v)]


def test_select_star_without_where() -> None:
    query = wql.parse("SELECT * FROM Msvm_ComputerSystem")
    assert query == wql.Query("Msvm_ComputerSystem", None, None)
    assert _select("select * from Msvm_ComputerSystem") == ["A", "B", "C"]


def test_select_list_and_keywords_any_case() -> None:
    query = wql.parse("sElEcT Name , ElementName FrOm Msvm_ComputerSystem wHeRe ReplicationMode = 1")
    assert query.properties == ("Name", "ElementName")
    assert query.classname == "Msvm_ComputerSystem"
    assert query.where == wql.Comparison("ReplicationMode", "=", 1)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("ReplicationState = 3", ["A"]),
        ("ReplicationState <> 3", ["B", "C"]),
        ("ReplicationState != 3", ["B", "C"]),
        ("ReplicationState < 5", ["A", "C"]),
        ("ReplicationState > 0", ["A", "B"]),
        ("ReplicationState <= 3", ["A", "C"]),
        ("ReplicationState >= 3", ["A", "B"]),
        ("3 < ReplicationState", ["B"]),
        ("ElementName = 'WEB'", ["A"]),
        ('ElementName = "mail"', ["C"]),
        ("ElementName > 'e'", ["A", "C"]),
        ("Replicated = TRUE", ["A", "B"]),
        ("Replicated = false", ["C"]),
        ("Notes IS NULL", ["B"]),
        ("Notes IS NOT NULL", ["A", "C"]),
        ("Notes = NULL", []),
        ("ReplicationMode = 1 OR ReplicationMode = 2", ["A", "B"]),
        ("ReplicationMode >= 1 AND ElementName = 'db'", ["B"]),
        ("NOT ReplicationMode = 0", ["A", "B"]),
        ("(ReplicationMode = 0 OR ReplicationMode = 2) AND NOT Notes IS NULL", ["C"]),
        ("ReplicationMode = 0 OR ReplicationMode = 2 AND Notes IS NULL", ["B", "C"]),
        ("ReplicationState = 0x3", ["A"]),
        ("ReplicationState > -1", ["A", "B", "C"]),
        ("ReplicationState = 3.0", ["A"]),
        ("Name = '3'", []),
        ("ReplicationState = '3'", ["A"]),
        ("InstallDate = '20240101120000.000000+000'", ["A", "B", "C"]),
    ],
)
def test_where_operators(where: str, expected: list[str]) -> None:
    assert _select(f"SELECT * FROM Msvm_ComputerSystem WHERE {where}") == expected


def test_string_escapes() -> None:
    query = wql.parse(r"SELECT * FROM X WHERE Name = 'it\'s \\ here'")
    assert query.where == wql.Comparison("Name", "=", "it's \\ here")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SELECT",
        "SELECT FROM X",
        "SELECT * X",
        "SELECT * FROM",
        "SELECT *, Name FROM X",
        "SELECT Name, FROM X",
        "SELECT * FROM X WHERE",
        "SELECT * FROM X WHERE Name",
        "SELECT * FROM X WHERE Name = ",
        "SELECT * FROM X WHERE Name == 'a'",
        "SELECT * FROM X WHERE Name = 'a' AND",
        "SELECT * FROM X WHERE (Name = 'a'",
        "SELECT * FROM X WHERE Name IS 'a'",
        "SELECT * FROM X WHERE Name = 'unterminated",
        "SELECT * FROM X WHERE Name = 'a' garbage",
        "SELECT * FROM X WHERE Name LIKE 'a%'",
        "SELECT * FROM X; DROP TABLE vms",
        "DELETE FROM X",
        "SELECT * FROM X WHERE 1 = 1",
    ],
)
def test_invalid_queries_raise_readable_errors(text: str) -> None:
    with pytest.raises(wql.WqlError) as info:
        wql.parse(text)
    assert str(info.value)


def test_overlong_query_is_refused() -> None:
    with pytest.raises(wql.WqlError, match="too long"):
        wql.parse("SELECT * FROM X WHERE " + " OR ".join(["A = 1"] * 3000))


def test_check_properties_names_the_unknown_ones() -> None:
    query = wql.parse("SELECT Name, Bogus FROM Msvm_ComputerSystem WHERE Other = 1 AND elementname = 'x'")
    with pytest.raises(wql.WqlError, match="Bogus, Other"):
        wql.check_properties(query, ["Name", "ElementName"])
    wql.check_properties(wql.parse("SELECT NAME FROM X WHERE ElementName = 'a'"), ["Name", "ElementName"])


def test_project_keeps_selected_properties_and_path() -> None:
    projected = wql.project(VMS[0], ("name", "ReplicationState"))
    assert list(projected.properties) == ["Name", "ReplicationState"]
    assert projected.path == VMS[0].path
    assert "ElementName" in VMS[0].properties  # the original is untouched
    assert wql.project(VMS[0], None) == VMS[0]
    assert wql.project(VMS[0], None) is not VMS[0]
