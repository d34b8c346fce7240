"""standby.daemon."""
