"""What the commands share: flags that are also environment variables, settings
read from the group's options, defaults read from the settings Structs (each
stated once, there), and the Kubernetes options."""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec
import redis

from common import redisconn
from common.errors import ConfigError
from common.keys import Keys
from common.kube import KubeClient, load_configuration
from common.resources import DEFAULT_RESOURCES, ResourceSpec, parse
from common.shards import ShardMap

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("kube2redis")


def default_of(settings: type[msgspec.Struct], name: str) -> Any:
    """The default of a settings Struct's field: each default is stated there, once."""
    for field in msgspec.structs.fields(settings):
        if field.name == name:
            return field.default
    raise AttributeError(f"{settings.__name__} has no field {name!r}")


def option(*decls: str, **attrs: Any) -> Callable[[F], F]:
    """click.option whose environment variable is KUBE2REDIS_<LONG_NAME>."""
    long_name = next(d for d in decls if d.startswith("--"))
    attrs.setdefault("envvar", "KUBE2REDIS_" + long_name[2:].replace("-", "_").upper())
    attrs.setdefault("show_envvar", True)
    return click.option(*decls, **attrs)


RedisClient = redis.Redis  # a name the Settings.redis method does not shadow


class Settings(msgspec.Struct):
    """Options every subcommand shares, set on the group."""

    redis_url: str
    redis_username: str | None
    redis_password: str | None
    redis_ca_file: Path | None
    key_prefix: str
    shards: int = 1

    @property
    def shard_map(self) -> ShardMap:
        return ShardMap(self.key_prefix, self.shards)

    @property
    def keys(self) -> Keys:
        """The keys of the only shard; a command that serves several shards asks
        shard_map for each."""
        if self.shards != 1:
            raise ConfigError(f"this command does not serve --shards {self.shards} yet")
        return Keys(self.key_prefix)

    def redis(
        self, retries: int = 3, socket_timeout: float = 10.0, shard: int = 0
    ) -> "redis.Redis":
        """A client for one shard's keys (on a Redis Cluster, bound to its slot)."""
        return redisconn.connect(
            self.redis_url,
            username=self.redis_username,
            password=self.redis_password,
            ca_file=self.redis_ca_file,
            retries=retries,
            socket_timeout=socket_timeout,
            key_prefix=self.shard_map.prefix_of(shard),
        )

    def each_shard(
        self, only: int | None = None, retries: int = 3
    ) -> list[tuple[int, RedisClient, Keys]]:
        """(shard, client, keys) of every shard, or of `only`."""
        chosen = self.shard_map.all if only is None else [only]
        return [(s, self.redis(retries, shard=s), self.shard_map.keys(s)) for s in chosen]


pass_settings = click.make_pass_decorator(Settings)

RESYNC_TIMEOUT_S = 120.0


def resync_timeout_option(help_text: str) -> Callable[[F], F]:
    """--timeout: how long a command waits for the relists it asked for."""
    return option(
        "--timeout",
        type=click.FloatRange(min=1),
        default=RESYNC_TIMEOUT_S,
        show_default=True,
        help=help_text,
    )


def kube_options(func: F) -> F:
    for decorator in reversed(
        (
            option(
                "--kubeconfig",
                type=click.Path(path_type=Path),
                default=None,
                help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).",
            ),
            option("--context", default=None, help="Kubeconfig context."),
            option(
                "--resource",
                "resources",
                multiple=True,
                default=DEFAULT_RESOURCES,
                show_default=True,
                help="plural.group[?labelSelector=..&fieldSelector=..]; repeatable. "
                "Env: space-separated.",
            ),
            option(
                "--namespace",
                "namespaces",
                multiple=True,
                default=(),
                help="Namespace to watch; repeatable. Default: all namespaces.",
            ),
        )
    ):
        func = decorator(func)
    return func


def kube_client(kubeconfig: Path | None, context: str | None) -> KubeClient:
    return KubeClient(load_configuration(kubeconfig, context))


def specs(resources: tuple[str, ...]) -> list[ResourceSpec]:
    return [parse(r) for r in resources]
