"""standby.domain."""
