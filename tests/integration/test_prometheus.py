"""The dashboard and the alerts against a real Prometheus scraping a real watcher,
projector, fleet replica (`kube2redis watchers`) and API server under load: every
panel query returns data, every alert rule evaluates without error, and every series
an alert selects exists (those of kube-state-metrics aside: it does not run here)."""

import math
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
import yaml

from common.keys import Keys
from deploy.grafana.dashboard import panel_queries, render
from tests.pipeline import metric, start_projector, start_watcher
from tests.procs import Proc, ProcFactory
from tests.support.ci import unavailable
from tests.support.events import JOBS_RESOURCE
from tests.support.kube import Jobs, Kube
from tests.support.paths import REPO
from tests.support.prometheus import Prometheus
from tests.support.redis_server import RedisServer
from tests.support.waits import wait_until

ALERTS = REPO / "deploy/helm/kube2redis/files/alerts.yaml"
# Series from kube-state-metrics (readiness, the verify CronJob): not run here;
# promtool's tests (deploy/prometheus/alerts-test.yaml) cover those alerts.
EXTERNAL = re.compile(r"^kube_")
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})")
NEGATIVE_MATCHER = re.compile(r'\s*,?\s*[a-zA-Z_]+\s*!~?\s*"[^"]*"')
# What Grafana puts in place of its variables: every namespace, a short rate window
# (scrapes are 1 s apart here).
GRAFANA_VARIABLES = {"$namespace": ".*", "$__rate_interval": "5s"}


def _apiserver_scrape(kube: Kube) -> dict[str, Any]:
    """A scrape job for the API server's /metrics, with the kubeconfig's admin cert."""
    config = yaml.safe_load(kube.kubeconfig.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c for c in config["clusters"] if c["name"] == context["context"]["cluster"])
    user = next(u for u in config["users"] if u["name"] == context["context"]["user"])["user"]
    files = (
        cluster["cluster"].get("certificate-authority"),
        user.get("client-certificate"),
        user.get("client-key"),
    )
    if not all(files):
        unavailable("scraping the API server needs a kubeconfig with certificate files")
    ca, cert, key = files
    return {
        "job_name": "apiserver",
        "scheme": "https",
        "tls_config": {"ca_file": ca, "cert_file": cert, "key_file": key},
        "static_configs": [{"targets": [urlsplit(cluster["cluster"]["server"]).netloc]}],
    }


def _config(
    kube: Kube, watcher: Proc, projector: Proc, fleet: Proc, namespace: str
) -> dict[str, Any]:
    # Labels as the chart's PodMonitor gives them: job, container, pod, namespace.
    def target(proc: Proc, container: str) -> dict[str, Any]:
        return {
            "targets": [f"127.0.0.1:{proc.health_port}"],
            "labels": {"container": container, "pod": "kube2redis-0", "namespace": namespace},
        }

    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "kube2redis",
                "static_configs": [
                    target(watcher, "watcher"),
                    target(projector, "projector"),
                    target(fleet, "watchers"),
                ],
            },
            _apiserver_scrape(kube),
        ],
    }


def _load(
    kube: Kube,
    namespace: str,
    r: "redis.Redis",
    watcher: Proc,
    projector: Proc,
    scraped: Callable[[], None],
) -> None:
    """Jobs created, updated, deleted; a malformed entry (a dead letter); Redis refusing
    writes (OOM) while the projector has entries to apply, then taking them again.
    Each step is scraped before the next, so rates see every step."""
    jobs = Jobs(kube, namespace)
    for i in range(20):
        jobs.create(f"load-{i}")
        jobs.label(f"load-{i}", "one")
        if i % 5 == 4:
            scraped()
    r.xadd(Keys().stream, {"type": "MODIFIED"})  # no resource, no rv: dead-lettered
    # The projector paused, entries pile up unread; then Redis refuses writes.
    projector.signal(signal.SIGSTOP)
    try:
        for i in range(20):
            jobs.set_phase(f"load-{i}", "Running")
        wait_until(lambda: r.xinfo_groups(Keys().stream)[0]["lag"] != 0, 20, "lag")
        scraped()
        r.config_set("maxmemory", 1)
    finally:
        projector.signal(signal.SIGCONT)
    try:
        for i in range(10):
            jobs.label(f"load-{i}", "two")  # the watcher spools these
        wait_until(lambda: metric(watcher, "kube2redis_watcher_redis_refusals_total") > 0, 30, "w")
        wait_until(
            lambda: metric(projector, "kube2redis_projector_redis_refusals_total") > 0, 30, "p"
        )
        scraped()
    finally:
        r.config_set("maxmemory", 0)
    for i in range(10):
        jobs.delete(f"load-{i}")
    wait_until(lambda: metric(watcher, "kube2redis_watcher_spool_bytes") == 0, 30, "spool drained")
    scraped()


def test_every_panel_and_alert_query_on_a_real_prometheus(
    kube: Kube, namespace: str, redis_server: RedisServer, procs: ProcFactory, tmp_path: Path
) -> None:
    watcher = start_watcher(procs, redis_server.url, kube, namespace, tmp_path / "spool")
    projector = start_projector(procs, redis_server.url, kube)
    # A replica of the sharded, highly available fleet (kube2redis watchers), for the
    # fleet's alert: a mirror of its own (another key prefix), one shard, one replica.
    fleet = procs.start(
        "fleet",
        [
            "watchers",
            "--replicas", "1",
            "--ordinal", "0",
            "--lease-namespace", namespace,
            "--spool-dir", str(tmp_path / "fleet"),
            "--",
            "--namespace", namespace,
            "--resource", JOBS_RESOURCE,
        ],
        {
            "KUBE2REDIS_REDIS_URL": redis_server.url,
            "KUBE2REDIS_KUBECONFIG": str(kube.kubeconfig),
            "KUBE2REDIS_KEY_PREFIX": "fleet",
        },
    )  # fmt: skip
    watcher.wait_ready()
    projector.wait_ready()
    fleet.wait_ready()
    config = _config(kube, watcher, projector, fleet, namespace)
    prometheus = Prometheus(tmp_path / "prometheus", config)
    try:
        prometheus.wait_ready()
        # Scraped before the load begins, so every rate sees it from its start.
        wait_until(
            lambda: len(prometheus.api("query", query="up == 1")["result"]) == 4,
            30,
            "the four targets up",
            interval_s=0.5,
        )
        started = time.time()
        r = redis_server.client()
        _load(kube, namespace, r, watcher, projector, lambda: _scraped(prometheus))
        # Every series the load made, scraped at least once.
        for name in (
            "kube2redis_projector_dead_lettered_total",
            "kube2redis_projector_redis_refusals_total",
            "kube2redis_watcher_redis_refusals_total",
            "kube2redis_watcher_events_spooled_total",
        ):
            wait_until(
                lambda n=name: prometheus.api("query", query=f"max({n}) > 0")["result"],
                30,
                f"{name} in Prometheus",
                interval_s=0.5,
            )
        _scraped(prometheus)  # and scraped again: an increase() needs two samples
        _check_panels(prometheus, started)
        _check_alerts(prometheus)
    finally:
        prometheus.stop()


def _scraped(prometheus: Prometheus) -> None:
    """Wait until each target has been scraped twice more (a rate needs two samples)."""
    for _ in range(2):
        query = f"timestamp(up) < {time.time()}"
        wait_until(
            lambda q=query: not prometheus.api("query", query=q)["result"],
            30,
            "a fresh scrape of every target",
            interval_s=0.2,
        )


def _check_panels(prometheus: Prometheus, started: float) -> None:
    queries = panel_queries(_dashboard())
    assert len(queries) >= 10
    for title, exprs in queries.items():
        for panel_expr in exprs:
            expr = panel_expr
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            result = prometheus.api(
                "query_range", query=expr, start=started, end=time.time(), step=1
            )["result"]
            values = [float(v) for s in result for _, v in s["values"]]
            assert any(math.isfinite(v) for v in values), f"panel {title!r}: no data: {expr}"


def _dashboard() -> dict[str, Any]:
    import json

    loaded: dict[str, Any] = json.loads(render())
    return loaded


def _check_alerts(prometheus: Prometheus) -> None:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    # Evaluated by Prometheus's rule manager: no error.
    wait_until(
        lambda: all(
            not rule["lastEvaluation"].startswith("0001") and rule["health"] == "ok"
            for group in prometheus.api("rules")["groups"]
            for rule in group["rules"]
        ),
        30,
        "every rule evaluated without error",
        interval_s=0.5,
    )
    evaluated = {
        rule["name"] for group in prometheus.api("rules")["groups"] for rule in group["rules"]
    }
    assert evaluated == {rule["alert"] for rule in rules}
    missing = []
    for rule in rules:
        prometheus.api("query", query=rule["expr"])  # raises on an error
        for name, matchers in SELECTOR.findall(rule["expr"]):
            # A negative matcher only leaves series out (relists other than the first):
            # the ones it keeps need not happen under this load, the series must exist.
            selector = name + NEGATIVE_MATCHER.sub("", matchers)
            if not EXTERNAL.match(name) and not prometheus.api("query", query=selector)["result"]:
                missing.append((rule["alert"], selector))
    assert missing == [], f"series the alerts select that do not exist: {missing}"
