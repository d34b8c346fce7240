"""Failover rules that need no I/O: failover IP settings (hyperv-api §5.7), the failed-over type, file layout.

``FailoverNetworkSettings`` is ``Msvm_FailoverNetworkAdapterSettingData`` in Python words, one per NIC of a
VM. ``validate_network_settings`` checks one (mandatory fields, address syntax, parallel arrays, address
family against ``ProtocolIFType``) and returns it normalized; every refusal is ``InvalidParameter`` (32773)
with message id ``FailoverNetworkInvalid`` naming the NIC and the problem.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from pathlib import PurePath

from standby.domain.enums import ProtocolIFType, ReplicationType, VirtualSystemType
from standby.domain.errors import InvalidParameter

#: Hyper-V allows at most five default gateways per NIC (hyperv-api §5.7).
MAX_GATEWAYS = 5
#: Where a replica keeps what failover makes, next to its ``disks/`` chains (docs/replication.md).
FAILOVER_DIR = "failover"
TEST_DIR = "test"
SEED_DIR = "seed"
#: The disk id of the cloud-init seed disk attached to a failed-over or test VM.
SEED_DISK_ID = "cidata"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class FailoverNetworkSettings:
    """The IP settings one NIC of a VM gets after a failover (``Msvm_FailoverNetworkAdapterSettingData``)."""

    vm_id: str
    nic_id: str
    protocol: ProtocolIFType = ProtocolIFType.IPV4
    dhcp_enabled: bool = False
    ip_addresses: tuple[str, ...] = ()
    #: Parallel to ``ip_addresses``: an IPv4 mask (255.255.255.0) or a prefix length (24, 64).
    subnets: tuple[str, ...] = ()
    default_gateways: tuple[str, ...] = ()
    dns_servers: tuple[str, ...] = ()

    @property
    def instance_id(self) -> str:
        """``Microsoft:<VMGUID>\\Nic\\<nic>\\Failover``: under the NIC's own RASD InstanceID."""
        return f"Microsoft:{self.vm_id}\\Nic\\{self.nic_id}\\Failover"

    def addresses_with_prefix(self) -> tuple[str, ...]:
        """``192.0.2.10/24``-style addresses (IPAddresses with their Subnets)."""
        return tuple(
            f"{address}/{prefix_length(address, subnet)}"
            for address, subnet in zip(self.ip_addresses, self.subnets, strict=True)
        )


def _bad(settings: FailoverNetworkSettings, detail: str) -> InvalidParameter:
    return InvalidParameter(
        f"failover network settings of NIC {settings.nic_id}: {detail}",
        message_id="FailoverNetworkInvalid",
        nic=settings.nic_id,
        detail=detail,
    )


def parse_address(text: str) -> IpAddress:
    """An IPv4 or IPv6 address; ``ValueError`` for anything else."""
    return ipaddress.ip_address(text.strip())


def prefix_length(address: str, subnet: str) -> int:
    """The prefix length of ``subnet`` (mask or length) for ``address``; ``ValueError`` if it is neither."""
    ip = parse_address(address)
    text = subnet.strip().removeprefix("/")
    if text.isdigit():
        length = int(text)
        if not 0 <= length <= ip.max_prefixlen:
            raise ValueError(f"prefix length {length} out of range for {address}")
        return length
    if ip.version != 4:
        raise ValueError(f"IPv6 subnet {subnet!r} must be a prefix length")
    return ipaddress.IPv4Network(f"0.0.0.0/{text}").prefixlen


def _family_ok(protocol: ProtocolIFType, ip: IpAddress) -> bool:
    if protocol is ProtocolIFType.IPV4:
        return ip.version == 4
    if protocol is ProtocolIFType.IPV6:
        return ip.version == 6
    return True


def validate_network_settings(settings: FailoverNetworkSettings) -> FailoverNetworkSettings:
    """Check one NIC's settings and return them with addresses normalized; ``InvalidParameter`` otherwise."""
    if not settings.dhcp_enabled and not settings.ip_addresses:
        raise _bad(settings, "IPAddresses must list at least one address unless DHCPEnabled is true")
    if len(settings.subnets) != len(settings.ip_addresses):
        raise _bad(settings, f"Subnets must be parallel to IPAddresses ({len(settings.ip_addresses)} "
                             f"addresses, {len(settings.subnets)} subnets)")
    if len(settings.default_gateways) > MAX_GATEWAYS:
        raise _bad(settings, f"at most {MAX_GATEWAYS} DefaultGateways are allowed")
    addresses = [_checked(settings, a, "IPAddresses") for a in settings.ip_addresses]
    for address, subnet in zip(addresses, settings.subnets, strict=True):
        try:
            prefix_length(address, subnet)
        except ValueError:
            raise _bad(settings, f"subnet {subnet!r} does not fit address {address}") from None
    gateways = [_checked(settings, g, "DefaultGateways") for g in settings.default_gateways]
    dns = [_checked(settings, d, "DNSServers", family=False) for d in settings.dns_servers]
    return replace(
        settings,
        ip_addresses=tuple(addresses),
        subnets=tuple(s.strip() for s in settings.subnets),
        default_gateways=tuple(gateways),
        dns_servers=tuple(dns),
    )


def _checked(settings: FailoverNetworkSettings, text: str, field: str, *, family: bool = True) -> str:
    try:
        ip = parse_address(text)
    except ValueError:
        raise _bad(settings, f"{field} holds {text!r}, which is not an IP address") from None
    if family and not _family_ok(settings.protocol, ip):
        raise _bad(settings, f"{field} holds {ip}, which does not fit ProtocolIFType "
                             f"{int(settings.protocol)}")
    return str(ip)


def failed_over_type(kind: VirtualSystemType) -> ReplicationType:
    """FailedOverReplicationType for a failover to a point of ``kind`` (hyperv-api §6.4)."""
    if kind is VirtualSystemType.REPLICA_PLANNED_FAILOVER:
        return ReplicationType.PLANNED
    if kind is VirtualSystemType.REPLICA_APPLICATION_CONSISTENT:
        return ReplicationType.APPLICATION_CONSISTENT
    return ReplicationType.REGULAR


def replica_dir_of(image: str) -> PurePath:
    """The replica's folder, from a point image ``<replica>/disks/<disk_id>/rp-N.qcow2``.

    An image outside that layout (an imported one) is its own folder's replica: failover files go beside it.
    """
    path = PurePath(image)
    if path.parent.parent.name == "disks":
        return path.parent.parent.parent
    return path.parent


def name_of_test_vm(replica_name: str) -> str:
    """The name of a replica's test VM, as Hyper-V names it (hyperv-api §3.2)."""
    return f"{replica_name} - Test"
