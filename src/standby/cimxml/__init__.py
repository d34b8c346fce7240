"""standby.cimxml."""
