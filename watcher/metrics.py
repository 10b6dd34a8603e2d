"""The watcher's Prometheus metrics, in a registry of their own."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


class WatcherMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # the pod's own CPU and memory
        self.ready = Gauge(
            "kube2redis_watcher_ready", "1 if /readyz answers ready (read at scrape)", registry=r
        )
        self.spool_max_bytes = Gauge(
            "kube2redis_watcher_spool_max_bytes",
            "The spool's bound (--spool-max-bytes)",
            registry=r,
        )
        self.events_in = Counter(
            "kube2redis_watcher_events_in",
            "Watch events received",
            ["resource", "type"],
            registry=r,
        )
        self.events_out = Counter(
            "kube2redis_watcher_events_appended", "Entries appended to the stream", registry=r
        )
        self.spooled = Counter(
            "kube2redis_watcher_events_spooled", "Entries written to the disk spool", registry=r
        )
        self.dropped = Counter(
            "kube2redis_watcher_events_dropped_overflow",
            "Entries dropped while the spool was full (recovered by a relist)",
            registry=r,
        )
        self.append_seconds = Histogram(
            "kube2redis_watcher_append_seconds",
            "Time to append one batch to Redis",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.spool_bytes = Gauge("kube2redis_watcher_spool_bytes", "Bytes spooled", registry=r)
        self.spool_records = Gauge(
            "kube2redis_watcher_spool_records", "Batches waiting in the spool", registry=r
        )
        self.drained = Counter(
            "kube2redis_watcher_events_drained", "Entries moved from the spool to Redis", registry=r
        )
        self.last_drain_seconds = Gauge(
            "kube2redis_watcher_last_drain_seconds",
            "How long the last complete spool drain took, first append to empty spool",
            registry=r,
        )
        self.last_drain_events = Gauge(
            "kube2redis_watcher_last_drain_events",
            "Entries the last complete spool drain moved",
            registry=r,
        )
        self.reconnects = Counter(
            "kube2redis_watcher_reconnects", "Reconnections", ["target"], registry=r
        )
        self.relists = Counter(
            "kube2redis_watcher_relists",
            "Relists, by why: initial, gone, redis-lost, spool-full, checkpoint-ahead, "
            "cluster-changed, resync, error, crashed, resource-returned",
            ["resource", "reason"],
            registry=r,
        )
        self.reflector_crashes = Counter(
            "kube2redis_watcher_reflector_crashes",
            "Unexpected exceptions in a list+watch loop (logged with the traceback; "
            "the loop backs off and relists)",
            ["resource"],
            registry=r,
        )
        self.redis_losses = Counter(
            "kube2redis_watcher_redis_losses",
            "Scopes found with writes Redis no longer holds (restart, older snapshot, "
            "failover); each is relisted",
            registry=r,
        )
        self.scope_conflicts = Counter(
            "kube2redis_watcher_scope_conflicts",
            "Appends that found another writer's mark on a scope (a second watcher)",
            registry=r,
        )
        self.fenced = Counter(
            "kube2redis_watcher_fenced",
            "Writes refused because a watcher with a newer fencing token owns the shard "
            "(this watcher then stops writing and exits with status 4)",
            registry=r,
        )
        self.spool_lost_records = Counter(
            "kube2redis_watcher_spool_lost_records",
            "Spool records found corrupt (quarantined) or undecodable; every scope relists",
            registry=r,
        )
        self.redis_evictions = Counter(
            "kube2redis_watcher_redis_evicted_keys",
            "Keys Redis evicted (maxmemory-policy other than noeviction); the scopes relist",
            registry=r,
        )
        self.redis_refusals = Counter(
            "kube2redis_watcher_redis_refusals",
            "Appends Redis refused (OOM, READONLY, MISCONF, ...); spooled instead",
            ["code"],
            registry=r,
        )
        self.redis_up = Gauge("kube2redis_watcher_redis_up", "1 if Redis answers", registry=r)
        self.replica_acks_short = Counter(
            "kube2redis_watcher_replica_acks_short",
            "Appends fewer replicas than --min-replicas-acked took in time",
            registry=r,
        )
        # Read once a second with the guard's check (INFO memory): no exporter needed.
        self.redis_used_memory = Gauge(
            "kube2redis_watcher_redis_used_memory_bytes",
            "Memory Redis uses (INFO used_memory)",
            registry=r,
        )
        self.redis_maxmemory = Gauge(
            "kube2redis_watcher_redis_maxmemory_bytes",
            "Redis's memory bound (INFO maxmemory; 0: none)",
            registry=r,
        )
        self.last_event = Gauge(
            "kube2redis_watcher_last_event_timestamp_seconds",
            "Unix time of the last watch event received",
            registry=r,
        )
