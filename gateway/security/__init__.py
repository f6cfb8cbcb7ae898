"""Security tooling that looks at a deployment from outside the request path: ``cmn audit``.

``gateway.security.audit`` reads the same settings and upstreams file as ``cmn serve`` and reports
findings (static checks of the configuration, and with ``--live`` a TLS scan of every ``https``
endpoint, the certificate sources and the broker's default account). The spec's module name
``cmn.security.audit`` is ``python -m gateway.security.audit`` here.
"""
