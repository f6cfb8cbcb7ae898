"""``python -m gateway.security.audit``: the same command as ``cmn audit``."""

from gateway.security.audit.cli import main

main()
