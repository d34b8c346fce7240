"""standby.hypervisor."""
