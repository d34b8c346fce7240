"""cloud-init NoCloud seed images: how a failed-over Linux guest on KVM gets its failover IP settings.

Hyper-V pushes ``Msvm_FailoverNetworkAdapterSettingData`` into the guest through its KVP integration
component; Linux guests on KVM read the same facts from a NoCloud seed: an ISO9660 volume labelled
``cidata`` holding ``meta-data``, ``user-data`` and ``network-config`` (version 2). The seed is built with
``genisoimage`` (Debian package ``genisoimage``; ``xorriso -as mkisofs`` or ``mkisofs`` work too) and
attached to the VM as one more disk: a qcow2 overlay whose backing file is the (read-only, ISO9660) seed, so
the QEMU driver can attach it like any disk and the seed file itself never changes.

Each seed carries a fresh ``instance-id``: cloud-init applies network configuration once per instance, so a
new failover must look like a new instance to it. Documents are written as JSON, which is YAML too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from standby.domain.entities import Nic
from standby.domain.errors import StandbyError, Unavailable
from standby.domain.failover import FailoverNetworkSettings, parse_address

#: The volume label cloud-init's NoCloud data source looks for.
SEED_LABEL = "cidata"
SEED_FILES = ("meta-data", "user-data", "network-config")
#: ISO builders we know, in order of preference, with their arguments before the output path.
_BUILDERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("genisoimage", ()),
    ("xorriso", ("-as", "mkisofs")),
    ("mkisofs", ()),
)


@dataclass(frozen=True, slots=True)
class SeedContent:
    """The three NoCloud documents, as text."""

    meta_data: str
    user_data: str
    network_config: str

    def files(self) -> dict[str, str]:
        """File name → text, as the seed volume holds them."""
        return {"meta-data": self.meta_data, "user-data": self.user_data,
                "network-config": self.network_config}


def network_config(nics: Sequence[Nic], settings: Sequence[FailoverNetworkSettings]) -> dict[str, Any]:
    """A network-config v2 document: one ``ethernets`` entry per NIC with settings, matched by MAC."""
    by_nic = {s.nic_id: s for s in settings}
    ethernets: dict[str, Any] = {}
    for nic in nics:
        item = by_nic.get(nic.nic_id)
        if item is not None:
            ethernets[nic.nic_id] = _ethernet(nic, item)
    return {"version": 2, "ethernets": ethernets}


def _ethernet(nic: Nic, settings: FailoverNetworkSettings) -> dict[str, Any]:
    entry: dict[str, Any] = {"match": {"macaddress": nic.mac.lower()}, "set-name": f"eth-{nic.nic_id}"}
    static = settings.addresses_with_prefix()
    # DHCPEnabled is IPv4 DHCP (hyperv-api §5.7); IPv6 addresses are static or come from router
    # advertisements.
    entry["dhcp4"] = settings.dhcp_enabled
    if static:
        entry["addresses"] = list(static)
    routes = [
        {"to": "::/0" if parse_address(gw).version == 6 else "0.0.0.0/0", "via": gw}
        for gw in settings.default_gateways
    ]
    if routes:
        entry["routes"] = routes
    if settings.dns_servers:
        entry["nameservers"] = {"addresses": list(settings.dns_servers)}
    return entry


def seed_content(
    instance_id: str, hostname: str, nics: Sequence[Nic], settings: Sequence[FailoverNetworkSettings]
) -> SeedContent:
    """The documents of one seed (``instance_id`` must differ per failover)."""
    meta = {"instance-id": instance_id, "local-hostname": _hostname(hostname)}
    return SeedContent(
        meta_data=json.dumps(meta, indent=2) + "\n",
        # Nothing to do beyond networking; an empty cloud-config keeps cloud-init from complaining.
        user_data="#cloud-config\n{}\n",
        network_config=json.dumps(network_config(nics, settings), indent=2) + "\n",
    )


def _hostname(name: str) -> str:
    clean = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower()).strip("-")
    return (clean or "standby-vm")[:63]


def build_seed_iso(content: SeedContent, output: Path) -> Path:
    """Write ``content`` as an ISO9660 volume labelled ``cidata`` (Joliet and Rock Ridge names)."""
    tool = find_iso_builder()
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with tempfile.TemporaryDirectory(prefix="seed-", dir=output.parent) as tmp:
        folder = Path(tmp)
        for name, text in content.files().items():
            (folder / name).write_text(text, encoding="utf-8")
        argv = [tool[0], *tool[1], "-output", str(partial), "-volid", SEED_LABEL, "-joliet", "-rock",
                "-quiet", *(str(folder / name) for name in SEED_FILES)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        reason = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise StandbyError(f"building the cloud-init seed {output} failed: {reason}",
                           message_id="SeedBuildFailed", path=str(output), reason=reason)
    partial.replace(output)
    return output


def find_iso_builder() -> tuple[str, tuple[str, ...]]:
    """The first ISO builder installed, with its leading arguments; ``Unavailable`` when none is."""
    for name, args in _BUILDERS:
        found = shutil.which(name)
        if found:
            return found, args
    raise Unavailable("no ISO9660 builder is installed (apt-get install genisoimage)",
                      message_id="ToolMissing", tool="genisoimage")


def parse_documents(files: Mapping[str, str]) -> dict[str, Any]:
    """The seed's documents parsed back (``user-data`` without its ``#cloud-config`` line)."""
    parsed: dict[str, Any] = {}
    for name, text in files.items():
        body = text.split("\n", 1)[1] if text.startswith("#cloud-config") else text
        parsed[name] = json.loads(body)
    return parsed
