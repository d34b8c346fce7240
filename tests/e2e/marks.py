"""``needs(...)``: skip a test only while an engine use case it drives is not implemented yet.

The condition is ``engine.operations.IMPLEMENTED_OPERATIONS``, so every test switches itself on when the
piece lands; the skip reason names what is missing.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from standby.engine.operations import UseCase
from standby.testing.scenario import missing


def needs(*groups: Iterable[UseCase]) -> pytest.MarkDecorator:
    """Skip unless every use case of every group is implemented."""
    absent = sorted({name for group in groups for name in missing(*group)})
    return pytest.mark.skipif(bool(absent), reason=f"not implemented yet: {', '.join(absent)}")
