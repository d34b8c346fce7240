"""Failover rules without I/O (domain/failover.py), the failover store tables, and seed documents."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from standby.domain.entities import Nic, RecoveryPoint, VirtualMachine
from standby.domain.enums import ProtocolIFType, ReplicationType, VirtualSystemType
from standby.domain.errors import InvalidParameter
from standby.domain.failover import (
    FailoverNetworkSettings,
    failed_over_type,
    name_of_test_vm,
    prefix_length,
    replica_dir_of,
    validate_network_settings,
)
from standby.storage.seed import network_config, parse_documents, seed_content
from standby.store.sqlite import Database
from standby.store.sqlite.repos_failover import PointHold

NOW = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)


def settings(**fields: object) -> FailoverNetworkSettings:
    base: dict[str, object] = {"vm_id": "VM", "nic_id": "n0", "ip_addresses": ("192.0.2.10",),
                               "subnets": ("255.255.255.0",)}
    base.update(fields)
    return FailoverNetworkSettings(**base)  # type: ignore[arg-type]


def test_valid_settings_are_normalized() -> None:
    checked = validate_network_settings(settings(
        ip_addresses=(" 192.0.2.10",), subnets=("24 ",), default_gateways=("192.0.2.1",),
        dns_servers=("2001:db8::53",)))
    assert checked.ip_addresses == ("192.0.2.10",)
    assert checked.subnets == ("24",)
    assert checked.addresses_with_prefix() == ("192.0.2.10/24",)
    assert checked.dns_servers == ("2001:db8::53",)  # DNS may be of either family


def test_ipv6_settings_take_prefix_lengths() -> None:
    checked = validate_network_settings(settings(
        protocol=ProtocolIFType.IPV6, ip_addresses=("2001:DB8::10",), subnets=("/64",),
        default_gateways=("fe80::1",)))
    assert checked.addresses_with_prefix() == ("2001:db8::10/64",)


def test_dhcp_needs_no_address() -> None:
    checked = validate_network_settings(settings(dhcp_enabled=True, ip_addresses=(), subnets=()))
    assert checked.dhcp_enabled and checked.ip_addresses == ()


@pytest.mark.parametrize(("fields", "words"), [
    ({"ip_addresses": (), "subnets": ()}, "at least one address"),
    ({"ip_addresses": ("192.0.2.300",)}, "not an IP address"),
    ({"ip_addresses": ("192.0.2.10", "192.0.2.11")}, "parallel"),
    ({"subnets": ("255.0.255.0",)}, "does not fit"),
    ({"subnets": ("33",)}, "does not fit"),
    ({"default_gateways": ("192.0.2.1",) * 6}, "at most 5"),
    ({"default_gateways": ("gateway",)}, "DefaultGateways"),
    ({"dns_servers": ("8.8.8",)}, "DNSServers"),
    ({"protocol": ProtocolIFType.IPV6}, "ProtocolIFType"),
    ({"ip_addresses": ("2001:db8::1",), "subnets": ("255.255.255.0",),
      "protocol": ProtocolIFType.IPV4_IPV6}, "does not fit"),
])
def test_bad_settings_are_invalid_parameters(fields: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        validate_network_settings(settings(**fields))
    assert caught.value.code == 32773
    assert caught.value.message_id == "FailoverNetworkInvalid"
    assert words in str(caught.value)


def test_prefix_length_of_masks_and_lengths() -> None:
    assert prefix_length("10.0.0.1", "255.255.0.0") == 16
    assert prefix_length("10.0.0.1", "8") == 8
    with pytest.raises(ValueError):
        prefix_length("2001:db8::1", "ffff::")


def test_failed_over_type_follows_the_point_kind() -> None:
    assert failed_over_type(VirtualSystemType.REPLICA_STANDARD) is ReplicationType.REGULAR
    assert failed_over_type(VirtualSystemType.REPLICA_APPLICATION_CONSISTENT) is \
        ReplicationType.APPLICATION_CONSISTENT
    assert failed_over_type(VirtualSystemType.REPLICA_PLANNED_FAILOVER) is ReplicationType.PLANNED


def test_replica_dir_and_names() -> None:
    assert str(replica_dir_of("/srv/r/web_1A/disks/d0/rp-0000000003.qcow2")) == "/srv/r/web_1A"
    assert str(replica_dir_of("/srv/images/base.qcow2")) == "/srv/images"
    assert name_of_test_vm("web01") == "web01 - Test"


def test_network_config_v2_matches_nics_by_mac() -> None:
    nics = (Nic("n0", "52:54:00:AA:BB:CC"), Nic("n1", "52:54:00:00:00:01"))
    doc = network_config(nics, [validate_network_settings(settings(
        default_gateways=("192.0.2.1",), dns_servers=("192.0.2.53", "192.0.2.54")))])
    assert doc == {"version": 2, "ethernets": {"n0": {
        "match": {"macaddress": "52:54:00:aa:bb:cc"}, "set-name": "eth-n0", "dhcp4": False,
        "addresses": ["192.0.2.10/24"], "routes": [{"to": "0.0.0.0/0", "via": "192.0.2.1"}],
        "nameservers": {"addresses": ["192.0.2.53", "192.0.2.54"]}}}}


def test_seed_documents_parse_back() -> None:
    content = seed_content("id-1", "Web 01_a", (Nic("n0", "52:54:00:aa:bb:cc"),),
                           [validate_network_settings(settings(dhcp_enabled=True, ip_addresses=(),
                                                               subnets=()))])
    docs = parse_documents(content.files())
    assert docs["meta-data"] == {"instance-id": "id-1", "local-hostname": "web-01-a"}
    assert docs["user-data"] == {}
    assert content.user_data.startswith("#cloud-config\n")
    assert docs["network-config"]["ethernets"]["n0"]["dhcp4"] is True


def test_store_keeps_settings_holds_and_test_times() -> None:
    db = Database.memory()
    db.vms.insert(VirtualMachine("VM", "web", 256, 1, nics=(Nic("n0", "52:54:00:00:00:01"),)))
    db.vms.insert(VirtualMachine("TEST", "web - Test", 256, 1))
    item = validate_network_settings(settings(dns_servers=("192.0.2.53",)))
    db.failover_network.replace_all("VM", [item])
    assert db.failover_network.list(vm_id="VM") == [item]
    db.failover_network.replace_all("VM", [])
    assert db.failover_network.list(vm_id="VM") == []

    db.recovery_points.insert(RecoveryPoint("P1", "VM", 1, NOW, VirtualSystemType.REPLICA_STANDARD))
    db.recovery_points.insert(RecoveryPoint("P2", "VM", 2, NOW, VirtualSystemType.REPLICA_STANDARD))
    assert db.point_holds.oldest_held_sequence("VM") is None
    db.point_holds.hold(PointHold("P2", "TEST", "test", NOW))
    db.point_holds.hold(PointHold("P2", "TEST", "test", NOW))
    assert db.point_holds.is_held("P2") and not db.point_holds.is_held("P1")
    assert db.point_holds.oldest_held_sequence("VM") == 2
    db.vms.delete("TEST")  # the hold goes with its holder
    assert db.point_holds.list() == []
    db.point_holds.hold(PointHold("P1", "VM", "failover", NOW))
    assert db.point_holds.release("VM", "test") == 0
    assert db.point_holds.release("VM") == 1

    assert db.test_failovers.last_time("VM") is None
    db.test_failovers.record("VM", NOW, "TEST")
    assert db.test_failovers.last_time("VM") == NOW
