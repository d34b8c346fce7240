"""standby.engine."""
