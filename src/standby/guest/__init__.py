"""standby.guest."""
