"""What the CIM providers work with: the store (for the instances they list), the clock, this host, the
schema and the engine entries (for every method).

``CimRuntime`` is built once by the composition root (``daemon/compose.py``) or a test, and handed to every
provider's ``install``. Methods call ``engine`` only, so CIM answers as REST does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from standby.cim.schema import Schema
from standby.domain.entities import Host
from standby.engine.group_cycle import PointAssembler
from standby.engine.systems import Engine
from standby.store.sqlite import Database

Clock = Callable[[], datetime]


@dataclass(slots=True)
class CimRuntime:
    """Everything a provider may use."""

    db: Database
    clock: Clock
    host: Host
    schema: Schema
    engine: Engine
    #: Collection recovery points are assembled from member points as they are listed.
    assembler: PointAssembler
