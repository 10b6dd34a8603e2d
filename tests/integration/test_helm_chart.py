"""The Helm chart: rendered like the kustomize manifests, RBAC from the configured
resources, a typo refused, installed on the control plane and removed without a trace."""

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ci import unavailable
from tests.support.kube import Kube
from tests.support.paths import REPO
from tests.support.waits import wait_until

CHART = REPO / "deploy" / "helm" / "kube2redis"
KUSTOMIZE_BASE = REPO / "deploy" / "kubernetes" / "base"
# Everything the chart can create, to look for leftovers after `helm uninstall`.
KINDS = (
    "deployments,replicasets,pods,services,configmaps,serviceaccounts,cronjobs,"
    "clusterroles,clusterrolebindings"
)


def _helm_bin() -> str:
    """The helm `make helm` built (the Makefile exports its path); else any found there."""
    configured = os.environ.get("KUBE2REDIS_HELM")
    if configured and Path(configured).exists():
        return configured
    built = sorted(Path.home().glob(".cache/kube2redis/helm/*/helm"))
    if not built:
        unavailable("helm is not built (make helm)")
    return str(built[-1])


def helm(
    *args: str, kube: Kube | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    config = [f"--kubeconfig={kube.kubeconfig}"] if kube else []
    result = subprocess.run(
        [_helm_bin(), *args, *config], capture_output=True, text=True, timeout=180, check=False
    )
    if check:
        assert result.returncode == 0, f"helm {args}: {result.stdout}\n{result.stderr}"
    return result


def render(*values: str, namespace: str = "kube2redis") -> list[dict[str, Any]]:
    out = helm("template", "kube2redis", str(CHART), "--namespace", namespace, *values).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in docs}


def test_the_chart_renders_what_the_kustomize_base_applies(kube: Kube) -> None:
    """The kustomize manifests stay; the chart's defaults must not drift from them."""
    kustomized = _by_kind(
        [d for d in yaml.safe_load_all(kube.kubectl("kustomize", str(KUSTOMIZE_BASE)).stdout) if d]
    )
    charted = _by_kind(render())
    pod = charted["Deployment"]["spec"]["template"]["spec"]
    assert pod == kustomized["Deployment"]["spec"]["template"]["spec"]
    for field in ("replicas", "strategy"):
        assert charted["Deployment"]["spec"][field] == kustomized["Deployment"]["spec"][field]
    assert charted["ConfigMap"]["data"] == kustomized["ConfigMap"]["data"]
    assert charted["ClusterRole"]["rules"] == _rules_one_per_resource(
        kustomized["ClusterRole"]["rules"]
    )
    assert charted["ClusterRoleBinding"]["subjects"] == kustomized["ClusterRoleBinding"]["subjects"]
    assert charted["ServiceAccount"]["metadata"]["name"] == "kube2redis"


def _rules_one_per_resource(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The hand-written rules grouped resources of a group; the chart writes one a resource."""
    return [
        {**rule, "resources": [resource]} if "resourceNames" not in rule else rule
        for rule in rules
        for resource in (rule["resources"] if "resourceNames" not in rule else [None])
    ]


def test_rbac_rules_follow_the_configured_resources() -> None:
    docs = render(
        "--set",
        "resources={v1/pods?fieldSelector=status.phase=Running,cronjobs.v1.batch,jobs.batch}",
    )
    rules = _by_kind(docs)["ClusterRole"]["rules"]
    assert [(r["apiGroups"], r["resources"], r["verbs"]) for r in rules] == [
        ([""], ["pods"], ["get", "list", "watch"]),
        (["batch"], ["cronjobs"], ["get", "list", "watch"]),
        (["batch"], ["jobs"], ["get", "list", "watch"]),
        ([""], ["namespaces"], ["get"]),
    ]
    assert rules[-1]["resourceNames"] == ["kube-system"]


def test_the_prometheus_rule_and_dashboard_are_the_tested_files() -> None:
    docs = render("--set", "monitoring.prometheusRule.enabled=true")
    rule = _by_kind(docs)["PrometheusRule"]
    tested = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"] == tested
    configmaps = [
        d for d in render("--set", "monitoring.dashboard.enabled=true") if d["kind"] == "ConfigMap"
    ]
    shipped = {k: v for d in configmaps for k, v in d.get("data", {}).items()}
    assert json.loads(shipped["kube2redis.json"])["uid"] == "kube2redis"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ("projector:\n  procesors: 2\n", "procesors"),
        ("monitoring:\n  serviceMonitor:\n    enabeld: true\n", "enabeld"),
        ("env:\n  KUBE2REDIS_REDIS_PASSWORD: hunter2\n", "KUBE2REDIS_REDIS_PASSWORD"),
        ("resources:\n  - pods?labelselector=x\n", "resources"),
    ],
)
def test_a_values_file_with_a_typo_is_refused(tmp_path: Path, values: str, complaint: str) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(values)
    result = helm("template", "x", str(CHART), "-f", str(path), check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


def _leftovers(kube: Kube, release: str, namespace: str) -> list[str]:
    selector = f"app.kubernetes.io/instance={release}"
    found: list[str] = kube.kubectl("get", KINDS, "-A", "-l", selector, "-o", "name").stdout.split()
    return found + [
        name
        for name in kube.kubectl("get", "secrets", "-n", namespace, "-o", "name").stdout.split()
        if f"sh.helm.release.v1.{release}." in name
    ]


def test_helm_install_on_the_control_plane_with_least_privilege(
    kube: Kube, namespace: str, tmp_path: Path
) -> None:
    release = f"k2r-{namespace}"
    sa = f"system:serviceaccount:{namespace}:{release}-kube2redis"
    typo = tmp_path / "typo.yaml"
    typo.write_text("watcher:\n  spoolSizeLimt: 2Gi\n")
    refused = helm(
        "install", release, str(CHART), "-n", namespace, "-f", str(typo), kube=kube, check=False
    )
    assert refused.returncode != 0 and "spoolSizeLimt" in refused.stderr
    assert _leftovers(kube, release, namespace) == []

    helm(
        "install", release, str(CHART), "-n", namespace,
        "--set", "redis.bundled.enabled=true,verify.enabled=true,monitoring.dashboard.enabled=true",
        "--set", "redis.tls.caSecret=redis-ca",
        kube=kube,
    )  # fmt: skip
    try:
        # Accepted server-side: the API server stored each object as the chart wrote it.
        containers = kube.kubectl(
            "get", "-n", namespace, f"deployment/{release}-kube2redis",
            "-o", "jsonpath={.spec.template.spec.containers[*].name}",
        ).stdout  # fmt: skip
        assert containers.split() == ["watcher", "projector"]
        kube.kubectl(
            "get", "-n", namespace, f"deployment/{release}-kube2redis-redis",
            f"service/{release}-kube2redis-redis", f"cronjob/{release}-kube2redis-verify",
            f"configmap/{release}-kube2redis", f"configmap/{release}-kube2redis-dashboard",
        )  # fmt: skip
        url = kube.kubectl(
            "get", "-n", namespace, f"configmap/{release}-kube2redis",
            "-o", "jsonpath={.data.KUBE2REDIS_REDIS_URL}",
        ).stdout  # fmt: skip
        assert url == f"redis://{release}-kube2redis-redis:6379/0"
        _assert_least_privilege(kube, sa)
        # The leftovers check below sees what the release made (so its emptiness means something).
        installed = _leftovers(kube, release, namespace)
        assert f"clusterrole.rbac.authorization.k8s.io/{release}-kube2redis-watcher" in installed
        assert f"cronjob.batch/{release}-kube2redis-verify" in installed
    finally:
        helm("uninstall", release, "-n", namespace, "--cascade=foreground", "--wait", kube=kube)
    # Nothing left, also what controllers made from it where they run (ReplicaSets, Pods:
    # the garbage collector removes those, hence the bounded wait).
    wait_until(lambda: _leftovers(kube, release, namespace) == [], 60, "uninstall leftovers")


def _assert_least_privilege(kube: Kube, sa: str) -> None:
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
    for verb, resource in allowed + denied:
        answer = kube.kubectl("auth", "can-i", verb, resource, "--as", sa, "-A", check=False)
        assert answer.stdout.strip() == ("yes" if (verb, resource) in allowed else "no"), (
            verb,
            resource,
        )
    for name, expected in (("kube-system", "yes"), ("default", "no")):
        answer = kube.kubectl("auth", "can-i", "get", f"namespace/{name}", "--as", sa, check=False)
        assert answer.stdout.strip() == expected, name
