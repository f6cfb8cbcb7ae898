"""Every `cmn` failure is one line on stderr and an exit code, never a traceback.

    ConfigError, an invalid setting or file, a file that cannot be read   2  (fix the input)
    GatewayError: a broker unreachable or refusing, a certificate ...     1
    anything else                                                          1  (a bug: report it)

``CMN_DEBUG=1`` lets the exception through with its traceback. Messages pass through the log
redaction (URL passwords, bearer tokens, secret query values), since an exception we did not write
may quote anything it was given.
"""

from __future__ import annotations

from pydantic import ValidationError

from gateway.errors import ConfigError, GatewayError
from gateway.settings import describe_validation_error
from gateway.telemetry.redaction import redact_text

MAX_LINE = 400
DEBUG_HINT = "(CMN_DEBUG=1 shows the traceback)"


def one_line(exc: BaseException) -> tuple[str, int]:
    """What to print after ``cmn: ``, and the exit code."""
    match exc:
        case ConfigError():
            return _clip(exc.message), 2
        case GatewayError():
            prefix = "" if exc.code == "internal" else f"{exc.code}: "
            return _clip(prefix + exc.message), 1
        case ValidationError():
            return _clip(describe_validation_error(exc, exc.title)), 2
        case OSError(filename=str() as name) if exc.strerror:
            return _clip(f"{name}: {exc.strerror}"), 2
        case _:
            text = str(exc).splitlines()[0] if str(exc) else ""
            return _clip(f"unexpected {type(exc).__name__}: {text} {DEBUG_HINT}"), 1


def _clip(text: str) -> str:
    text = redact_text(" ".join(text.split()))
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 1] + "…"
