"""Bad config and unreachable dependencies: one clear line, non-zero exit, no traceback."""

import subprocess
from pathlib import Path

import pytest

from kube2redis.localcluster.processes import free_port
from tests import procs as kprocs
from tests.pipeline import metric, start_watcher
from tests.procs import ProcFactory
from tests.support.kube import Jobs, Kube
from tests.support.waits import wait_until


def _one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    stderr = result.stderr.strip().splitlines()
    assert result.returncode != 0, result
    errors = [line for line in stderr if line.startswith("kube2redis: error:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in result.stderr
    for word in expected:
        assert word in errors[0], errors[0]


def test_kubeconfig_that_does_not_exist(tmp_path: Path) -> None:
    result = kprocs.run(
        ["watch", "--kubeconfig", str(tmp_path / "nope"), "--spool-dir", str(tmp_path / "s")]
    )
    _one_line_error(result, "--kubeconfig", "no such file")
    assert result.returncode == 2


@pytest.mark.parametrize("url", ["http://localhost:6379", "redis://host:notaport/0"])
def test_malformed_redis_url(url: str) -> None:
    result = kprocs.run(["--redis-url", url, "status"])
    _one_line_error(result, "--redis-url")
    assert result.returncode == 2


def test_malformed_redis_url_from_the_environment() -> None:
    result = kprocs.run(["status"], {"KUBE2REDIS_REDIS_URL": "ftp://x"})
    _one_line_error(result, "--redis-url")


def test_unreachable_api_server(tmp_path: Path, redis_url: str) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    port = free_port()
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: x, cluster: {{server: 'https://127.0.0.1:{port}',"
        " insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: abc}}]\n"
        "contexts: [{name: c, context: {cluster: x, user: u}}]\n"
    )
    result = kprocs.run(
        [
            "--redis-url",
            redis_url,
            "watch",
            "--kubeconfig",
            str(kubeconfig),
            "--spool-dir",
            str(tmp_path / "s"),
        ]
    )
    _one_line_error(result, "unreachable", str(port))
    assert "abc" not in result.stderr  # the token is never printed


def test_two_resources_of_one_kind_are_refused(kube: Kube, tmp_path: Path, redis_url: str) -> None:
    # batch/v1 Jobs and Volcano Jobs are both kind Job: they would share k8s:job:*.
    result = kprocs.run(
        [
            "--redis-url",
            redis_url,
            "watch",
            "--kubeconfig",
            str(kube.kubeconfig),
            "--resource",
            "jobs.batch.volcano.sh",
            "--resource",
            "jobs.batch",
            "--spool-dir",
            str(tmp_path / "s"),
        ]
    )
    _one_line_error(result, "'jobs.batch.volcano.sh' and 'jobs.batch' are both kind 'job'")
    assert result.returncode == 2


def test_a_resource_not_served_is_waited_for_and_readyz_says_which(
    kube: Kube, namespace: str, redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    watcher = start_watcher(
        procs, redis_url, kube, namespace, tmp_path / "spool", "--resource", "widgets.example.com"
    )
    watcher.wait_ready()  # what is served is mirrored: ready, and it says what is not
    status, body = watcher.http("/readyz")
    assert status == 200
    assert "widgets.example.com" in body and "not served" in body
    Jobs(kube, namespace).create("still-mirrored")
    wait_until(
        lambda: metric(watcher, "kube2redis_watcher_events_appended_total") >= 1,
        30,
        "the served resource to be mirrored",
    )
    assert watcher.proc.poll() is None


def test_unreachable_redis_at_start_spools_and_readyz_says_why(
    kube: Kube, namespace: str, procs: ProcFactory, tmp_path: Path
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    watcher = start_watcher(
        procs, dead_redis, kube, namespace, tmp_path / "spool", "--spool-max-bytes", str(1 << 20)
    )
    jobs = Jobs(kube, namespace)
    wait_until(lambda: watcher.http("/healthz")[0] == 200, 30, "the watcher to serve health")
    for i in range(20):
        jobs.create(f"s-{i}", payload="p" * 30000)
    wait_until(
        lambda: metric(watcher, "kube2redis_watcher_spool_bytes") > (1 << 19),
        30,
        "the spool to pass half its bound",
    )

    def not_ready() -> tuple[int, str] | None:
        answer = watcher.http("/readyz")
        return answer if answer[0] == 503 else None

    _, body = wait_until(not_ready, 10, "readyz to fail")
    assert "redis unreachable" in body
    assert list((tmp_path / "spool").glob("*.seg"))
    # Still running, still watching: what changes now is spooled too.
    spooled = metric(watcher, "kube2redis_watcher_events_spooled_total")
    jobs.create("after-not-ready")
    wait_until(
        lambda: metric(watcher, "kube2redis_watcher_events_spooled_total") > spooled,
        30,
        "an event of a job created after readyz failed to be spooled",
    )
    assert watcher.proc.poll() is None
