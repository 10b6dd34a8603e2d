"""Manifests and scripts applied and run for real against the control plane (their
linters run in `make check`: `make lint-deploy`)."""

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.kube import Kube
from tests.support.paths import REPO


def _run(
    *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(args),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if check:
        assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result


def test_redis_manifests_apply_and_read_back(kube: Kube, namespace: str) -> None:
    kube.kubectl("apply", "--server-side", "-n", namespace, "-k", "manifests/redis/base")
    assert (
        kube.kubectl(
            "get", "-n", namespace, "deployment/redis", "-o", "jsonpath={.spec.strategy.type}"
        ).stdout
        == "Recreate"
    )
    port = kube.kubectl(
        "get", "-n", namespace, "service/redis", "-o", "jsonpath={.spec.ports[0].port}"
    ).stdout
    assert port == "6379"
    kube.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-n",
        namespace,
        "-k",
        "manifests/redis/overlays/persistent",
    )
    claim = kube.kubectl(
        "get",
        "-n",
        namespace,
        "deployment/redis",
        "-o",
        "jsonpath={.spec.template.spec.volumes[0].persistentVolumeClaim.claimName}",
    )
    assert claim.stdout == "redis-data"
    kube.kubectl("get", "-n", namespace, "pvc/redis-data")
    kube.kubectl("apply", "--server-side", "-n", namespace, "-f", "manifests/redis/client-pod.yaml")
    command = kube.kubectl(
        "get", "-n", namespace, "pod/redis-client", "-o", "jsonpath={.spec.containers[0].command}"
    ).stdout
    assert "PING" in command


def test_kube2redis_deployment_applies_with_least_privilege(kube: Kube) -> None:
    kube.kubectl("apply", "--server-side", "-k", "deploy/kubernetes/overlays/with-redis")
    try:
        containers = kube.kubectl(
            "get",
            "-n",
            "kube2redis",
            "deployment/kube2redis",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}",
        ).stdout
        assert containers.split() == ["watcher", "projector"]
        kube.kubectl(
            "get",
            "-n",
            "kube2redis",
            "deployment/redis",
            "service/redis",
            "configmap/kube2redis",
            "serviceaccount/kube2redis",
        )
        sa = "system:serviceaccount:kube2redis:kube2redis"
        allowed = [
            ("watch", "jobs.batch.volcano.sh"),
            ("list", "podgroups.scheduling.volcano.sh"),
            ("get", "queues.scheduling.volcano.sh"),
            ("watch", "pods"),
        ]
        denied = [
            ("get", "secrets"),
            ("delete", "jobs.batch.volcano.sh"),
            ("create", "pods"),
            ("list", "configmaps"),
            ("watch", "deployments.apps"),
        ]
        for verb, resource in allowed:
            answer = kube.kubectl("auth", "can-i", verb, resource, "--as", sa, "-A", check=False)
            assert answer.stdout.strip() == "yes", (verb, resource)
        for verb, resource in denied:
            answer = kube.kubectl("auth", "can-i", verb, resource, "--as", sa, "-A", check=False)
            assert answer.stdout.strip() == "no", (verb, resource)
        # Of namespaces, only kube-system's identity may be read.
        for name, expected in (("kube-system", "yes"), ("default", "no")):
            answer = kube.kubectl(
                "auth", "can-i", "get", f"namespace/{name}", "--as", sa, check=False
            )
            assert answer.stdout.strip() == expected, name
    finally:
        kube.kubectl(
            "delete", "-k", "deploy/kubernetes/overlays/with-redis", "--wait=false", check=False
        )


def _has_nodes(kube: Kube) -> bool:
    return bool(kube.kubectl("get", "nodes", "--no-headers").stdout.strip())


def test_cluster_check_reports_on_the_control_plane(kube: Kube) -> None:
    env = kube.shell_env(CLUSTER_CHECK_ALLOW_NO_NODES="1")
    result = _run("bash", "manifests/cluster-check.sh", env=env)
    assert "ok    kubectl connects" in result.stdout
    assert "Kubernetes 1.35" in result.stdout
    assert "Volcano CRDs installed" in result.stdout
    if not _has_nodes(kube):
        assert "skip  no nodes" in result.stdout
        strict = _run("bash", "manifests/cluster-check.sh", env=kube.shell_env(), check=False)
        assert strict.returncode == 1 and "FAIL  no nodes" in strict.stdout


def _unreachable_kubeconfig(directory: Path, context: str) -> Path:
    """A kubeconfig whose only cluster listens nowhere."""
    config = directory / "kubeconfig"
    config.write_text(
        f"apiVersion: v1\nkind: Config\ncurrent-context: {context}\n"
        "clusters: [{name: x, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {}}]\n"
        f"contexts: [{{name: {context}, context: {{cluster: x, user: u}}}}]\n"
    )
    return config


def test_cluster_check_names_an_unreachable_cluster(tmp_path: Path, kube: Kube) -> None:
    config = _unreachable_kubeconfig(tmp_path, "gone")
    env = kube.shell_env(KUBECONFIG=str(config))
    result = _run("bash", "manifests/cluster-check.sh", env=env, check=False)
    assert result.returncode == 1
    assert "context 'gone'" in result.stdout and "cannot reach" in result.stdout


def test_smoke_test_runs_what_this_cluster_can(kube: Kube, namespace: str) -> None:
    env = kube.shell_env(SMOKE_NAMESPACE=namespace, SMOKE_TIMEOUT="120")
    result = _run("bash", "examples/manual/smoke-test.sh", env=env, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "job submitted" in result.stdout and "kubectl get vcjob shows it" in result.stdout
    if _has_nodes(kube):
        assert "job Completed" in result.stdout
    else:
        assert "skip  no nodes" in result.stdout


def test_volcano_install_errors_are_one_clear_line(tmp_path: Path, kube: Kube) -> None:
    bash = shutil.which("bash") or "/bin/bash"
    no_kubectl = _run(
        bash, "manifests/volcano/install.sh", env={"PATH": str(tmp_path)}, check=False
    )
    assert no_kubectl.returncode == 1
    assert no_kubectl.stderr.strip() == "volcano: error: kubectl not found on PATH"
    config = _unreachable_kubeconfig(tmp_path, "far")
    env = kube.shell_env(KUBECONFIG=str(config))
    unreachable = _run("bash", "manifests/volcano/install.sh", env=env, check=False)
    assert unreachable.returncode == 1
    assert "using context 'far'" in unreachable.stdout  # said before changing anything
    assert "cannot reach the cluster of context 'far'" in unreachable.stderr
    missing = _run(
        "bash",
        "manifests/volcano/install.sh",
        str(tmp_path / "nope.yaml"),
        env=kube.shell_env(),
        check=False,
    )
    assert missing.returncode == 1 and "no such file" in missing.stderr
