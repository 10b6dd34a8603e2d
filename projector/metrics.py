"""The projector's Prometheus metrics, in a registry of their own."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


class ProjectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # the pod's own CPU and memory
        r = self.registry
        self.events_in = Counter(
            "kube2redis_projector_entries_read", "Stream entries read", registry=r
        )
        self.results = Counter(
            "kube2redis_projector_apply_results",
            "Apply outcomes: applied, stale, tombstoned, relisted, tombstone, relist, "
            "reindexed, index-drift",
            ["result"],
            registry=r,
        )
        self.apply_seconds = Histogram(
            "kube2redis_projector_apply_batch_seconds",
            "Time to apply one batch",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.latency = Histogram(
            "kube2redis_projector_event_latency_seconds",
            "From the watcher receiving an event to its state being applied",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0),
            registry=r,
        )
        self.dead_lettered = Counter(
            "kube2redis_projector_dead_lettered",
            "Entries sent to the dead-letter stream",
            ["reason"],
            registry=r,
        )
        self.reclaimed = Counter(
            "kube2redis_projector_reclaimed",
            "Pending entries taken over from other consumers",
            registry=r,
        )
        self.trimmed_pending = Counter(
            "kube2redis_projector_trimmed_pending",
            "Pending entries found trimmed (no fields): acknowledged and counted",
            registry=r,
        )
        self.lag = Gauge(
            "kube2redis_projector_group_lag", "Entries not yet read by the group", registry=r
        )
        self.pending = Gauge(
            "kube2redis_projector_group_pending", "Entries read, not acked", registry=r
        )
        self.oldest_pending_age = Gauge(
            "kube2redis_projector_oldest_pending_age_seconds",
            "Age of the oldest entry read but not acked by the group (0: none)",
            registry=r,
        )
        self.reconnects = Counter(
            "kube2redis_projector_reconnects", "Redis reconnections", registry=r
        )
        # A refusal (OOM, READONLY, MISCONF, ...) is the server's condition: the
        # projector backs off and retries the same work, nothing is dead-lettered.
        self.redis_refusals = Counter(
            "kube2redis_projector_redis_refusals",
            "Attempts Redis refused for a server-wide condition, by error code (retried)",
            ["code"],
            registry=r,
        )
        self.redis_refusing = Gauge(
            "kube2redis_projector_redis_refusing",
            "1 while Redis refuses the projector's work and it backs off, else 0",
            registry=r,
        )
