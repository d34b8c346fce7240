"""The compiled MOF against the API reference: every method signature it lists, read from its text.

Signatures come from ``docs/hyperv-api.md`` (§3.1 and §8.1 tables, the §4 and §8.8
code blocks, the §8.7 bullets, the §7 method list), parsed here, and are compared with the classes pywbem's
MOF compiler produced: every parameter exists with the right direction, type, array-ness and REF class.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from pywbem import CIMClass, CIMMethod, CIMParameter

from standby.cim.backend import CLUSTER_NAMESPACE, INTEROP_NAMESPACE, VIRTUALIZATION_NAMESPACE
from standby.cim.schema import NAMESPACE_FILES, Schema, SchemaError, compile_schema, load_schema

SPEC = Path(__file__).resolve().parents[2] / "docs" / "hyperv-api.md"
VIRT, CLUSTER = VIRTUALIZATION_NAMESPACE, CLUSTER_NAMESPACE
_TYPES = {"string", "uint16", "uint32", "datetime", "boolean"}


@dataclass(frozen=True)
class SpecParam:
    """One parameter as the spec writes it: ``[type] name[[]]`` with optional REF class."""

    name: str
    direction: str  # "in" or "out"
    cim_type: str | None
    ref_class: str | None
    is_array: bool


def _param(text: str, direction: str) -> SpecParam:
    text = text.strip().strip("`")
    text = re.sub(r"^\[(in|out|in,\s*out)\]\s*", "", text)
    words = text.split()
    name = words[-1]
    is_array = name.endswith("[]")
    name = name.removesuffix("[]")
    if "REF" in words:
        return SpecParam(name, direction, "reference", words[words.index("REF") - 1], is_array)
    cim_type = words[0] if len(words) > 1 and words[0] in _TYPES else None
    return SpecParam(name, direction, cim_type, None, is_array)


def _split(text: str) -> list[str]:
    # Comments in parentheses ("(1/2/3)", "(embedded …)") are not parameters; "[in,out]" is one marker.
    text = re.sub(r"\s*\([^)]*\)", "", text.replace("[in,out]", "[out]").replace("[in, out]", "[out]"))
    return [part for part in (p.strip().strip("`") for p in text.strip("`").split(",")) if part]


def _table_signatures(section: str) -> dict[str, list[SpecParam]]:
    """Method → params from a ``| Method | `in` → `out` | … |`` table."""
    result: dict[str, list[SpecParam]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not re.match(r"^[A-Z]\w+( / [A-Z]\w+)*$", cells[0]) or cells[0] == "Method":
            continue
        signature = cells[1]
        if "→" in signature:
            ins, outs = signature.split("→", 1)
        else:
            ins, outs = signature, ""
        params = [_param(p, "out" if p.startswith("[out]") else "in") for p in _split(ins)
                  if p not in ("—", "-")]
        params += [_param(p, "out") for p in _split(outs)]
        for method in cells[0].split(" / "):
            result[method] = params
    return result


def _call_signatures(text: str) -> dict[str, list[SpecParam]]:
    """Method → params from ``Name(type a, [out] type b, out c)`` text."""
    result: dict[str, list[SpecParam]] = {}
    for match in re.finditer(r"(?:uint32\s+)?([A-Z]\w+)\(([^)]*)\)", text, re.DOTALL):
        params = []
        for part in _split(match[2].replace("\n", " ")):
            direction = "out" if re.match(r"^(\[out\]|out\s)", part) else "in"
            params.append(_param(re.sub(r"^out\s", "", part), direction))
        result[match[1]] = params
    return result


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end, text.index(start))]


@pytest.fixture(scope="module")
def spec_text() -> str:
    # The reference is part of the checkout: a missing file is a failure, not a skip.
    return SPEC.read_text(encoding="utf-8")


def _expected(spec_text: str) -> list[tuple[str, str, str, list[SpecParam]]]:
    cases: list[tuple[str, str, str, list[SpecParam]]] = []
    service = _table_signatures(_section(spec_text, "### 3.1", "### 3.2"))
    cases += [(VIRT, "Msvm_ReplicationService", m, p) for m, p in service.items()]
    collection = _table_signatures(_section(spec_text, "### 8.1", "### 8.2"))
    cases += [(CLUSTER, "Msvm_CollectionReplicationService", m, p) for m, p in collection.items()]
    vm = _call_signatures(_section(spec_text, "## 4.", "Allowed `RequestedState`"))
    cases += [(ns, "Msvm_ComputerSystem", m, p) for m, p in vm.items() for ns in (VIRT, CLUSTER)]
    management = _call_signatures(_section(spec_text, "### 8.7", "### 8.8"))
    cases += [(ns, "Msvm_CollectionManagementService", m, p) for m, p in management.items()
              for ns in (VIRT, CLUSTER)]
    failover = _call_signatures(_section(spec_text, "```\nuint32 Failover", "```\nForces"))
    cases += [(CLUSTER, "Msvm_RedundancySet", m, p) for m, p in failover.items()]
    jobs = _call_signatures(_section(spec_text, "**Methods**: `GetError", "**JobType values**"))
    cases += [(ns, "Msvm_ConcreteJob", m, p) for m, p in jobs.items() if m != "KillJob"
              for ns in (VIRT, CLUSTER)]
    return cases


def _direction_ok(param: CIMParameter, direction: str) -> bool:
    is_in = param.qualifiers.get("In") is None or bool(param.qualifiers["In"].value)
    is_out = param.qualifiers.get("Out") is not None and bool(param.qualifiers["Out"].value)
    return is_out if direction == "out" else is_in


def test_every_spec_method_has_its_signature(spec_text: str) -> None:
    schema = load_schema()
    cases = _expected(spec_text)
    methods = {(c[1], c[2]) for c in cases}
    assert len(methods) >= 27 + 24 + 2 + 6 + 1 + 3  # §3.1, §8.1, §4, §8.7, §8.8, §7
    problems: list[str] = []
    for namespace, classname, method_name, params in cases:
        cls = schema.get_class(namespace, classname)
        method: CIMMethod | None = cls.methods.get(method_name)
        if method is None:
            problems.append(f"{namespace}:{classname}.{method_name} missing")
            continue
        assert method.return_type == "uint32"
        for spec in params:
            problems += _param_problems(cls, method, spec)
    assert problems == []


def _param_problems(cls: CIMClass, method: CIMMethod, spec: SpecParam) -> list[str]:
    where = f"{cls.classname}.{method.name}({spec.name})"
    param = method.parameters.get(spec.name)
    if param is None:
        return [f"{where} missing"]
    problems = []
    if not _direction_ok(param, spec.direction):
        problems.append(f"{where} is not {spec.direction}")
    if spec.cim_type and param.type != spec.cim_type:
        problems.append(f"{where} is {param.type}, spec says {spec.cim_type}")
    if spec.ref_class and param.reference_class != spec.ref_class:
        problems.append(f"{where} refers to {param.reference_class}, spec says {spec.ref_class}")
    if spec.is_array and not param.is_array:
        problems.append(f"{where} is not an array")
    if spec.name == "Job" and param.reference_class != "CIM_ConcreteJob":
        problems.append(f"{where} is not a CIM_ConcreteJob REF")
    return problems


@pytest.mark.parametrize(("method", "parameter", "embedded"), [
    ("AddAuthorizationEntry", "AuthorizationEntry", "Msvm_ReplicationAuthorizationSettingData"),
    ("ModifyAuthorizationEntry", "AuthorizationEntry", "Msvm_ReplicationAuthorizationSettingData"),
    ("SetAuthorizationEntry", "AuthorizationEntry", "Msvm_ReplicationAuthorizationSettingData"),
    ("CreateReplicationRelationship", "ReplicationSettingData", "Msvm_ReplicationSettingData"),
    ("ModifyReplicationSettings", "ReplicationSettingData", "Msvm_ReplicationSettingData"),
    ("ReverseReplicationRelationship", "ReplicationSettingData", "Msvm_ReplicationSettingData"),
    ("InitiateFailback", "ReplicationSettingData", "Msvm_ReplicationSettingData"),
    ("ModifyServiceSettings", "SettingData", "Msvm_ReplicationServiceSettingData"),
    ("ChangeReplicationModeToPrimary", "ReplicationRelationship", "Msvm_ReplicationRelationship"),
    ("RemoveReplicationRelationshipEx", "ReplicationRelationship", "Msvm_ReplicationRelationship"),
    ("GetReplicationStatisticsEx", "ReplicationRelationship", "Msvm_ReplicationRelationship"),
    ("ResetReplicationStatisticsEx", "ReplicationRelationship", "Msvm_ReplicationRelationship"),
    ("SetFailoverNetworkAdapterSettings", "NetworkSettings", "Msvm_FailoverNetworkAdapterSettingData"),
    ("GetReplicationStatistics", "ReplicationStatistics", "Msvm_ReplicationStatistics"),
    ("GetReplicationStatistics", "ReplicationHealthIssues", "Msvm_Error"),
])
def test_embedded_instance_parameters_are_qualified(method: str, parameter: str, embedded: str) -> None:
    param = load_schema().get_class(VIRT, "Msvm_ReplicationService").methods[method].parameters[parameter]
    assert param.type == "string"
    assert param.qualifiers["EmbeddedInstance"].value == embedded


def test_return_codes_carry_the_spec_numbers() -> None:
    schema = load_schema()
    method = schema.get_class(VIRT, "Msvm_ReplicationService").methods["InitiateFailover"]
    value_map = [int(v) for v in method.qualifiers["ValueMap"].value]
    assert value_map == [0, 4096, *range(32768, 32780)]
    values = dict(zip(value_map, method.qualifiers["Values"].value, strict=True))
    assert values[32775] == "Invalid state for this operation"
    assert values[4096] == "Method Parameters Checked - Job Started"
    rsc = schema.get_class(VIRT, "Msvm_ReplicationService").methods["RequestStateChange"]
    assert rsc.qualifiers["ValueMap"].value == ["0", "1"]
    state = schema.get_class(VIRT, "Msvm_ComputerSystem").properties["ReplicationState"]
    assert [int(v) for v in state.qualifiers["ValueMap"].value] == list(range(22))
    job_state = schema.get_class(VIRT, "Msvm_ConcreteJob").properties["JobState"]
    assert "32768..65535" in job_state.qualifiers["ValueMap"].value


def test_inheritance_is_resolved() -> None:
    schema = load_schema()
    cs = schema.get_class(VIRT, "Msvm_ComputerSystem")
    assert cs.superclass == "CIM_ComputerSystem"
    assert cs.properties["ElementName"].propagated
    assert cs.properties["ReplicationMode"].class_origin == "Msvm_ComputerSystem"
    assert "StartService" in schema.get_class(VIRT, "Msvm_ReplicationService").methods
    assert schema.is_subclass(VIRT, "Msvm_ConcreteJob", "CIM_ManagedElement")
    assert not schema.is_subclass(VIRT, "Msvm_ConcreteJob", "CIM_ComputerSystem")
    assert schema.superclasses(VIRT, "Msvm_ReplicationService") == [
        "Msvm_ReplicationService", "CIM_Service", "CIM_EnabledLogicalElement", "CIM_LogicalElement",
        "CIM_ManagedSystemElement", "CIM_ManagedElement"]
    subs = {c.classname for c in schema.subclasses(CLUSTER, "CIM_Dependency")}
    assert {"Msvm_SystemReplicationRelationship", "Msvm_RecoveryPointOfVirtualSystemCollection"} <= subs
    assert schema.is_association(CLUSTER, "Msvm_MemberOfRedundancySet")
    indication = schema.get_class(CLUSTER, "Msvm_FailoverIndication")
    assert indication.qualifiers["Indication"].value is True
    assert "PerceivedSeverity" in indication.properties


def test_namespaces_hold_their_classes() -> None:
    schema = load_schema()
    assert set(schema.namespaces) >= {VIRT, CLUSTER, INTEROP_NAMESPACE}
    assert schema.find_class(CLUSTER, "Msvm_CollectionReplicationService") is not None
    # cluster only (hyperv-api §1)
    assert schema.find_class(VIRT, "Msvm_CollectionReplicationService") is None
    assert schema.find_class(VIRT, "Msvm_ReplicationService") is not None
    for ns in (VIRT, CLUSTER):
        for classname in ("Msvm_ComputerSystem", "Msvm_ConcreteJob", "Msvm_VirtualSystemCollection",
                          "Msvm_CollectedVirtualSystems", "Msvm_CollectionManagementService", "Msvm_Error"):
            assert schema.find_class(ns, classname) is not None, (ns, classname)
    assert schema.canonical_namespace("ROOT\\virtualization\\V2") == VIRT
    assert schema.canonical_namespace("/root/hypervcluster/v2") == CLUSTER
    assert schema.canonical_namespace("root/interop") == INTEROP_NAMESPACE
    assert schema.canonical_namespace("root/cimv2") is None


def test_a_broken_mof_names_its_file(tmp_path: Path) -> None:
    for name in NAMESPACE_FILES[INTEROP_NAMESPACE]:
        (tmp_path / name).write_text((Path(__file__).parents[2] / "src/standby/cim/mof" / name).read_text())
    (tmp_path / "interop.mof").write_text("class Broken : CIM_DoesNotExist { };")
    with pytest.raises(SchemaError, match=r"interop\.mof"):
        compile_schema(tmp_path, [INTEROP_NAMESPACE])


def test_load_schema_is_cached() -> None:
    assert load_schema() is load_schema()
    assert isinstance(load_schema(), Schema)
