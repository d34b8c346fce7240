"""A two-host test site on one machine, for the end-to-end tests and the demo (``python -m
standby.testing.demo``): certificates (``pki``), addresses or network namespaces (``network``), real daemons
and their clients (``host``), the pair with authorization and teardown (``cluster``), the CIM calls
(``cim``) and the story steps (``scenario``).
"""
