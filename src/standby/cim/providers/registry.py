"""The provider registry: who yields the instances of a class, and who carries out its methods.

Providers and method handlers are found by class name (case-insensitive) per namespace. A class may have
several instance providers (e.g. the VM provider yields realized VSSDs while the recovery-point provider
yields Replica snapshots of the same class); their instances are concatenated. Method handlers are looked
up on the target's class, then on its superclasses, so a handler registered for a base class serves its
subclasses.

Extending from another module (the API other owners use)
------------------------------------------------------

Put a module in ``standby/cim/providers/`` that defines::

    def install(registry: ProviderRegistry, runtime: CimRuntime) -> None:
        registry.add_provider(MyProvider(runtime))                      # instances of a class
        registry.add_method("Msvm_ComputerSystem", "RequestStateChange",  # a method of a class you
                            handler)                                     #   do not own

``build_registry(runtime)`` imports every module of this package and calls its ``install``; nothing else
needs registering. A handler is ``Callable[[MethodCall], MethodResult]``: ``call.params`` holds the typed
in-parameters by their declared names (absent ones are None; REFs are ``CIMInstanceName`` already checked to
name an existing instance of the declared class, whose instance is ``call.referenced(name)``; embedded
instances are parsed ``CIMInstance`` objects of the declared class). Return ``MethodResult(code, out)`` with
out-values in plain Python (``CIMInstanceName`` for REFs, ``CIMInstance`` for embedded instances — the
dispatcher serializes them), or raise a ``standby.domain.errors.StandbyError``: the dispatcher maps its
``code`` to the method's return value (standard codes, or the CIM RequestStateChange codes where the method
uses those). Registering the same method twice is an error (``DuplicateHandlerError``), so two owners notice.

An instance provider has ``classname``, ``namespaces`` (None = every namespace that has the class) and
``instances(namespace, ctx) -> Iterable[CIMInstance]`` returning full instances with ``path`` set (build them
with ``standby.cim.instances.make_instance``). Keys lookups, association traversal and property filtering are
done by the object manager on top of ``instances``.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pywbem import CIMClassName, CIMInstance, CIMInstanceName

from standby.cim.backend import RequestContext
from standby.cim.runtime import CimRuntime

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MethodCall:
    """One method invocation, with parameters already typed and checked by the dispatcher."""

    namespace: str
    classname: str
    method: str
    target: CIMInstanceName | CIMClassName
    target_instance: CIMInstance | None
    params: Mapping[str, Any]
    referenced_instances: Mapping[str, CIMInstance]
    ctx: RequestContext
    runtime: CimRuntime

    def param(self, name: str) -> Any:
        """The typed value of an in-parameter (None when the caller left it out)."""
        for key, value in self.params.items():
            if key.lower() == name.lower():
                return value
        return None

    def referenced(self, name: str) -> CIMInstance | None:
        """The instance a REF in-parameter names (None when the caller passed NULL)."""
        for key, value in self.referenced_instances.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass(slots=True)
class MethodResult:
    """What a handler answers: the return value in the method's own code table, and out-parameters."""

    return_value: int
    out: dict[str, Any] = field(default_factory=dict)


MethodHandler = Callable[[MethodCall], MethodResult]


class InstanceProvider(Protocol):
    """Yields the instances of one class (not its subclasses)."""

    @property
    def classname(self) -> str:
        """The class whose instances this provider yields."""
        ...

    @property
    def namespaces(self) -> frozenset[str] | None:
        """Namespaces served; None = every namespace whose schema has the class."""
        ...

    def instances(self, namespace: str, ctx: RequestContext) -> Iterable[CIMInstance]:
        """Every instance, each with its ``path`` set."""
        ...


class DuplicateHandlerError(ValueError):
    """Two modules registered a handler for the same class method."""


def _serves(namespaces: frozenset[str] | None, namespace: str) -> bool:
    return namespaces is None or namespace.lower() in {ns.lower() for ns in namespaces}


class ProviderRegistry:
    """Instance providers and method handlers by class name (case-insensitive)."""

    def __init__(self) -> None:
        self._providers: dict[str, list[InstanceProvider]] = {}
        self._methods: dict[tuple[str, str], list[tuple[frozenset[str] | None, MethodHandler]]] = {}

    def add_provider(self, provider: InstanceProvider) -> None:
        """Register an instance provider (several may serve one class)."""
        self._providers.setdefault(provider.classname.lower(), []).append(provider)

    def add_method(
        self,
        classname: str,
        method: str,
        handler: MethodHandler,
        *,
        namespaces: frozenset[str] | None = None,
    ) -> None:
        """Register the handler of ``classname.method``; a second one for the same namespaces is refused."""
        key = (classname.lower(), method.lower())
        entries = self._methods.setdefault(key, [])
        for existing, _ in entries:
            if existing is None or namespaces is None or existing & namespaces:
                raise DuplicateHandlerError(f"{classname}.{method} already has a handler")
        entries.append((namespaces, handler))

    def providers(self, namespace: str, classname: str) -> list[InstanceProvider]:
        """The providers of exactly this class in ``namespace``."""
        return [p for p in self._providers.get(classname.lower(), []) if _serves(p.namespaces, namespace)]

    def method_handler(self, namespace: str, class_chain: Iterable[str], method: str) -> MethodHandler | None:
        """The handler of ``method`` on the first class of ``class_chain`` (class, ancestors) with one."""
        for classname in class_chain:
            for namespaces, handler in self._methods.get((classname.lower(), method.lower()), []):
                if _serves(namespaces, namespace):
                    return handler
        return None

    def has_providers(self, classname: str) -> bool:
        """Whether any provider serves ``classname`` in some namespace."""
        return bool(self._providers.get(classname.lower()))


Installer = Callable[[ProviderRegistry, CimRuntime], None]


def build_registry(runtime: CimRuntime, *, package: str = "standby.cim.providers") -> ProviderRegistry:
    """A registry with every provider module of ``package`` installed (alphabetical module order).

    A module that fails to import or install is logged and skipped, so one broken provider does not take
    the whole CIM surface down; ``DuplicateHandlerError`` is not swallowed (two owners claim one method).
    """
    registry = ProviderRegistry()
    root = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda i: i.name):
        if info.name == "registry" or info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{package}.{info.name}")
        except Exception:
            log.exception("cim provider module %s failed to import; its classes stay empty", info.name)
            continue
        install: Installer | None = getattr(module, "install", None)
        if install is None:
            continue
        try:
            install(registry, runtime)
        except DuplicateHandlerError:
            raise
        except Exception:
            log.exception("cim provider module %s failed to install", info.name)
    return registry
