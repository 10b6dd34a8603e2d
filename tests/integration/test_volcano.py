"""Real Volcano on the local control plane: its scheduler and controllers, with
kwok's simulated nodes, so Volcano Jobs are scheduled, run and complete."""

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from common.kube import KubeClient, load_configuration
from common.objects import decode_watch_line, phase_of
from kube2redis.localcluster.cluster import LocalCluster
from tests.pipeline import KEYS
from tests.procs import Proc, ProcFactory
from tests.support.ci import unavailable
from tests.support.kube import JOBS, Kube, vcjob
from tests.support.paths import REPO
from tests.support.redis_server import read_stream
from tests.support.waits import wait_until


@pytest.fixture(scope="module")
def volcano(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """A control plane of its own with Volcano and kwok: its controllers act on every
    Volcano Job, which the other tests' thousands of jobs must not trigger."""
    if kube.cluster is None:
        unavailable("needs the local control plane")
    cluster = LocalCluster(tmp_path_factory.mktemp("volcano") / "state", volcano=True)
    cluster.up()
    try:
        yield Kube(cluster.kubeconfig, str(cluster.bin_dir / "kubectl"), cluster)
    finally:
        cluster.down(purge=True)


@pytest.fixture
def vns(volcano: Kube) -> Iterator[str]:
    name = volcano.create_namespace()
    yield name
    volcano.delete_namespace(name)


def _job(
    name: str, namespace: str, replicas: int, cpu: str = "1", run_s: int = 0, fail: bool = False
) -> dict[str, Any]:
    job = vcjob(name, namespace, replicas=replicas)
    template = job["spec"]["tasks"][0]["template"]
    template["spec"]["containers"][0]["resources"] = {"requests": {"cpu": cpu, "memory": "64Mi"}}
    # kwok waits a random time between a stage's delay and its jitter-delay: a
    # jitter-delay of 0 makes pod creation and readiness immediate, so a gang starts
    # together and the job is seen Running (the default would spread the pods out).
    metadata: dict[str, Any] = {
        "annotations": {
            "pod-create.stage.kwok.x-k8s.io/jitter-delay": "0s",
            "pod-ready.stage.kwok.x-k8s.io/jitter-delay": "0s",
        },
        "labels": {},
    }
    if run_s:
        metadata["annotations"]["pod-complete.stage.kwok.x-k8s.io/delay"] = f"{run_s}s"
        # kwok waits a random time between delay and jitter-delay: equal means exact.
        metadata["annotations"]["pod-complete.stage.kwok.x-k8s.io/jitter-delay"] = f"{run_s}s"
    if fail:
        metadata["labels"]["pod-container-running-failed.stage.kwok.x-k8s.io"] = "true"
        for key in ("delay", "jitter-delay"):
            metadata["annotations"][f"pod-container-running-failed.stage.kwok.x-k8s.io/{key}"] = (
                f"{max(run_s, 1)}s"
            )
    template["metadata"] = metadata
    return job


def _submit(kube: Kube, job: dict[str, Any]) -> None:
    path = JOBS.format(ns=job["metadata"]["namespace"])
    kube.client.call("POST", path, json.dumps(job).encode())


def _phase(kube: Kube, namespace: str, name: str) -> str:
    return phase_of(kube.client.get(f"{JOBS.format(ns=namespace)}/{name}"))


def _pods(kube: Kube, namespace: str, job: str) -> list[dict[str, Any]]:
    listed = json.loads(
        kube.client.get(
            f"/api/v1/namespaces/{namespace}/pods", {"labelSelector": f"volcano.sh/job-name={job}"}
        )
    )
    return list(listed["items"])


def _run_script(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", script, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_smoke_test_passes_in_full(volcano: Kube, vns: str) -> None:
    env = volcano.shell_env(SMOKE_NAMESPACE=vns, SMOKE_TIMEOUT="120")
    result = _run_script("examples/manual/smoke-test.sh", env=env)
    for check in (
        "has minMember 2 = minAvailable",
        "pods created and bound together",
        "job Completed",
        "smoke-test: passed",
    ):
        assert check in result.stdout, result.stdout
    assert "skip  no nodes" not in result.stdout


INSTALL_SH = "manifests/volcano/install.sh"
STAND_IN_INSTALLER = """\
apiVersion: v1
kind: Namespace
metadata:
  name: volcano-system
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: stand-in-scheduler
  namespace: volcano-system
spec:
  replicas: 1
  selector:
    matchLabels: {app: stand-in-scheduler}
  template:
    metadata:
      labels: {app: stand-in-scheduler}
    spec:
      nodeName: kwok-node-0
      tolerations: [{operator: Exists}]
      containers: [{name: scheduler, image: registry.invalid/stand-in:0}]
"""


def test_volcano_install_waits_for_its_deployments_to_roll_out(
    tmp_path: Path, volcano: Kube
) -> None:
    # A stand-in for Volcano's installer (the real one is downloaded): a Deployment
    # whose pod kwok runs. The script must wait for it through the moment when the
    # pod exists without conditions, and then find the scheduler's queue.
    installer = tmp_path / "installer.yaml"
    installer.write_text(STAND_IN_INSTALLER)
    env = volcano.shell_env(VOLCANO_TIMEOUT="120")
    try:
        installed = _run_script(INSTALL_SH, str(installer), env=env)
        assert "installed; scheduler up" in installed.stdout
        ready = volcano.kubectl(
            "get",
            "deployment",
            "stand-in-scheduler",
            "-n",
            "volcano-system",
            "-o",
            "jsonpath={.status.readyReplicas}",
        )
        assert ready.stdout == "1"
    finally:
        _run_script(INSTALL_SH, "--uninstall", str(installer), env=env)
    gone = volcano.kubectl("get", "namespace", "volcano-system", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_gang_scheduling_both_ways(volcano: Kube, vns: str) -> None:
    _submit(volcano, _job("fits", vns, replicas=4, cpu="2", run_s=2))
    # 4 fake nodes x 8 CPUs: 40 pods of 1 CPU can never all be placed at once.
    _submit(volcano, _job("too-big", vns, replicas=40, cpu="1"))
    wait_until(lambda: _phase(volcano, vns, "fits") == "Completed", 120, "fits to complete")
    bound_fits = [p for p in _pods(volcano, vns, "fits") if p["spec"].get("nodeName")]
    assert len(bound_fits) == 4
    # The big job had the same time and more: still Pending, not one pod bound.
    assert _phase(volcano, vns, "too-big") == "Pending"
    assert not [p for p in _pods(volcano, vns, "too-big") if p["spec"].get("nodeName")]


def _api_phases(
    client: KubeClient, namespace: str, stop: threading.Event, out: dict[str, list[str]]
) -> None:
    """Every phase the API server reports for each job, in order (a raw watch)."""
    path = JOBS.format(ns=namespace)
    listed = json.loads(client.get(path))
    rv = listed["metadata"]["resourceVersion"]
    while not stop.is_set():
        for line in client.watch(path, {"resourceVersion": rv, "timeoutSeconds": "5"}, 15):
            if not line:
                continue
            event = decode_watch_line(line)
            obj = json.loads(bytes(event.object))
            rv = obj["metadata"]["resourceVersion"]
            if event.type in ("ADDED", "MODIFIED"):
                out.setdefault(obj["metadata"]["name"], []).append(phase_of(bytes(event.object)))


def _dedupe(phases: list[str]) -> list[str]:
    out: list[str] = []
    for phase in phases:
        if phase and (not out or out[-1] != phase):
            out.append(phase)
    return out


def test_pipeline_follows_jobs_through_their_phases(
    volcano: Kube, vns: str, redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    env = {"KUBE2REDIS_REDIS_URL": redis_url, "KUBE2REDIS_KUBECONFIG": str(volcano.kubeconfig)}
    watcher: Proc = procs.start(
        "watcher",
        [
            "watch",
            "--spool-dir",
            str(tmp_path / "spool"),
        ],
        env,
    )
    projector: Proc = procs.start("projector", ["project"], env)
    watcher.wait_ready()
    projector.wait_ready()
    api_phases: dict[str, list[str]] = {}
    stop = threading.Event()
    recorder = threading.Thread(
        target=_api_phases,
        args=(KubeClient(load_configuration(volcano.kubeconfig, None)), vns, stop, api_phases),
        daemon=True,
    )
    recorder.start()
    time.sleep(0.5)
    for i in range(3):
        _submit(volcano, _job(f"ok-{i}", vns, replicas=2, run_s=6))
    _submit(volcano, _job("broken", vns, replicas=1, run_s=3, fail=True))
    r = redis.Redis.from_url(redis_url)

    def stored_phase(name: str) -> str:
        raw = cast(bytes | None, r.hget(KEYS.state("job", vns, name), "object"))
        return phase_of(raw) if raw else ""

    # While it runs, Redis holds the job, its PodGroup and its pods.
    wait_until(lambda: stored_phase("ok-0") == "Running", 90, "ok-0 Running in Redis")
    pods = [p["metadata"]["name"] for p in _pods(volcano, vns, "ok-0")]
    assert len(pods) == 2
    assert all(r.exists(KEYS.state("pod", vns, p)) for p in pods)
    podgroups = {m.decode() for m in cast(set[bytes], r.smembers(KEYS.index("podgroup")))}
    assert any(m.startswith(f"{vns}:ok-0-") for m in podgroups)
    assert r.exists(KEYS.state("queue", "", "default"))
    for i in range(3):
        wait_until(
            lambda i=i: stored_phase(f"ok-{i}") == "Completed", 120, f"ok-{i} Completed in Redis"
        )
    wait_until(lambda: stored_phase("broken") == "Failed", 120, "broken Failed in Redis")
    stop.set()
    recorder.join(20)
    verify = procs.start("verify", ["verify", "--retries", "5"], env)
    assert verify.proc.wait(120) == 0, verify.text()
    for name in ("ok-0", "ok-1", "ok-2", "broken"):
        key = KEYS.state("job", vns, name).encode()
        fed = [f[b"phase"].decode() for _, f in read_stream(r, KEYS.changes) if f[b"key"] == key]
        assert _dedupe(fed) == _dedupe(api_phases[name]), name
    assert _dedupe(api_phases["ok-0"])[-2:] == ["Running", "Completed"]
    assert _dedupe(api_phases["broken"])[-1] == "Failed"
