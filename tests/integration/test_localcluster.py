"""The local control plane: real etcd + kube-apiserver with the Volcano CRDs."""

import itertools
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import rv as rvs
from common.kube import KubeClient, KubeError, load_configuration
from common.objects import decode_head, decode_list_page, decode_status, decode_watch_line
from kube2redis.localcluster.cluster import LocalCluster
from kube2redis.localcluster.processes import alive
from tests import procs
from tests.support.ci import unavailable
from tests.support.kube import JOBS, Kube, vcjob
from tests.support.paths import REPO
from tests.support.waits import wait_until

# Starts control planes of its own, besides the kube fixture's.
pytestmark = pytest.mark.kube

EXAMPLE = REPO / "examples" / "manual" / "simple-job.yaml"


@pytest.fixture(scope="module")
def etcd_cluster(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A second control plane without the watch cache: every watch goes to etcd, so a
    compaction means 410 at once and a restart keeps old resourceVersions watchable."""
    if kube.cluster is None:
        unavailable("needs the local control plane")
    cluster = LocalCluster(tmp_path_factory.mktemp("etcd-cluster") / "state", watch_cache=False)
    cluster.up()
    yield cluster
    cluster.down(purge=True)


def _client(cluster: LocalCluster) -> KubeClient:
    return KubeClient(load_configuration(cluster.kubeconfig, None))


def _events(
    client: KubeClient, path: str, rv: str, count: int, timeout_s: int = 20
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for line in client.watch(
        path, {"resourceVersion": rv, "timeoutSeconds": str(timeout_s)}, read_timeout=timeout_s + 5
    ):
        if not line:
            continue
        event = decode_watch_line(line)
        if event.type == "ERROR":
            status = decode_status(bytes(event.object))
            raise KubeError(status.code, status.message)
        out.append((event.type, decode_head(bytes(event.object)).metadata.resourceVersion))
        if len(out) == count:
            break
    return out


def test_volcano_job_lifecycle_is_watchable_in_rv_order(kube: Kube, namespace: str) -> None:
    client = kube.client
    path = JOBS.format(ns=namespace)
    start_rv = decode_list_page(client.get(path)).metadata.resourceVersion
    seen: list[tuple[str, str]] = []
    watcher = threading.Thread(target=lambda: seen.extend(_events(client, path, start_rv, 3)))
    watcher.start()
    client.call("POST", path, json.dumps(vcjob("lifecycle", namespace)).encode())
    client.call(
        "PATCH",
        f"{path}/lifecycle/status",
        json.dumps({"status": {"state": {"phase": "Running"}}}).encode(),
        content_type="application/merge-patch+json",
    )
    client.call("DELETE", f"{path}/lifecycle")
    watcher.join(30)
    assert [t for t, _ in seen] == ["ADDED", "MODIFIED", "DELETED"]
    versions = [v for _, v in seen]
    assert all(rvs.newer(b, a) for a, b in itertools.pairwise(versions))


def test_compaction_makes_an_old_watch_gone(etcd_cluster: LocalCluster) -> None:
    client = _client(etcd_cluster)
    path = "/api/v1/namespaces/default/configmaps"
    old = json.loads(client.call("POST", path, b'{"metadata":{"generateName":"c-"}}'))
    for _ in range(3):
        client.call("POST", path, b'{"metadata":{"generateName":"c-"}}')
    old_rv = old["metadata"]["resourceVersion"]
    assert _events(client, path, old_rv, 1)  # still watchable before the compaction
    etcd_cluster.compact_etcd()
    with pytest.raises(KubeError) as gone:
        _events(client, path, old_rv, 1)
    assert gone.value.status == 410


def test_apiserver_restart_ends_the_watch_and_the_last_rv_resumes(
    etcd_cluster: LocalCluster,
) -> None:
    client = _client(etcd_cluster)
    path = "/api/v1/namespaces/default/configmaps"
    last = json.loads(client.call("POST", path, b'{"metadata":{"generateName":"r-"}}'))
    last_rv = last["metadata"]["resourceVersion"]
    ended = threading.Event()
    errors: list[Exception] = []

    def watch() -> None:
        try:
            for _ in client.watch(
                path, {"resourceVersion": last_rv, "timeoutSeconds": "120"}, read_timeout=130
            ):
                pass
        except KubeError as exc:
            errors.append(exc)
        ended.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    etcd_cluster.restart_apiserver()
    assert ended.wait(30), "the open watch did not end when kube-apiserver stopped"
    client = _client(etcd_cluster)
    created = json.loads(client.call("POST", path, b'{"metadata":{"generateName":"r-"}}'))
    events = _events(client, path, last_rv, 1)
    assert events == [("ADDED", created["metadata"]["resourceVersion"])]


def test_kubectl_works_against_it(kube: Kube) -> None:
    version = kube.kubectl("version", "-o", "json")
    server = json.loads(version.stdout)["serverVersion"]
    assert server["major"] == "1" and server["minor"].startswith("35")
    assert "jobs.batch.volcano.sh" in kube.kubectl("get", "crd", "jobs.batch.volcano.sh").stdout
    applied = kube.kubectl("apply", "--server-side", "-n", "default", "-f", str(EXAMPLE))
    assert "serverside-applied" in applied.stdout
    kube.kubectl("delete", "-n", "default", "-f", str(EXAMPLE))


def test_every_volcano_crd_is_installed(kube: Kube) -> None:
    names = kube.kubectl("get", "crd", "-o", "name").stdout.split()
    for crd in (
        "jobs.batch.volcano.sh",
        "podgroups.scheduling.volcano.sh",
        "queues.scheduling.volcano.sh",
        "jobflows.flow.volcano.sh",
        "jobtemplates.flow.volcano.sh",
        "commands.bus.volcano.sh",
    ):
        assert f"customresourcedefinition.apiextensions.k8s.io/{crd}" in names


def test_cli_up_is_idempotent_and_recovers_from_a_killed_component(
    etcd_cluster: LocalCluster,
) -> None:
    state = ["localcluster", "--state-dir", str(etcd_cluster.state_dir)]
    second = procs.run([*state, "up", "--no-volcano"])
    assert second.returncode == 0
    assert "already running" in second.stderr
    assert f"export KUBECONFIG={etcd_cluster.kubeconfig}" in second.stdout
    status = procs.run([*state, "status"])
    assert status.returncode == 0 and "kube-apiserver" in status.stdout and "ready" in status.stdout
    loaded = etcd_cluster.load_state()
    assert loaded is not None
    victim = loaded.processes["kube-controller-manager"]
    os.kill(victim.pid, signal.SIGKILL)
    wait_until(lambda: not alive(victim), 10, "the killed controller-manager to be gone")
    assert procs.run([*state, "status"]).returncode == 1
    recovered = procs.run([*state, "up", "--no-volcano"], timeout_s=180)
    assert recovered.returncode == 0, recovered.stderr
    assert "ready in" in recovered.stderr
    assert procs.run([*state, "status"]).returncode == 0
    assert procs.run([*state, "env"]).stdout.strip() == etcd_cluster.env()


def test_cli_down_stops_exactly_its_pids(tmp_path: Path, kube: Kube) -> None:
    if kube.cluster is None:
        unavailable("needs the local control plane")
    state_dir = tmp_path / "state"
    state = ["localcluster", "--state-dir", str(state_dir)]
    started = procs.run([*state, "up", "--no-volcano"], timeout_s=180)
    assert started.returncode == 0, started.stderr
    cluster = LocalCluster(state_dir)
    loaded = cluster.load_state()
    assert loaded is not None
    pids = list(loaded.processes.values())
    assert all(alive(p) for p in pids)
    stopped = procs.run([*state, "down", "--purge"])
    assert stopped.returncode == 0
    assert not any(alive(p) for p in pids)
    assert not state_dir.exists()
    assert kube.cluster.running()  # the session's cluster was not touched
