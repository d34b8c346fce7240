"""What a virtual machine may be called: the one check every surface's definition goes through.

A VM's name (Hyper-V's ``ElementName``, at most 100 characters there too) ends up as one path component
on every replica: the replica folder is ``<VMName>_<VMGUID>`` (``domain.replica.replica_folder_name``).
A name that cannot be such a component must be refused when the VM is created, not when replication
first needs the folder on another host. So a name is, after leading and trailing whitespace is trimmed:

- 1 to ``MAX_VM_NAME`` characters;
- without ``/`` or ``\\`` (folder separators here and for Windows clients), not ``.`` or ``..``;
- without control characters (C0, DEL, C1), line or paragraph separators, or lone surrogates (which no
  file name or UTF-8 store can hold).

Anything else Hyper-V accepts (spaces inside, non-ASCII letters, punctuation) stays accepted.
"""

from __future__ import annotations

import unicodedata

from standby.domain.errors import InvalidParameter

MAX_VM_NAME = 100
_SEPARATORS = frozenset("/\\")
#: Unicode categories refused anywhere in a name: controls, line/paragraph separators, surrogates.
_REFUSED_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cs"})


def check_vm_name(name: str) -> str:
    """The name a new (or renamed) VM gets: ``name`` trimmed; ``InvalidParameter`` when it cannot be one."""
    clean = name.strip()
    if not clean or len(clean) > MAX_VM_NAME:
        raise InvalidParameter(
            f"a VM name must be 1 to {MAX_VM_NAME} printable characters, not {len(clean)}",
            message_id="BadVmName",
        )
    if any(unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in clean):
        raise InvalidParameter(
            f"a VM name must be 1 to {MAX_VM_NAME} printable characters, not {name!r}", message_id="BadVmName"
        )
    if clean in (".", "..") or any(ch in _SEPARATORS for ch in clean):
        raise InvalidParameter(
            f"{clean!r} cannot be a VM name: it names a folder on every replica, so it may not contain "
            "/ or \\ nor be . or ..",
            message_id="VmNameNotPlain",
            name=clean,
        )
    return clean
