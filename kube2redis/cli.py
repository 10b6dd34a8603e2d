"""The one entry point: ``kube2redis``. Every flag is also an environment variable
``KUBE2REDIS_<FLAG>`` (e.g. ``--redis-url`` is ``KUBE2REDIS_REDIS_URL``)."""

import json
import logging
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec
import redis

from common import logs, redisconn
from common.errors import ConfigError, Kube2RedisError
from common.keys import DEFAULT_GROUP, DEFAULT_PREFIX, Keys
from common.resources import parse
from common.shards import ShardMap
from kube2redis import reads
from kube2redis.localcluster.commands import localcluster
from kube2redis.options import (
    Settings,
    default_of,
    kube_client,
    kube_options,
    option,
    pass_settings,
    resync_timeout_option,
    specs,
)
from projector.consumer import ConsumerSettings
from projector.scripts import ApplySettings
from watcher.fleet import FleetConfig
from watcher.leases import LeaseSettings
from watcher.retention import Retention
from watcher.run import WatcherConfig
from watcher.writer import WriterSettings

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

log = logging.getLogger("kube2redis")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@option(
    "--redis-url",
    default="redis://127.0.0.1:6379/0",
    show_default=True,
    help="redis://, rediss:// (TLS) or unix:// URL.",
)
@option("--redis-username", default=None, help="ACL user (overrides the URL's).")
@option("--redis-password", default=None, help="Password (overrides the URL's). Never logged.")
@option(
    "--redis-ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CA bundle for rediss:// URLs.",
)
@option("--key-prefix", default=DEFAULT_PREFIX, show_default=True, help="Prefix of every key.")
@option(
    "--shards",
    type=click.IntRange(min=1),
    default=default_of(ShardMap, "count"),
    show_default=True,
    help="Split the mirror in this many shards by a hash of the namespace, each with its "
    "own keys under '{prefix:shard/N}' (a Redis Cluster hash tag). Every command of one "
    "mirror must be given the same number.",
)
@option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@option("--log-format", default="json", show_default=True, type=click.Choice(["json", "text"]))
@click.pass_context
def cli(
    ctx: click.Context,
    redis_url: str,
    redis_username: str | None,
    redis_password: str | None,
    redis_ca_file: Path | None,
    key_prefix: str,
    shards: int,
    log_level: str,
    log_format: str,
) -> None:
    """Mirror live Kubernetes resources into Redis."""
    logs.setup(log_level, log_format)
    try:
        redisconn.validate_url(redis_url)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[1], param_hint="--redis-url") from exc
    try:
        ShardMap(key_prefix, shards)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[1], param_hint="--shards") from exc
    ctx.obj = Settings(redis_url, redis_username, redis_password, redis_ca_file, key_prefix, shards)


# ---- watch ---------------------------------------------------------------------------------


@cli.command()
@kube_options
@option(
    "--spool-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("./spool"),
    show_default=True,
    help="Where events wait while Redis is down.",
)
@option(
    "--spool-max-bytes",
    type=click.IntRange(min=1 << 20),
    default=default_of(WatcherConfig, "spool_max_bytes"),
    show_default=True,
    help="Spool bound; when full the watches pause and relist later.",
)
@option(
    "--spool-fsync",
    type=click.Choice(["always", "interval", "never"]),
    default=default_of(WatcherConfig, "spool_fsync"),
    show_default=True,
    help="fsync policy (interval = every 100 ms).",
)
@option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=default_of(WriterSettings, "batch_size"),
    show_default=True,
    help="Most entries per MULTI/EXEC.",
)
@option(
    "--linger-ms",
    type=click.FloatRange(min=0),
    default=default_of(WriterSettings, "linger_s") * 1000,
    show_default=True,
    help="Wait this long for more events before appending a batch. 0: append what is "
    "queued at once (events arriving during an append form the next batch).",
)
@option(
    "--retention",
    type=click.FloatRange(min=1),
    default=default_of(Retention, "seconds"),
    show_default=True,
    help="Seconds of stream kept (never trims what the group has not acked).",
)
@option(
    "--retention-entries",
    type=click.IntRange(min=0),
    default=default_of(Retention, "entries"),
    show_default=True,
    help="Most stream entries kept (0: no bound); whichever bound is hit first trims.",
)
@option(
    "--retention-bytes",
    type=click.IntRange(min=0),
    default=default_of(Retention, "bytes"),
    show_default=True,
    help="Most bytes of stream kept, as MEMORY USAGE counts them (0: no bound).",
)
@option(
    "--min-replicas-acked",
    type=click.IntRange(min=0),
    default=default_of(WriterSettings, "min_replicas_acked"),
    show_default=True,
    help="Replicas that must take each append (WAIT) before it counts as done; fewer "
    "in time is counted and logged. 0: do not wait.",
)
@option(
    "--replica-ack-timeout-ms",
    type=click.IntRange(min=1),
    default=default_of(WriterSettings, "replica_ack_timeout_ms"),
    show_default=True,
    help="How long an append waits for --min-replicas-acked.",
)
@option(
    "--drop-managed-fields",
    is_flag=True,
    default=default_of(WatcherConfig, "drop_managed_fields"),
    help="Store objects without metadata.managedFields (server-side apply's bookkeeping, "
    "often half an object). Off: Redis holds exactly what the API server sent.",
)
@option(
    "--fence-token",
    type=click.IntRange(min=0),
    default=default_of(WatcherConfig, "fence_token"),
    show_default=True,
    help="This watcher's fencing token for its shard (`kube2redis watchers` passes its "
    "Lease's): once a watcher with a higher one starts, this one writes nothing more and "
    "exits with status 4. 0: no fencing.",
)
@option("--group", default=DEFAULT_GROUP, show_default=True, help="Projector group to respect.")
@option(
    "--shard",
    type=click.IntRange(min=0),
    default=None,
    help="With --shards N: the shard (0 to N-1) this watcher mirrors; required then "
    "(N watchers all left at a default would all mirror one shard).",
)
@option("--health-host", default=default_of(WatcherConfig, "health_host"), show_default=True)
@option(
    "--health-port", type=int, default=default_of(WatcherConfig, "health_port"), show_default=True
)
@pass_settings
def watch(
    settings: Settings,
    kubeconfig: Path | None,
    context: str | None,
    resources: tuple[str, ...],
    namespaces: tuple[str, ...],
    spool_dir: Path,
    spool_max_bytes: int,
    spool_fsync: str,
    batch_size: int,
    linger_ms: float,
    retention: float,
    retention_entries: int,
    retention_bytes: int,
    min_replicas_acked: int,
    replica_ack_timeout_ms: int,
    drop_managed_fields: bool,
    fence_token: int,
    group: str,
    shard: int | None,
    health_host: str,
    health_port: int,
) -> None:
    """List+watch resources and append their events to the stream."""
    from watcher.run import run

    if shard is None:
        if settings.shards > 1:
            raise click.BadParameter(
                f"with --shards {settings.shards}, say which shard this watcher mirrors",
                param_hint="--shard",
            )
        shard = default_of(WatcherConfig, "shard")
    keys = _shard_keys(settings, shard)

    config = WatcherConfig(
        resources=specs(resources),
        namespaces=list(namespaces),
        spool_dir=spool_dir,
        spool_max_bytes=spool_max_bytes,
        spool_fsync=spool_fsync,  # type: ignore[arg-type]
        health_host=health_host,
        health_port=health_port,
        drop_managed_fields=drop_managed_fields,
        fence_token=fence_token,
        shards=settings.shards,
        shard=shard,
        writer=WriterSettings(
            batch_size=batch_size,
            linger_s=linger_ms / 1000,
            group=group,
            retention=Retention(retention, retention_entries, retention_bytes),
            min_replicas_acked=min_replicas_acked,
            replica_ack_timeout_ms=replica_ack_timeout_ms,
        ),
    )
    # Few retries: a down Redis should send events to the spool quickly, not stall.
    r = settings.redis(retries=1, socket_timeout=5.0, shard=shard)
    sys.exit(run(config, kube_client(kubeconfig, context), r, keys))


def _shard_keys(settings: Settings, shard: int) -> Keys:
    try:
        return settings.shard_map.keys(shard)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[1], param_hint="--shard") from exc


# ---- watchers (a sharded, highly available fleet) ------------------------------------------


@cli.command(context_settings={"ignore_unknown_options": True})
@option(
    "--kubeconfig",
    type=click.Path(path_type=Path),
    default=None,
    help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).",
)
@option("--context", default=None, help="Kubeconfig context.")
@option(
    "--replicas",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Replicas of the fleet (the StatefulSet's): replica i prefers shards s % R == i.",
)
@option(
    "--ordinal",
    type=click.IntRange(min=0),
    default=None,
    help="This replica's ordinal (default: the hostname's -<i> suffix, as a StatefulSet "
    "names its pods).",
)
@option("--identity", default=None, help="Holder identity in the leases (default: hostname).")
@option(
    "--lease-namespace",
    default=None,
    help="Namespace of the leases (default: the pod's own, else default).",
)
@option(
    "--lease-prefix",
    default="kube2redis",
    show_default=True,
    help="The leases are <prefix>-shard-<s> (the release's name).",
)
@option(
    "--lease-duration",
    type=click.IntRange(min=1),
    default=default_of(LeaseSettings, "duration_s"),
    show_default=True,
    help="Seconds a lease not renewed takes to expire (a standby takes it over then).",
)
@option(
    "--renew-deadline",
    type=click.FloatRange(min=0.1),
    default=default_of(LeaseSettings, "renew_deadline_s"),
    show_default=True,
    help="Seconds without a renew after which the owner kills the shard's watcher; below "
    "--lease-duration.",
)
@option(
    "--retry-period",
    type=click.FloatRange(min=0.05),
    default=default_of(LeaseSettings, "retry_period_s"),
    show_default=True,
    help="Seconds between rounds over the leases.",
)
@option(
    "--spool-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("./spool"),
    show_default=True,
    help="Each shard's watcher spools under <dir>/shard-<s>.",
)
@option("--health-host", default=default_of(FleetConfig, "health_host"), show_default=True)
@option(
    "--health-port", type=int, default=default_of(FleetConfig, "health_port"), show_default=True
)
@click.argument("watch_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def watchers(
    ctx: click.Context,
    kubeconfig: Path | None,
    context: str | None,
    replicas: int,
    ordinal: int | None,
    identity: str | None,
    lease_namespace: str | None,
    lease_prefix: str,
    lease_duration: int,
    renew_deadline: float,
    retry_period: float,
    spool_dir: Path,
    health_host: str,
    health_port: int,
    watch_args: tuple[str, ...],
) -> None:
    """One replica of a sharded, highly available fleet of watchers (a StatefulSet):
    owns the shards of --shards through Leases (one each) and runs `kube2redis watch
    --shard S` for each it owns, fenced. Options after `--` go to every `watch`
    (resources, namespaces, retention, ...)."""
    import socket

    from watcher.fleet import ordinal_of, run
    from watcher.leases import KubeLeases, in_cluster_namespace

    if renew_deadline >= lease_duration:
        raise click.BadParameter("must be below --lease-duration", param_hint="--renew-deadline")
    hostname = socket.gethostname()
    if ordinal is None:
        try:
            ordinal = ordinal_of(hostname)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--ordinal") from exc
    if ordinal >= replicas:
        raise click.BadParameter(
            f"{ordinal} is not below --replicas {replicas}", param_hint="--ordinal"
        )
    settings: Settings = ctx.find_object(Settings)  # type: ignore[assignment]
    group = ctx.parent.params if ctx.parent else {}
    # The children read the group's settings from the environment (never argv: the
    # password would show in ps).
    child_env = {
        "KUBE2REDIS_REDIS_URL": settings.redis_url,
        "KUBE2REDIS_KEY_PREFIX": settings.key_prefix,
        "KUBE2REDIS_SHARDS": str(settings.shards),
        "KUBE2REDIS_LOG_LEVEL": str(group.get("log_level", "info")),
        "KUBE2REDIS_LOG_FORMAT": str(group.get("log_format", "json")),
    }
    optional = {
        "KUBE2REDIS_REDIS_USERNAME": settings.redis_username,
        "KUBE2REDIS_REDIS_PASSWORD": settings.redis_password,
        "KUBE2REDIS_REDIS_CA_FILE": settings.redis_ca_file,
        "KUBE2REDIS_KUBECONFIG": kubeconfig,
        "KUBE2REDIS_CONTEXT": context,
    }
    child_env.update({k: str(v) for k, v in optional.items() if v is not None})
    leases = LeaseSettings(lease_duration, renew_deadline, retry_period)
    config = FleetConfig(
        replicas=replicas,
        ordinal=ordinal,
        shards=settings.shards,
        identity=identity or hostname,
        lease_prefix=lease_prefix,
        spool_dir=spool_dir,
        watch_args=[a for a in watch_args if a != "--"],
        child_env=child_env,
        health_host=health_host,
        health_port=health_port,
        leases=leases,
    )
    api = KubeLeases(
        kube_client(kubeconfig, context),
        lease_namespace or in_cluster_namespace() or "default",
        min(leases.request_timeout_s, renew_deadline / 2),
    )
    sys.exit(run(config, api))


# ---- project -------------------------------------------------------------------------------


@cli.command()
@option("--group", default=DEFAULT_GROUP, show_default=True)
@option("--consumer", default="", help="Consumer name (default: host-pid).")
@option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=default_of(ConsumerSettings, "batch_size"),
    show_default=True,
)
@option(
    "--block-ms",
    type=click.IntRange(min=1, max=4000),
    default=default_of(ConsumerSettings, "block_ms"),
    show_default=True,
    help="XREADGROUP block; kept well below the socket timeout.",
)
@option("--processes", type=click.IntRange(min=1), default=1, show_default=True)
@option(
    "--reclaim-idle-ms",
    type=click.IntRange(min=100),
    default=default_of(ConsumerSettings, "reclaim_idle_ms"),
    show_default=True,
    help="Take over entries pending this long on another consumer.",
)
@option(
    "--max-deliveries",
    type=click.IntRange(min=1),
    default=default_of(ConsumerSettings, "max_deliveries"),
    show_default=True,
    help="Dead-letter an entry delivered this many times.",
)
@option(
    "--tombstone-ttl",
    type=click.IntRange(min=1),
    default=default_of(ApplySettings, "tombstone_ttl_s"),
    show_default=True,
    help="Seconds a delete's tombstone lives; keep it above the stream retention.",
)
@option(
    "--start-id",
    default=default_of(ConsumerSettings, "start_id"),
    show_default=True,
    help="Where a new group starts: 0 builds the full state, $ only new events.",
)
@option(
    "--shard",
    "only_shards",
    type=click.IntRange(min=0),
    multiple=True,
    help="With --shards N: consume only these shards (repeatable; default all, each "
    "shard's group in a thread of its own).",
)
@option("--health-host", default="0.0.0.0", show_default=True)  # noqa: S104 - kubelet probes
@option("--health-port", type=int, default=8081, show_default=True)
@pass_settings
def project(
    settings: Settings,
    group: str,
    consumer: str,
    batch_size: int,
    block_ms: int,
    processes: int,
    reclaim_idle_ms: int,
    max_deliveries: int,
    tombstone_ttl: int,
    start_id: str,
    only_shards: tuple[int, ...],
    health_host: str,
    health_port: int,
) -> None:
    """Apply stream entries to the state keys as a consumer group member."""
    from projector.run import run

    consumer_settings = ConsumerSettings(
        group=group,
        consumer=consumer,
        batch_size=batch_size,
        block_ms=block_ms,
        reclaim_idle_ms=reclaim_idle_ms,
        max_deliveries=max_deliveries,
        start_id=start_id,
        apply=ApplySettings(tombstone_ttl_s=tombstone_ttl),
    )
    chosen = list(dict.fromkeys(only_shards)) or list(settings.shard_map.all)
    shards = [(_shard_keys(settings, s), partial(settings.redis, shard=s)) for s in chosen]
    try:
        settings.redis(retries=0, shard=chosen[0]).ping()
    except redis.AuthenticationError:
        raise  # a wrong password is not waited out: one line, exit
    except redis.ConnectionError as exc:
        # Unreachable is a state the loop waits out (backing off; /readyz says so), as
        # the watcher spools through it: a supervisor restarting us would only churn.
        log.warning("redis unreachable at start, waiting for it: %s", exc)
    sys.exit(run(consumer_settings, shards, health_host, health_port, processes))


# ---- replay --------------------------------------------------------------------------------


@cli.command()
@option("--from", "start", default="-", show_default=True, help="First entry id (inclusive).")
@option("--to", "end", default="+", show_default=True, help="Last entry id (inclusive).")
@option("--rebuild", is_flag=True, help="First clear the state of the kinds in scope.")
@option("--kind", "kinds", multiple=True, help="Kinds to clear with --rebuild (default all).")
@option(
    "--tombstone-ttl",
    type=click.IntRange(min=1),
    default=default_of(ApplySettings, "tombstone_ttl_s"),
    show_default=True,
)
@option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Replay slices of the range in parallel (safe: every apply is a CAS).",
)
@option(
    "--group",
    default=DEFAULT_GROUP,
    show_default=True,
    help="With --rebuild: the projector group that must not be running.",
)
@option(
    "--force",
    is_flag=True,
    help="With --rebuild: run even while projectors of --group are alive (an object they "
    "apply during the clear can leave the index; verify finds it).",
)
@option(
    "--resync",
    "resync_mode",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="With --rebuild: ask the watchers to relist afterwards (auto: when retention "
    "trimmed the stream, so it no longer holds every object).",
)
@resync_timeout_option("Seconds to wait for that relist to be applied.")
@pass_settings
def replay(
    settings: Settings,
    start: str,
    end: str,
    rebuild: bool,
    kinds: tuple[str, ...],
    tombstone_ttl: int,
    processes: int,
    group: str,
    force: bool,
    resync_mode: str,
    timeout: float,
) -> None:
    """Re-apply a range of the stream; idempotent."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from projector.replay import clear_for_rebuild, replay_parallel
    from projector.replay import replay as run_replay

    # Each shard is a mirror of its own: its stream replayed into its keys.
    for shard, r, keys in settings.each_shard():
        where = f"shard {shard}: " if settings.shards > 1 else ""
        trimmed = False
        if rebuild:
            cleared, trimmed = clear_for_rebuild(r, keys, group, list(kinds), force)
            click.echo(f"{where}cleared state of: {', '.join(cleared) or 'nothing'}", err=True)
        total = int(r.xlen(keys.stream)) if start in ("-", "0") and end == "+" else None
        columns = (
            TextColumn("replay"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:,.0f} events/s"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, transient=False) as progress:
            advance = _advancer(progress, progress.add_task("replay", total=total, rate=0.0))
            consumer = ConsumerSettings(apply=ApplySettings(tombstone_ttl_s=tombstone_ttl))
            if processes > 1:
                summary = replay_parallel(
                    partial(settings.redis, shard=shard),
                    keys,
                    consumer,
                    processes,
                    start,
                    end,
                    advance,
                )
            else:
                summary = run_replay(r, keys, consumer, start, end, advance)
        rate = summary.entries / summary.seconds if summary.seconds else 0.0
        outcome = ", ".join(f"{k} {int(v)}" for k, v in sorted(summary.results.items()))
        click.echo(
            f"{where}replayed {summary.entries} entries in {summary.seconds:.2f}s "
            f"({rate:,.0f} events/s): {outcome or 'nothing'}; "
            f"dead-lettered {summary.dead_lettered}"
        )
        if rebuild and (resync_mode == "always" or (resync_mode == "auto" and trimmed)):
            from common.resync import ResyncRequest
            from kube2redis import resyncs

            if trimmed:
                click.echo("the stream was trimmed: asking the watchers to relist", err=True)
            for kind in list(kinds) or [""]:
                wanted = ResyncRequest(resource=kind, reason="rebuild")
                try:
                    # The projectors are stopped for a rebuild: they apply the relist once
                    # they run again.
                    resyncs.run(r, keys, wanted, timeout, click.echo, until="listed")
                except Kube2RedisError as exc:
                    raise Kube2RedisError(
                        f"the state holds only what the stream still had: {exc}; run "
                        "`kube2redis resync` once a watcher is running"
                    ) from exc
            click.echo("relists appended: the projectors apply them when they run", err=True)


def _advancer(progress: "Progress", task: "TaskID") -> Callable[[int], None]:
    """A replay's progress callback: moves the bar and its events/s."""
    began = time.perf_counter()
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress.update(task, advance=n, rate=done / max(time.perf_counter() - began, 1e-9))

    return advance


# ---- resync --------------------------------------------------------------------------------


@cli.command()
@option(
    "--resource",
    "resources",
    multiple=True,
    help="plural.group, plural or kind to relist; repeatable (default: every watched "
    "resource). Env: space-separated, as for watch.",
)
@option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Namespace to relist; repeatable (default: all).",
)
@resync_timeout_option("Seconds to wait for the relists to be applied.")
@pass_settings
def resync(
    settings: Settings, resources: tuple[str, ...], namespaces: tuple[str, ...], timeout: float
) -> None:
    """Ask the running watchers to relist now; wait until the relists are applied."""
    from common.resync import ResyncRequest
    from kube2redis import resyncs

    shards = settings.each_shard()
    for resource in [parse(text).name for text in resources] or [""]:
        for namespace in namespaces or ("",):
            wanted = ResyncRequest(resource=resource, namespace=namespace)
            # A namespace's objects are in one shard; all namespaces are in every shard.
            for s, r, keys in shards:
                if not namespace or settings.shard_map.shard_of(namespace) == s:
                    resyncs.run(r, keys, wanted, timeout, click.echo)


# ---- verify --------------------------------------------------------------------------------


@cli.command()
@kube_options
@option("--json", "as_json", is_flag=True, help="Print the drift as JSON.")
@option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Re-check drift this many times, 1 s apart (objects in flight settle).",
)
@option(
    "--repair",
    is_flag=True,
    help="Ask the watchers to relist exactly the scopes with drift, wait until that is "
    "applied, and check again (exit 0 if it is clean then). Drift of the secondary "
    "indexes is not relisted (a relist cannot repair it): it says to run "
    "`replay --rebuild`.",
)
@resync_timeout_option("With --repair: seconds to wait for the relists.")
@pass_settings
def verify(
    settings: Settings,
    kubeconfig: Path | None,
    context: str | None,
    resources: tuple[str, ...],
    namespaces: tuple[str, ...],
    as_json: bool,
    retries: int,
    repair: bool,
    timeout: float,
) -> None:
    """Compare Redis with the live cluster; exit 1 on drift."""
    from rich.console import Console
    from rich.table import Table

    from projector.verify import Drift, drift_of, index_drift_kinds, scopes_of

    kube = kube_client(kubeconfig, context)
    resolved = [kube.discover(s) for s in specs(resources)]
    shards = settings.each_shard()
    sharded = settings.shards > 1

    def check() -> dict[int, list[Drift]]:
        return {
            s: drift_of(
                kube, r, keys, resolved, list(namespaces), retries, settings.shard_map.holds(s)
            )
            for s, r, keys in shards
        }

    found = check()
    drift = [d for ds in found.values() for d in ds]
    if as_json:
        click.echo(msgspec.json.encode(drift).decode())
    elif drift:
        table = Table(title=f"drift: {len(drift)}")
        for col in ("shard",) * sharded + ("kind", "object", "problem", "live rv", "stored rv"):
            table.add_column(col)
        for s, ds in found.items():
            for d in ds:
                cells = (str(s),) * sharded + (d.kind, d.member, d.problem, d.live_rv, d.stored_rv)
                table.add_row(*cells)
        Console().print(table)
    else:
        click.echo(f"no drift: {', '.join(r.spec.name for r in resolved)} match the cluster")
    if drift and repair:
        from common.resync import ResyncRequest
        from kube2redis import resyncs

        for s, r, keys in shards:
            for resource, namespace in scopes_of(found[s], resolved):
                wanted = ResyncRequest(
                    resource=resource, namespace=namespace, reason="verify-repair"
                )
                resyncs.run(r, keys, wanted, timeout, lambda line: click.echo(line, err=True))
        if kinds := index_drift_kinds(drift):
            click.echo(
                f"the secondary indexes of {', '.join(kinds)} drifted: a relist does not "
                "repair them; run `kube2redis replay --rebuild`",
                err=True,
            )
        drift = [d for ds in check().values() for d in ds]
        click.echo(
            f"after the repair: {len(drift)} drifted" if drift else "repaired: no drift left",
            err=True,
        )
    sys.exit(1 if drift else 0)


# ---- status, get ---------------------------------------------------------------------------


@cli.command()
@option("--json", "as_json", is_flag=True)
@option("--watch", "refresh", is_flag=True, help="Refresh every 2 s until Ctrl-C.")
@option(
    "--spool-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also measure this local spool directory.",
)
@pass_settings
def status(settings: Settings, as_json: bool, refresh: bool, spool_dir: Path | None) -> None:
    """Stream length, group lag, pending, checkpoints, spool depth."""
    from rich.console import Console, Group
    from rich.live import Live
    from rich.rule import Rule

    from kube2redis.status import Status, collect, render

    shards = settings.each_shard()

    def collected() -> list[tuple[int, Status]]:
        return [(s, collect(r, keys, spool_dir)) for s, r, keys in shards]

    def rendered() -> Any:
        if len(shards) == 1:
            return render(collected()[0][1])
        parts: list[Any] = []
        for s, status in collected():
            parts += [Rule(f"shard {s} of {settings.shards}"), render(status)]
        return Group(*parts)

    if as_json:
        found = collected()
        if settings.shards == 1:
            click.echo(msgspec.json.encode(found[0][1]).decode())
        else:
            sharded = [{"shard": s, "status": status} for s, status in found]
            click.echo(msgspec.json.encode(sharded).decode())
        return
    if not refresh:
        Console().print(rendered())
        return
    with Live(rendered(), auto_refresh=False) as live:
        try:
            while True:
                time.sleep(2)
                live.update(rendered(), refresh=True)
        except KeyboardInterrupt:
            pass


@cli.command()
@click.argument("kind")
@click.argument("name")
@pass_settings
def get(settings: Settings, kind: str, name: str) -> None:
    """Print a stored object: KIND NAMESPACE/NAME (or NAME if cluster-scoped)."""
    namespace, _, obj_name = name.rpartition("/")
    shard = settings.shard_map.shard_of(namespace)
    key = settings.shard_map.keys(shard).state(kind.lower(), namespace, obj_name)
    stored = settings.redis(shard=shard).hgetall(key)
    if not stored:
        raise Kube2RedisError(f"no {kind.lower()} {name} in Redis")
    click.echo(f"# resourceVersion {redisconn.text(stored[b'rv'])}", err=True)
    click.echo(json.dumps(json.loads(stored[b"object"]), indent=2))


@cli.command(name="shards")
@option("--json", "as_json", is_flag=True)
@pass_settings
def shards_command(settings: Settings, as_json: bool) -> None:
    """Each shard's key prefix, slot, the primary serving it, and its stream length."""
    from rich.console import Console
    from rich.table import Table

    from kube2redis.placement import as_rows, placement, shared_primaries

    cluster = settings.redis_url.startswith(redisconn.CLUSTER_SCHEME + "://")
    placed = [
        placement(s, keys.prefix, r, keys.stream, cluster) for s, r, keys in settings.each_shard()
    ]
    if as_json:
        click.echo(msgspec.json.encode(placed).decode())
        return
    table = Table(title=f"{settings.shards} shard(s)")
    for col in ("shard", "prefix", "slot", "primary", "stream entries"):
        table.add_column(col)
    for row in as_rows(placed):
        table.add_row(*map(str, row))
    Console().print(table)
    for line in shared_primaries(placed):
        click.echo(line, err=True)


cli.add_command(localcluster)
cli.add_command(reads.ls)
cli.add_command(reads.counts)


def main() -> None:
    """Run the CLI; errors end as one line on stderr and a non-zero exit."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"kube2redis: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except Kube2RedisError as exc:
        click.echo(f"kube2redis: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except redis.AuthenticationError as exc:
        click.echo(f"kube2redis: error: redis authentication failed: {exc}", err=True)
        sys.exit(1)
    except redis.RedisError as exc:
        click.echo(f"kube2redis: error: redis: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        log.debug("unexpected error", exc_info=True)
        click.echo(
            f"kube2redis: error: {type(exc).__name__}: {exc} "
            "(--log-level debug shows the traceback)",
            err=True,
        )
        sys.exit(1)
