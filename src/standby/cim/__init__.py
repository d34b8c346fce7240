"""standby.cim."""
