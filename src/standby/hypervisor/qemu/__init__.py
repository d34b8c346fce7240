"""The QEMU driver: ``QemuHypervisor`` (the port), command line, QMP adapter, block wrappers, guest agent."""

from standby.hypervisor.qemu.driver import QemuHypervisor

__all__ = ["QemuHypervisor"]
