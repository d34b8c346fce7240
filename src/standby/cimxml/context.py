"""What every operation needs: the object manager, who asks, our host name, and namespace/path rules."""

from __future__ import annotations

from dataclasses import dataclass, field

from pywbem import CIM_ERR_INVALID_NAMESPACE, CIMClassName, CIMInstanceName, CIMMethod

from standby.cim.backend import INTEROP_NAMESPACE, ObjectManager, RequestContext
from standby.cim.errors import CimFault

#: Names clients use for the Interop namespace besides ours (pywbem tries ``interop`` then ``root/interop``).
INTEROP_ALIASES = ("interop", "root/interop")


def _norm(namespace: str) -> str:
    return namespace.strip().strip("/").replace("\\", "/").lower()


@dataclass(frozen=True, slots=True)
class Operation:
    """One request's view of the server; built per request by the HTTP layer."""

    om: ObjectManager
    ctx: RequestContext
    host: str
    #: Method declarations by (namespace, class, method), lower-case; shared by the server's requests.
    declarations: dict[tuple[str, str, str], CIMMethod | None] = field(default_factory=dict)

    def find_namespace(self, namespace: str) -> str | None:
        """The served spelling of ``namespace`` (any case, slashes trimmed, Interop aliases), or None."""
        wanted = _norm(namespace)
        served = {_norm(ns): ns for ns in self.om.namespaces()}
        if wanted in served:
            return served[wanted]
        if wanted in INTEROP_ALIASES:
            for alias in INTEROP_ALIASES:
                if alias in served:
                    return served[alias]
            return served.get(_norm(INTEROP_NAMESPACE))
        return None

    def namespace(self, namespace: str) -> str:
        """Like :meth:`find_namespace`, but CIM_ERR_INVALID_NAMESPACE when it is not served."""
        found = self.find_namespace(namespace)
        if found is None:
            raise CimFault(CIM_ERR_INVALID_NAMESPACE, f"Namespace {namespace!r} does not exist",
                           message_id="CimNamespaceNotFound", namespace=namespace)
        return found

    def local_path(self, path: CIMInstanceName, namespace: str) -> CIMInstanceName:
        """A path as the object manager wants it: no host, the served namespace (``namespace`` if none).

        A path into a namespace we do not serve keeps its namespace, so the object manager reports it as a
        reference to nothing (32773) rather than this layer guessing.
        """
        local = path.copy()
        local.host = None
        local.namespace = self.find_namespace(path.namespace) if path.namespace else namespace
        if local.namespace is None:
            local.namespace = path.namespace
        return local

    def local_class_path(self, path: CIMClassName, namespace: str) -> CIMClassName:
        """The class-path counterpart of :meth:`local_path`."""
        local = path.copy()
        local.host = None
        local.namespace = (
            self.find_namespace(path.namespace) if path.namespace else namespace
        ) or path.namespace
        return local

    def full_path(self, path: CIMInstanceName, namespace: str) -> CIMInstanceName:
        """A path as a response carries it in ``INSTANCEPATH``: host and namespace filled in."""
        full = path.copy()
        full.namespace = full.namespace or namespace
        full.host = full.host or self.host
        return full
