"""``cmn audit``: findings about a gateway's configuration and, with ``--live``, its peers.

findings.py     rules (stable ids, severities, fixes) and findings
context.py      what the checks read: settings, the upstreams file, the memory limit
locate.py       where a key is in the YAML (dotted path and line)
static.py       the upstreams file: access, TLS, retries, rate limits, secrets
environment.py  the environment: identity, logging, brokers, Redis, memory
certificates.py the certificate sources, through the certificate manager
live.py         sslyze TLS scan of https endpoints; guest login on the broker
report.py       table, JSON, SARIF 2.1.0
run.py, cli.py  one audit; ``cmn audit`` / ``python -m gateway.security.audit``
"""

from gateway.security.audit.findings import RULES, Finding, Location, Rule, Severity
from gateway.security.audit.run import audit_context, run_audit

__all__ = ["RULES", "Finding", "Location", "Rule", "Severity", "audit_context", "run_audit"]
