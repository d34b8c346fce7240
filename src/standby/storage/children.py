"""Helper processes that must not outlive the daemon.

A qemu-nbd that serves one log's overlay, or a stopped VM's image for one cut, belongs to the daemon that
started it: if that daemon is SIGKILLed, nothing else would ever stop it, and it would keep the image open.
``bound_to_daemon(argv)`` runs the command through util-linux ``setpriv --pdeathsig KILL``, so Linux kills
it when the daemon goes away (``PR_SET_PDEATHSIG`` survives the exec; no Python runs between fork and exec).
QEMU itself is deliberately not started this way: VMs outlive a daemon restart.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

SETPRIV = "setpriv"


def bound_to_daemon(argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed so the process is killed when its parent exits (unchanged without setpriv)."""
    if shutil.which(SETPRIV) is None:
        return list(argv)
    return [SETPRIV, "--pdeathsig", "KILL", "--", *argv]
