"""What a Redis error means for kube2redis, decided in one place, by error code.

Redis prefixes every error reply with a code (``OOM``, ``READONLY``, ...), also
for errors raised by a command inside a Lua script; redis-py maps some codes to
classes and keeps the code in ``status_code``, and leaves others (``MISCONF``,
``BUSY``) as a plain ResponseError whose text starts with the code. Either way
the code decides, never a substring of the message.

| class       | codes / exceptions                                 | callers                  |
|-------------|----------------------------------------------------|--------------------------|
| unreachable | ConnectionError, TimeoutError                      | reconnect; spool; retry  |
| refusal     | OOM READONLY LOADING MISCONF BUSY NOPERM           | the server's condition:  |
|             | MASTERDOWN CLUSTERDOWN TRYAGAIN NOREPLICAS         | back off, retry the same |
|             |                                                    | work, never blame it     |
| noscript    | NOSCRIPT                                           | load the scripts, resend |
| entry       | anything else (WRONGTYPE, ERR from our script, ..) | the entry's own fault    |
"""

import enum
from typing import Final

import redis
from redis.exceptions import NoScriptError


class ErrorClass(enum.Enum):
    UNREACHABLE = "unreachable"
    REFUSAL = "refusal"
    NOSCRIPT = "noscript"
    ENTRY = "entry"


# Conditions of the server (memory, role, persistence, a long script, ACLs, a
# cluster in flux), not of the command that met them: the same command succeeds
# once the condition ends.
REFUSAL_CODES: Final = frozenset(
    {
        "OOM",
        "READONLY",
        "LOADING",
        "MISCONF",
        "BUSY",
        "NOPERM",
        "MASTERDOWN",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "NOREPLICAS",
    }
)


def error_code(exc: BaseException) -> str:
    """The Redis error code of an error reply ("" if it has none)."""
    code = getattr(exc, "status_code", None)
    if code:
        return str(code)
    head = str(exc).split(" ", 1)[0]
    return head if head.isupper() and head.isalpha() else ""


def classify(exc: BaseException) -> ErrorClass:
    """Which row of the table above exc belongs to."""
    if isinstance(exc, NoScriptError):
        return ErrorClass.NOSCRIPT
    code = error_code(exc)
    if code in REFUSAL_CODES:
        return ErrorClass.REFUSAL
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return ErrorClass.UNREACHABLE
    return ErrorClass.ENTRY


def is_refusal(exc: BaseException) -> bool:
    return classify(exc) is ErrorClass.REFUSAL


def describe(exc: BaseException) -> str:
    """One line for logs and /readyz: the code and Redis's own words."""
    code = error_code(exc)
    text = str(exc)
    if code and not text.startswith(code):
        text = f"{code} {text}"
    return text.splitlines()[0][:200] if text else type(exc).__name__
