"""Shared pytest set-up: each test folder is its own marker, so layers can be chosen with ``-m``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_LAYERS = ("unit", "integration", "e2e", "interop")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = os.environ.get("STANDBY_SLOW") == "1"
    for item in items:
        parts = Path(str(item.fspath)).parts
        for layer in _LAYERS:
            if layer in parts:
                item.add_marker(getattr(pytest.mark, layer))
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow suite: set STANDBY_SLOW=1"))
