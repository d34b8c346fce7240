"""standby.cli."""
