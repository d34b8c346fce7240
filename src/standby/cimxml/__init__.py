"""CIM-XML over HTTP (DMTF DSP0200/DSP0201) at ``POST /cimom``, on top of ``cim.backend.ObjectManager``.

``create_app(object_manager, verify_password)`` returns the ASGI app the daemon mounts. Modules:
``app`` (HTTP: method, auth, headers, size, language), ``server`` (one request body → one response body),
``intrinsic`` / ``extrinsic`` (the operations), ``params`` (IPARAMVALUE checks), ``context`` (namespaces and
paths), ``wql`` (ExecQuery), ``wire`` (the only user of pywbem's private parser and builders), ``auth``
(Basic), ``language`` (Accept-Language).
"""

from standby.cimxml.app import DEFAULT_MAX_BODY, CimXmlApp, create_app

__all__ = ["DEFAULT_MAX_BODY", "CimXmlApp", "create_app"]
