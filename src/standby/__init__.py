"""standby: VM replication and disaster-recovery failover for Linux/KVM."""

__version__ = "0.1.0"
