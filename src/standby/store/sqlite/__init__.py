"""standby.store.sqlite."""
