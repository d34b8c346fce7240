"""What the CIM providers work with: the clock, this host, the schema and the engine — its entries for every
method, its inventory for the instances they list (providers never open the store).

``CimRuntime`` is built once by the composition root (``daemon/compose.py``) or a test, and handed to every
provider's ``install``. Methods call ``engine`` only, so CIM answers as REST does.
"""

from __future__ import annotations

from dataclasses import dataclass

from standby.cim.schema import Schema
from standby.domain.clock import Clock
from standby.domain.entities import Host
from standby.engine.group_cycle import PointAssembler
from standby.engine.systems import Engine


@dataclass(slots=True)
class CimRuntime:
    """Everything a provider may use."""

    clock: Clock
    host: Host
    schema: Schema
    engine: Engine
    #: Collection recovery points are assembled from member points as they are listed.
    assembler: PointAssembler
