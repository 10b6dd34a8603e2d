"""The kube2redis Grafana dashboard, built with grafana-foundation-sdk.

``python -m deploy.grafana.dashboard`` writes it where the chart ships it
(``deploy/helm/kube2redis/files/dashboard.json``); ``--check`` fails if that file
is not what this code builds (``make check`` runs it). Every panel's query is
evaluated against a real Prometheus in ``tests/integration/test_prometheus.py``.
"""

import argparse
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

OUTPUT = Path(__file__).resolve().parents[1] / "helm" / "kube2redis" / "files" / "dashboard.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every query selects these: the chart's monitors set job="kube2redis".
SELECTOR = 'job="kube2redis", namespace=~"$namespace"'
RATE = "$__rate_interval"


def q(expr: str, legend: str = "") -> Dataquery:
    """A Prometheus query over our targets: each ``{}`` gets the common selector, each
    ``[rate]`` Grafana's rate interval."""
    query = Dataquery().expr(expr.replace("{}", f"{{{SELECTOR}}}").replace("[rate]", f"[{RATE}]"))
    return query.legend_format(legend) if legend else query


def series(title: str, unit: str, description: str, *queries: Dataquery) -> Timeseries:
    panel = Timeseries().title(title).unit(unit).description(description).datasource(DATASOURCE)
    for query in queries:
        panel = panel.with_target(query)
    return panel.span(8).height(8)


def build() -> Dashboard:
    """The whole dashboard: flow, latency, backlog, trouble."""
    return (
        Dashboard("kube2redis")
        .uid("kube2redis")
        .tags(["kube2redis", "redis", "volcano"])
        .refresh("30s")
        .time("now-3h", "now")
        .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            QueryVariable("namespace")
            .label("Namespace")
            .datasource(DATASOURCE)
            .query('label_values(kube2redis_watcher_redis_up{job="kube2redis"}, namespace)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True)
            .all_value(".*")
            .multi(True)
        )
        .with_row(Row("Events in and out"))
        .with_panel(
            series(
                "Watch events received",
                "ops",
                "Events the watcher read from the API server, by type (SYNC: objects of a relist).",
                q("sum by (type) (rate(kube2redis_watcher_events_in_total{}[rate]))", "{{type}}"),
            )
        )
        .with_panel(
            series(
                "Stream: appended, read, spooled",
                "ops",
                "Entries the watcher appended to the stream (or spooled while Redis was away), "
                "and entries the projectors read from it.",
                q("sum(rate(kube2redis_watcher_events_appended_total{}[rate]))", "appended"),
                q("sum(rate(kube2redis_watcher_events_spooled_total{}[rate]))", "spooled"),
                q("sum(rate(kube2redis_projector_entries_read_total{}[rate]))", "read"),
            )
        )
        .with_panel(
            series(
                "Apply outcomes",
                "ops",
                "What each applied entry did (stale: an older resourceVersion, ignored).",
                q(
                    "sum by (result) (rate(kube2redis_projector_apply_results_total{}[rate]))",
                    "{{result}}",
                ),
            )
        )
        .with_row(Row("Latency"))
        .with_panel(
            series(
                "End to end: event received to applied",
                "s",
                "From the watcher reading an event to its state applied in Redis.",
                *_quantiles("kube2redis_projector_event_latency_seconds"),
            )
        )
        .with_panel(
            series(
                "Watcher: append one batch",
                "s",
                "One MULTI/EXEC of entries and checkpoint.",
                *_quantiles("kube2redis_watcher_append_seconds"),
            )
        )
        .with_panel(
            series(
                "Projector: apply one batch",
                "s",
                "One batch of apply scripts and acks.",
                *_quantiles("kube2redis_projector_apply_batch_seconds"),
            )
        )
        .with_row(Row("Backlog"))
        .with_panel(
            series(
                "Lag and pending",
                "short",
                "Entries the group has not read (lag) and read but not applied (pending). "
                "Both projectors report the group's figures: the max is the group's.",
                q("max(kube2redis_projector_group_lag{})", "lag"),
                q("max(kube2redis_projector_group_pending{})", "pending"),
            )
        )
        .with_panel(
            series(
                "Spool",
                "bytes",
                "Bytes waiting on disk while Redis is unreachable or refuses writes.",
                q("sum by (pod) (kube2redis_watcher_spool_bytes{})", "spooled {{pod}}"),
            )
        )
        .with_panel(
            series(
                "Redis memory",
                "bytes",
                "What Redis uses, and its maxmemory bound (none: 0), as the watcher reads "
                "them every second. Near the bound, Redis refuses writes (noeviction) or "
                "evicts keys (the watcher then relists).",
                q("max(kube2redis_watcher_redis_used_memory_bytes{})", "used"),
                q("max(kube2redis_watcher_redis_maxmemory_bytes{})", "maxmemory"),
            )
        )
        .with_panel(
            Stat()
            .title("Since the last watch event")
            .unit("s")
            .description("A quiet cluster is quiet; a busy one should never show minutes here.")
            .datasource(DATASOURCE)
            .with_target(q("time() - max(kube2redis_watcher_last_event_timestamp_seconds{})"))
            .span(8)
            .height(8)
        )
        .with_panel(
            series(
                "Shards owned (sharded, highly available watchers)",
                "short",
                "With `kube2redis watchers`: the mirror's shards and how many the replicas "
                "own; fewer owned than there are for minutes means a shard is not mirrored "
                "(alert Kube2redisShardUnowned). Lease acquisitions: each a new fencing token.",
                q("max(kube2redis_fleet_shards{})", "shards"),
                q("sum(kube2redis_fleet_shards_owned{})", "owned"),
                q(
                    "sum(increase(kube2redis_fleet_lease_acquisitions_total{}[rate]))",
                    "lease acquisitions",
                ),
            )
        )
        .with_row(Row("Trouble"))
        .with_panel(
            series(
                "Relists by reason",
                "short",
                "initial at start; anything else repeating is worth a look (docs/operations.md).",
                q(
                    "sum by (resource, reason) "
                    "(increase(kube2redis_watcher_relists_total{}[rate]))",
                    "{{resource}} {{reason}}",
                ),
            )
        )
        .with_panel(
            series(
                "Dead letters",
                "short",
                "Entries the projector could not apply, by reason (k8s:events:dead).",
                q(
                    "sum by (reason) (increase(kube2redis_projector_dead_lettered_total{}[rate]))",
                    "{{reason}}",
                ),
            )
        )
        .with_panel(
            series(
                "Redis: refusals and reconnects",
                "ops",
                "Writes Redis refused (OOM, READONLY, MISCONF, ...), by error code, and "
                "reconnections to Redis and the API server.",
                q(
                    "sum by (code) (rate(kube2redis_watcher_redis_refusals_total{}[rate]))",
                    "watcher {{code}}",
                ),
                q(
                    "sum by (code) (rate(kube2redis_projector_redis_refusals_total{}[rate]))",
                    "projector {{code}}",
                ),
                q(
                    "sum by (target) (rate(kube2redis_watcher_reconnects_total{}[rate]))",
                    "watcher reconnects {{target}}",
                ),
                q(
                    "sum(rate(kube2redis_projector_reconnects_total{}[rate]))",
                    "projector reconnects",
                ),
            )
        )
    )


def _quantiles(histogram: str) -> list[Dataquery]:
    return [
        q(
            f"histogram_quantile({quantile}, sum by (le) (rate({histogram}_bucket{{}}[rate])))",
            f"p{int(quantile * 100)}",
        )
        for quantile in (0.5, 0.99)
    ]


def render() -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(build().build()) + "\n"


def panel_queries(dashboard: dict[str, Any]) -> dict[str, list[str]]:
    """Panel title -> its PromQL expressions, from the dashboard's JSON."""
    return {
        panel["title"]: [target["expr"] for target in panel.get("targets", [])]
        for panel in dashboard["panels"]
        if panel.get("type") != "row"
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run `make dashboard`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
