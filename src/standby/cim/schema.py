"""The compiled CIM schema: our MOF (``cim/mof/*.mof``) as pywbem ``CIMClass`` objects, per namespace.

The MOF is compiled once per process (``load_schema()`` is cached) with pywbem's MOF compiler over an
in-memory repository (``pywbem_mock``), which also resolves inheritance: every class we hand out carries its
inherited properties and methods (``propagated=True``, ``class_origin`` set).

Which files make up which namespace is the table ``NAMESPACE_FILES``; files are compiled in that order, so a
class may only use classes of earlier files. Other owners add files without touching this table:

- ``vm*.mof`` (the VM life-cycle owner) is compiled after ours into ``root/virtualization/v2``; it may add
  classes but must not redefine ours.
- ``interop.mof`` (the CIM-XML owner) is compiled into the Interop namespace after ``qualifiers.mof`` and
  ``cim_core.mof``, so it can derive from CIM_ManagedElement, CIM_Service, CIM_System, ….
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pywbem
import pywbem_mock
from pywbem import CIMClass, CIMError

from standby.cim.backend import CLUSTER_NAMESPACE, INTEROP_NAMESPACE, VIRTUALIZATION_NAMESPACE

MOF_DIR = Path(__file__).parent / "mof"

_BASE = ("qualifiers.mof", "cim_core.mof")
#: The MOF files of each namespace, in compile order (besides the globbed extras, see ``_EXTRA_GLOBS``).
NAMESPACE_FILES: dict[str, tuple[str, ...]] = {
    VIRTUALIZATION_NAMESPACE: (
        *_BASE,
        "replication_data.mof",
        "system.mof",
        "virtual_system.mof",
        "replication_service.mof",
        "collections.mof",
    ),
    CLUSTER_NAMESPACE: (*_BASE, "replication_data.mof", "system.mof", "collections.mof", "cluster.mof"),
    INTEROP_NAMESPACE: _BASE,
}
_EXTRA_GLOBS: dict[str, str] = {VIRTUALIZATION_NAMESPACE: "vm*.mof", INTEROP_NAMESPACE: "interop.mof"}


class SchemaError(RuntimeError):
    """Our own MOF does not compile: a programming error, reported with the file and pywbem's reason."""


@dataclass(frozen=True, slots=True)
class PropertySpec:
    """What building an instance needs to know about one property."""

    name: str
    type: str
    is_array: bool
    reference_class: str | None
    embedded_object: str | None
    is_key: bool


@dataclass(frozen=True, slots=True)
class _Namespace:
    name: str
    classes: dict[str, CIMClass]  # lower-case class name -> resolved class


class Schema:
    """Resolved classes of every namespace; class and namespace names are case-insensitive."""

    def __init__(self, namespaces: dict[str, dict[str, CIMClass]]) -> None:
        self._namespaces = {
            name.lower(): _Namespace(name, {cn.lower(): cls for cn, cls in classes.items()})
            for name, classes in namespaces.items()
        }
        # The schema never changes after compilation, so derived lookups are memoized.
        self._subclass_cache: dict[tuple[str, str | None, bool], tuple[CIMClass, ...]] = {}
        self._spec_cache: dict[tuple[str, str], tuple[PropertySpec, ...]] = {}

    @property
    def namespaces(self) -> tuple[str, ...]:
        """The namespace names, as we spell them."""
        return tuple(ns.name for ns in self._namespaces.values())

    def canonical_namespace(self, namespace: str) -> str | None:
        """Our spelling of ``namespace`` (any case, ``\\`` or ``/``, leading ``/``); None when unknown."""
        key = namespace.replace("\\", "/").strip("/").lower()
        if key == "root/interop":
            key = INTEROP_NAMESPACE
        found = self._namespaces.get(key)
        return found.name if found else None

    def _ns(self, namespace: str) -> _Namespace:
        canonical = self.canonical_namespace(namespace)
        if canonical is None:
            raise CIMError(pywbem.CIM_ERR_INVALID_NAMESPACE, f"Namespace {namespace!r} does not exist")
        return self._namespaces[canonical.lower()]

    def find_class(self, namespace: str, classname: str) -> CIMClass | None:
        """The resolved class, or None when the namespace has no such class (CIMError for a bad namespace)."""
        return self._ns(namespace).classes.get(classname.lower())

    def get_class(self, namespace: str, classname: str) -> CIMClass:
        """The resolved class; CIMError CIM_ERR_NOT_FOUND when unknown (DSP0200 GetClass)."""
        cls = self.find_class(namespace, classname)
        if cls is None:
            raise CIMError(pywbem.CIM_ERR_NOT_FOUND, f"Class {classname!r} does not exist in {namespace}")
        return cls

    def classes(self, namespace: str) -> Iterator[CIMClass]:
        """Every class of the namespace, in compile order (superclasses first)."""
        return iter(self._ns(namespace).classes.values())

    def subclasses(self, namespace: str, classname: str | None, *, deep: bool = True) -> list[CIMClass]:
        """Subclasses of ``classname`` (deep: all descendants), or the top classes when it is None."""
        key = (namespace.lower(), classname.lower() if classname else None, deep)
        if key not in self._subclass_cache:
            self._subclass_cache[key] = tuple(self._subclasses(namespace, classname, deep))
        return list(self._subclass_cache[key])

    def _subclasses(self, namespace: str, classname: str | None, deep: bool) -> list[CIMClass]:
        ns = self._ns(namespace)
        if classname is None:
            tops = [c for c in ns.classes.values() if not c.superclass]
            if not deep:
                return tops
            return list(ns.classes.values())
        if classname.lower() not in ns.classes:
            raise CIMError(pywbem.CIM_ERR_INVALID_CLASS, f"Class {classname!r} does not exist in {namespace}")
        if deep:
            return [c for c in ns.classes.values() if c.classname.lower() != classname.lower()
                    and self.is_subclass(namespace, c.classname, classname)]
        return [c for c in ns.classes.values() if (c.superclass or "").lower() == classname.lower()]

    def is_subclass(self, namespace: str, classname: str, ancestor: str) -> bool:
        """Whether ``classname`` is ``ancestor`` or derives from it (False when either is unknown)."""
        ns = self._ns(namespace)
        target = ancestor.lower()
        current: str | None = classname.lower()
        while current:
            if current == target:
                return True
            cls = ns.classes.get(current)
            current = cls.superclass.lower() if cls is not None and cls.superclass else None
        return False

    def superclasses(self, namespace: str, classname: str) -> list[str]:
        """``classname`` and its ancestors, nearest first."""
        ns = self._ns(namespace)
        chain: list[str] = []
        cls = ns.classes.get(classname.lower())
        while cls is not None:
            chain.append(cls.classname)
            cls = ns.classes.get(cls.superclass.lower()) if cls.superclass else None
        return chain

    def property_specs(self, namespace: str, classname: str) -> tuple[PropertySpec, ...]:
        """Name, type and flags of every property of the class, keys marked (memoized)."""
        key = (namespace.lower(), classname.lower())
        if key not in self._spec_cache:
            cls = self.get_class(namespace, classname)
            self._spec_cache[key] = tuple(
                PropertySpec(p.name, p.type, p.is_array, p.reference_class, p.embedded_object,
                             bool(p.qualifiers.get("Key") and p.qualifiers["Key"].value))
                for p in cls.properties.values()
            )
        return self._spec_cache[key]

    def is_association(self, namespace: str, classname: str) -> bool:
        """Whether the class carries the Association qualifier."""
        cls = self.find_class(namespace, classname)
        return cls is not None and bool(_qualifier(cls, "Association"))


def _qualifier(cls: CIMClass, name: str) -> object:
    qual = cls.qualifiers.get(name)
    return qual.value if qual is not None else None


def _files_for(namespace: str, mof_dir: Path) -> list[Path]:
    files = [mof_dir / name for name in NAMESPACE_FILES[namespace]]
    pattern = _EXTRA_GLOBS.get(namespace)
    if pattern:
        files.extend(sorted(p for p in mof_dir.glob(pattern) if p.name not in NAMESPACE_FILES[namespace]))
    return files


def compile_schema(mof_dir: Path = MOF_DIR, namespaces: Sequence[str] | None = None) -> Schema:
    """Compile the MOF of each namespace into resolved classes; SchemaError names the failing file."""
    conn = pywbem_mock.FakedWBEMConnection()
    result: dict[str, dict[str, CIMClass]] = {}
    for namespace in namespaces or tuple(NAMESPACE_FILES):
        conn.add_namespace(namespace)
        for path in _files_for(namespace, mof_dir):
            try:
                conn.compile_mof_string(path.read_text(encoding="utf-8"), namespace=namespace)
            except (pywbem.Error, OSError) as exc:
                raise SchemaError(f"{path.name} does not compile into {namespace}: {exc}") from exc
        store = conn.cimrepository.get_class_store(namespace)
        result[namespace] = {name: store.get(name).copy() for name in store.iter_names()}
    return Schema(result)


@functools.cache
def load_schema() -> Schema:
    """The schema of every namespace, compiled once per process."""
    return compile_schema()
