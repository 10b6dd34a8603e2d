"""One way to connect to Redis: pool, timeouts, retry with jittered backoff, auth, TLS."""

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from common.errors import ConfigError
from common.redisslot import hash_tag, slot_client

# A Redis Cluster (any node's address: the rest are discovered); see common/redisslot.py.
CLUSTER_SCHEME = "redis+cluster"

_SCHEMES = ("redis", "rediss", "unix", CLUSTER_SCHEME)


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe to log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))


def text(value: object) -> str:
    """A Redis reply value as str (redis-py types replies as bytes | str | int)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def validate_url(url: str) -> str:
    """Raise ConfigError naming --redis-url if the URL cannot work."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ConfigError(
            f"--redis-url {redact_url(url)!r}: scheme must be one of "
            f"{', '.join(s + '://' for s in _SCHEMES)}"
        )
    if parts.scheme != "unix":
        try:
            _ = parts.port
        except ValueError as exc:
            raise ConfigError(f"--redis-url {redact_url(url)!r}: {exc}") from exc
        if not parts.hostname:
            raise ConfigError(f"--redis-url {redact_url(url)!r}: no host")
    return url


def connect(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    ca_file: Path | None = None,
    socket_timeout: float = 10.0,
    connect_timeout: float = 3.0,
    retries: int = 3,
    health_check_interval: int = 30,
    key_prefix: str = "",
) -> "redis.Redis":
    """A client for url; username/password override those in the URL. On a Redis
    Cluster (redis+cluster://) every key must share key_prefix's hash tag.

    The socket timeout must stay well above any XREADGROUP ``block`` so a quiet
    stream is never mistaken for a dead connection.
    """
    validate_url(url)
    options: dict[str, object] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "socket_keepalive": True,
        "health_check_interval": health_check_interval,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }
    if username:
        options["username"] = username
    if password:
        options["password"] = password
    if url.startswith("rediss://") and ca_file is not None:
        options["ssl_ca_certs"] = str(ca_file)
    if url.startswith(CLUSTER_SCHEME + "://"):
        if hash_tag(key_prefix) is None:
            raise ConfigError(
                f"--key-prefix {key_prefix!r}: on a Redis Cluster it must carry a hash tag "
                "(e.g. '{k8s}'), so every key of the mirror is in one slot"
            )
        return slot_client(url, key_prefix, options)
    return redis.Redis.from_url(url, **options)
