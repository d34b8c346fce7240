"""standby.store."""
