"""What a Redis error means for kube2redis, decided in one place, by error code.

Redis prefixes every error reply with a code (``OOM``, ``READONLY``, ...), also
for errors raised by a command inside a Lua script; redis-py maps some codes to
classes and keeps the code in ``status_code``, and leaves others (``MISCONF``,
``BUSY``) as a plain ResponseError whose text starts with the code. Either way
the code decides, never a substring of the message. Two exceptions, both
handled in error_code(): a redis-py pipeline rewrites the message to
"Command # N (...) of pipeline caused error: CODE ...", and Redis answers an
ACL denial inside a script with ``ERR`` (7.0: "The user executing the script
can't ...", 7.2: "ACL failure in script: ..."), which is a NOPERM all the same.

| class       | codes / exceptions                                 | callers                  |
|-------------|----------------------------------------------------|--------------------------|
| unreachable | ConnectionError, TimeoutError                      | reconnect; spool; retry  |
| refusal     | OOM READONLY LOADING MISCONF BUSY NOPERM           | the server's condition:  |
|             | MASTERDOWN CLUSTERDOWN TRYAGAIN NOREPLICAS         | back off, retry the same |
|             | MOVED ASK                                          | work, never blame it     |
| noscript    | NOSCRIPT                                           | load the scripts, resend |
| entry       | anything else (WRONGTYPE, ERR from our script, ..) | the entry's own fault    |

LOADING is a refusal although redis-py raises it as a ConnectionError
(BusyLoadingError): the code is looked at first.
"""

import enum
from typing import Final

import redis
from redis.exceptions import (
    BusyLoadingError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
)


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
        # The slot moved (a failover, a resharding): the pool re-reads the slot map.
        "MOVED",
        "ASK",
        "NOREPLICAS",
    }
)

# For an exception of redis-py's mapped classes built without a status_code.
_CLASS_CODES: Final = (
    (OutOfMemoryError, "OOM"),
    (ReadOnlyError, "READONLY"),
    (NoPermissionError, "NOPERM"),
    (BusyLoadingError, "LOADING"),
    (NoScriptError, "NOSCRIPT"),
)
_PIPELINE_MARK: Final = " of pipeline caused error: "
# What Redis says, with code ERR, when a script's command is denied by the ACL.
_ACL_IN_SCRIPT: Final = (
    "The user executing the script can't",  # Redis 7.0
    "ACL failure in script",  # Redis 7.2 and later
)


def _message(exc: BaseException) -> str:
    """Redis's words: the text after redis-py's pipeline annotation, if any."""
    text = str(exc)
    head, mark, tail = text.partition(_PIPELINE_MARK)
    return tail if mark and head.startswith("Command # ") else text


def _leading_code(message: str) -> str:
    head = message.split(" ", 1)[0]
    return head if head.isupper() and head.isalpha() else ""


def _raw_code(exc: BaseException) -> str:
    """The code Redis put on the reply (redis-py strips it from mapped errors)."""
    code = getattr(exc, "status_code", None)
    if code:
        return str(code)
    found = _leading_code(_message(exc))
    if found:
        return found
    return next((c for cls, c in _CLASS_CODES if isinstance(exc, cls)), "")


def error_code(exc: BaseException) -> str:
    """The Redis error code of an error reply ("" if it has none)."""
    code = _raw_code(exc)
    if code == "ERR" and _message(exc).removeprefix("ERR ").startswith(_ACL_IN_SCRIPT):
        return "NOPERM"
    return code


def classify(exc: BaseException) -> ErrorClass:
    """Which row of the table above exc belongs to."""
    code = error_code(exc)
    if code == "NOSCRIPT" or isinstance(exc, NoScriptError):
        return ErrorClass.NOSCRIPT
    if code in REFUSAL_CODES:
        return ErrorClass.REFUSAL
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return ErrorClass.UNREACHABLE
    return ErrorClass.ENTRY


def is_refusal(exc: BaseException) -> bool:
    return classify(exc) is ErrorClass.REFUSAL


def describe(exc: BaseException) -> str:
    """One line for logs and /readyz: the code and Redis's own words."""
    code = _raw_code(exc)
    text = _message(exc)
    if code and not text.startswith(code):
        text = f"{code} {text}"
    return text.splitlines()[0][:200] if text else type(exc).__name__
