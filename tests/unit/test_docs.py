"""The README's metrics table names every metric the processes export, and
nothing they do not: the table is what operators build alerts from."""

import re

from prometheus_client import CollectorRegistry

from projector.metrics import ProjectorMetrics
from tests.support.paths import REPO
from watcher.fleet import FleetMetrics
from watcher.metrics import WatcherMetrics


def _exported(registry: CollectorRegistry) -> set[str]:
    names = set()
    for family in registry.collect():
        if family.name.startswith("kube2redis_"):
            suffix = "_total" if family.type == "counter" else ""
            names.add(family.name + suffix)
    return names


def test_the_readme_table_lists_every_metric_and_only_those() -> None:
    readme = (REPO / "README.md").read_text()
    table = set(re.findall(r"^\| `(kube2redis_[a-z_]+)` \|", readme, re.M))
    registries = [WatcherMetrics().registry, ProjectorMetrics().registry, FleetMetrics().registry]
    exported = set().union(*(_exported(registry) for registry in registries))
    assert table == exported
