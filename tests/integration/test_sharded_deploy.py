"""The sharded, highly available layout's manifests (deploy/kubernetes/overlays/sharded
and the chart's `sharding` block) applied for real to the control plane: what runs,
and that the watchers may get and update their own Leases only (and create, which
resourceNames cannot limit)."""

from pathlib import Path
from typing import Any

import yaml

from tests.integration.test_helm_chart import CHART, helm, render
from tests.support.kube import Kube
from tests.support.waits import wait_until

OVERLAY = "deploy/kubernetes/overlays/sharded"


def _can(kube: Kube, sa: str, namespace: str, verb: str, what: str) -> bool:
    answer = kube.kubectl("auth", "can-i", verb, what, "-n", namespace, "--as", sa, check=False)
    return answer.stdout.strip() == "yes"


def _assert_lease_rights(kube: Kube, sa: str, namespace: str, leases: list[str]) -> None:
    lease = "leases.coordination.k8s.io"
    for name in leases:
        for verb in ("get", "update"):
            assert _can(kube, sa, namespace, verb, f"{lease}/{name}"), (verb, name)
        for verb in ("delete", "patch"):
            assert not _can(kube, sa, namespace, verb, f"{lease}/{name}"), (verb, name)
    assert _can(kube, sa, namespace, "create", lease)
    for verb in ("get", "update"):
        assert not _can(kube, sa, namespace, verb, f"{lease}/someone-elses"), verb
    for verb in ("list", "watch", "deletecollection"):
        assert not _can(kube, sa, namespace, verb, lease), verb
    assert not _can(kube, sa, "default", "create", lease)
    assert not _can(kube, sa, "default", "get", f"{lease}/{leases[0]}")


def _namespace_gone_or_active(kube: Kube, name: str) -> bool:
    phase = kube.kubectl("get", "namespace", name, "-o", "jsonpath={.status.phase}", check=False)
    return phase.returncode != 0 or phase.stdout == "Active"


def _args(statefulset: dict[str, Any]) -> list[str]:
    args: list[str] = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_the_sharded_overlay_applies_with_leases_of_its_own_only(kube: Kube) -> None:
    # A test before may have left the namespace terminating (its delete does not wait).
    wait_until(lambda: _namespace_gone_or_active(kube, "kube2redis"), 120, "kube2redis ns")
    kube.kubectl("apply", "--server-side", "-k", OVERLAY)
    try:
        get = ["get", "-n", "kube2redis", "-o", "yaml"]
        statefulset = yaml.safe_load(kube.kubectl(*get, "statefulset/kube2redis-watchers").stdout)
        args = _args(statefulset)
        assert args[0] == "watchers"
        replicas = statefulset["spec"]["replicas"]
        assert args[args.index("--replicas") + 1] == str(replicas) == "2"
        config = yaml.safe_load(kube.kubectl(*get, "configmap/kube2redis").stdout)
        shards = int(config["data"]["KUBE2REDIS_SHARDS"])
        projector = yaml.safe_load(kube.kubectl(*get, "deployment/kube2redis-projector").stdout)
        assert projector["spec"]["template"]["spec"]["containers"][0]["args"][0] == "project"
        # The single pod of the base is not part of this layout.
        gone = kube.kubectl("get", "-n", "kube2redis", "deployment/kube2redis", check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr
        prefix = args[args.index("--lease-prefix") + 1]
        sa = "system:serviceaccount:kube2redis:kube2redis"
        _assert_lease_rights(kube, sa, "kube2redis", [f"{prefix}-shard-{s}" for s in range(shards)])
        assert not _can(kube, sa, "kube2redis", "get", f"leases/{prefix}-shard-{shards}")
    finally:
        kube.kubectl("delete", "-k", OVERLAY, "--wait=true", "--timeout=120s", check=False)


def test_the_chart_renders_the_sharded_layout_instead_of_the_single_pod() -> None:
    docs = render("--set", "sharding.enabled=true,sharding.shards=3,sharding.replicas=2")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "kube2redis") not in kinds
    assert ("StatefulSet", "kube2redis-watchers") in kinds
    assert ("Deployment", "kube2redis-projector") in kinds
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    args = _args(by_name["StatefulSet", "kube2redis-watchers"])
    assert args[args.index("--replicas") + 1] == "2"
    assert by_name["ConfigMap", "kube2redis"]["data"]["KUBE2REDIS_SHARDS"] == "3"
    rules = by_name["Role", "kube2redis-leases"]["rules"]
    prefix = args[args.index("--lease-prefix") + 1]
    assert rules[0]["resourceNames"] == [f"{prefix}-shard-{s}" for s in range(3)]
    assert rules[0]["verbs"] == ["get", "update"] and rules[1] == {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["create"],
    }


def test_a_sharding_typo_or_a_deadline_past_the_lease_is_refused(tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("sharding:\n  enabled: true\n  shard: 2\n")
    refused = helm("template", "x", str(CHART), "-f", str(typo), check=False)
    assert refused.returncode != 0 and "shard" in refused.stderr
    late = helm(
        "template", "x", str(CHART), "--set",
        "sharding.enabled=true,sharding.leaseDuration=5,sharding.renewDeadline=5", check=False,
    )  # fmt: skip
    assert late.returncode != 0 and "renewDeadline must be below" in late.stderr


def test_helm_install_of_the_sharded_layout_grants_its_own_leases_only(
    kube: Kube, namespace: str
) -> None:
    release = f"k2s-{namespace}"
    helm(
        "install", release, str(CHART), "-n", namespace,
        "--set", "sharding.enabled=true,sharding.shards=2",
        kube=kube,
    )  # fmt: skip
    try:
        statefulset = yaml.safe_load(
            kube.kubectl(
                "get", "-n", namespace, f"statefulset/{release}-kube2redis-watchers", "-o", "yaml"
            ).stdout
        )
        prefix = _args(statefulset)[_args(statefulset).index("--lease-prefix") + 1]
        assert prefix == f"{release}-kube2redis"
        sa = f"system:serviceaccount:{namespace}:{release}-kube2redis"
        _assert_lease_rights(kube, sa, namespace, [f"{prefix}-shard-0", f"{prefix}-shard-1"])
        assert not _can(kube, sa, namespace, "get", f"leases/{prefix}-shard-2")
    finally:
        helm("uninstall", release, "-n", namespace, "--wait", kube=kube)
