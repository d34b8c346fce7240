"""standby.peer."""
