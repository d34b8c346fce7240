"""Set-VMReplicationServer and the authorization-entry verbs through REST, against CIM on the same world:
the partial changes (domain), the same stored effect, and the same refusal codes with nothing changed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import time

import pytest
from fastapi.testclient import TestClient
from pywbem import Uint16

from standby.api.app import create_app
from standby.domain.entities import AuthorizationEntry, ServiceSettings
from standby.domain.enums import AllowedAuthenticationType
from standby.domain.settings import AuthorizationEntryChange, ServiceSettingsChange
from tests.unit.test_cim_support import CTX, VIRT, World, embedded, make_world, service_path

SERVER = "/api/v1/replica-server"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (ServiceSettingsChange(), ServiceSettings()),
        (ServiceSettingsChange(recovery_server_enabled=True), ServiceSettings(recovery_server_enabled=True)),
        (ServiceSettingsChange(https_port=8443, http_port=8080),
         ServiceSettings(http_port=8080, https_port=8443)),
        (ServiceSettingsChange(recovery_server_enabled=False, monitoring_start_time=time(3, 0)),
         ServiceSettings(monitoring_start_time=time(3, 0))),
    ],
)
def test_a_change_keeps_what_it_does_not_name(change: ServiceSettingsChange,
                                              expected: ServiceSettings) -> None:
    assert change.applied_to(ServiceSettings()) == expected


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (AuthorizationEntryChange(), AuthorizationEntry("h", "g", "/s")),
        (AuthorizationEntryChange(storage_location="/t"), AuthorizationEntry("h", "g", "/t")),
        (AuthorizationEntryChange(trust_group=""), AuthorizationEntry("h", "", "/s")),  # "" is a value
    ],
)
def test_an_entry_change_keeps_what_it_does_not_name(change: AuthorizationEntryChange,
                                                      expected: AuthorizationEntry) -> None:
    assert change.applied_to(AuthorizationEntry("h", "g", "/s")) == expected


@pytest.fixture()
def world() -> Iterator[World]:
    yield make_world()


@pytest.fixture()
def rest(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.services)) as client:
        yield client


def _cim_settings(world: World) -> dict[str, object]:
    [instance] = world.om.enumerate_instances(VIRT, "Msvm_ReplicationServiceSettingData", CTX)
    return {name: instance[name] for name in ("RecoveryServerEnabled", "AllowedAuthenticationType",
                                              "HttpPort", "HttpsPort")}


def test_rest_sets_what_cim_then_reads(world: World, rest: TestClient) -> None:
    answer = rest.put(SERVER, json={"enabled": True, "authentication": "certificate", "https_port": 8443})
    assert answer.status_code == 200, answer.text
    assert answer.json()["authentication"] == "certificate" and answer.json()["authentication_type"] == 2
    assert _cim_settings(world) == {"RecoveryServerEnabled": True, "AllowedAuthenticationType": 2,
                                    "HttpPort": 80, "HttpsPort": 8443}
    # A second change names one setting: the others stay.
    assert rest.put(SERVER, json={"enabled": False}).json()["https_port"] == 8443
    stored = world.db.service_settings.get()
    assert stored.allowed_authentication_type is AllowedAuthenticationType.CERTIFICATE


def test_entries_through_rest_are_the_entries_cim_lists(world: World, rest: TestClient) -> None:
    added = rest.post(SERVER + "/authorization", json={"host": "*.lab", "storage": "/srv/replicas"})
    assert added.status_code == 201, added.text
    assert added.json() == {"host": "*.lab", "storage": "/srv/replicas", "trust_group": ""}
    changed = rest.put(SERVER + "/authorization/*.lab", json={"trust_group": "site-1"})
    assert changed.json() == {"host": "*.lab", "storage": "/srv/replicas", "trust_group": "site-1"}
    [entry] = world.om.enumerate_instances(VIRT, "Msvm_ReplicationAuthorizationSettingData", CTX)
    assert (entry["AllowedPrimaryHostSystem"], entry["TrustGroup"], entry["ReplicaStorageLocation"]) == (
        "*.lab", "site-1", "/srv/replicas")
    assert rest.get(SERVER).json()["authorization"] == [changed.json()]
    assert rest.delete(SERVER + "/authorization/*.lab").status_code == 204
    assert world.db.auth_entries.list() == []


def _entry_xml(host: str, trust_group: str = "") -> str:
    return embedded("Msvm_ReplicationAuthorizationSettingData", AllowedPrimaryHostSystem=host,
                    TrustGroup=trust_group, ReplicaStorageLocation="/srv/replicas")


_REFUSALS: list[tuple[str, tuple[str, str, object], tuple[str, dict[str, object]]]] = [
    ("port 0", ("put", SERVER, {"http_port": 0}),
     ("ModifyServiceSettings", {"SettingData": embedded("Msvm_ReplicationServiceSettingData",
                                                        HttpPort=Uint16(0))})),
    ("enabled without authentication", ("put", SERVER, {"enabled": True}),
     ("ModifyServiceSettings", {"SettingData": embedded("Msvm_ReplicationServiceSettingData",
                                                        RecoveryServerEnabled=True)})),
    ("a second entry for a host", ("post", SERVER + "/authorization",
                                   {"host": "hosta.lab", "storage": "/srv/replicas"}),
     ("AddAuthorizationEntry", {"AuthorizationEntry": _entry_xml("hosta.lab")})),
    ("change of an unknown entry", ("put", SERVER + "/authorization/nobody.lab", {"trust_group": "x"}),
     ("ModifyAuthorizationEntry", {"AuthorizationEntry": _entry_xml("nobody.lab", "x")})),
    ("removal of an unknown entry", ("delete", SERVER + "/authorization/nobody.lab", None),
     ("RemoveAuthorizationEntry", {"AllowedPrimaryHostSystem": "nobody.lab"})),
]


@pytest.mark.parametrize(("what", "rest_call", "cim_call"), _REFUSALS, ids=[r[0] for r in _REFUSALS])
def test_cim_and_rest_refuse_alike_and_change_nothing(world: World, rest: TestClient, what: str,
                                                      rest_call: tuple[str, str, object],
                                                      cim_call: tuple[str, dict[str, object]]) -> None:
    world.db.auth_entries.insert(AuthorizationEntry("hosta.lab", "", "/srv/replicas"))
    (verb, path, body), (method, params) = rest_call, cim_call
    before = (world.db.service_settings.get(), world.db.auth_entries.list())
    answer = rest.request(verb.upper(), path, json=body)
    assert 400 <= answer.status_code < 500, answer.text
    rest_code = answer.json()["code"]
    cim_code, _ = world.invoke(service_path(), method, **params)
    assert rest_code == cim_code != 0, what
    assert (world.db.service_settings.get(), world.db.auth_entries.list()) == before
