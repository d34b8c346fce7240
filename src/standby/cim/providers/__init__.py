"""CIM providers: one module per class (or small family of classes), each with an ``install`` function.

See ``registry.py`` for the extension API; ``_base.py`` has small helpers (``FunctionProvider``, ``bind``,
``referenced_vm``, ``done``, ``job_started``) other providers may use.
"""
