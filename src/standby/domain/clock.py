"""The clock everything is given: a function answering aware UTC now (the domain never reads one itself)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

Clock = Callable[[], datetime]
