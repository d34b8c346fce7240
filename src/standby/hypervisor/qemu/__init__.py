"""standby.hypervisor.qemu."""
