"""standby.storage."""
