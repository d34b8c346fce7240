"""standby.store: persistent state. ``Database`` lives in :mod:`standby.store.sqlite`."""

from standby.store.errors import AlreadyExists, StaleWrite

__all__ = ["AlreadyExists", "StaleWrite"]
