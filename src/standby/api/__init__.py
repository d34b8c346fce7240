"""standby.api."""
