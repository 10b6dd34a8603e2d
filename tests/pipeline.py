"""Helpers for end-to-end tests: run the watcher and projector, read the stream."""

import json
from collections import defaultdict
from pathlib import Path

import redis

from common.keys import Keys
from tests import procs
from tests.procs import Proc, ProcFactory
from tests.support.events import JOBS_RESOURCE
from tests.support.kube import Kube
from tests.support.redis_server import read_stream
from tests.support.waits import wait_until

KEYS = Keys()


def env(redis_url: str, kube: Kube) -> dict[str, str]:
    return {"KUBE2REDIS_REDIS_URL": redis_url, "KUBE2REDIS_KUBECONFIG": str(kube.kubeconfig)}


def start_watcher(
    factory: ProcFactory, redis_url: str, kube: Kube, namespace: str, spool_dir: Path, *extra: str
) -> Proc:
    return factory.start(
        "watcher",
        [
            "watch",
            "--namespace",
            namespace,
            "--resource",
            JOBS_RESOURCE,
            "--spool-dir",
            str(spool_dir),
            *extra,
        ],
        env(redis_url, kube),
    )


def start_projector(factory: ProcFactory, redis_url: str, kube: Kube, *extra: str) -> Proc:
    return factory.start(
        "projector",
        ["project", *extra],
        env(redis_url, kube),
    )


def stream_versions(r: "redis.Redis", namespace: str) -> dict[str, list[tuple[str, str]]]:
    """uid -> [(type, rv)] of the namespace's job entries, in stream order."""
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for _, fields in read_stream(r, KEYS.stream):
        if fields.get(b"namespace") != namespace.encode() or not fields.get(b"uid"):
            continue
        out[fields[b"uid"].decode()].append((fields[b"type"].decode(), fields[b"rv"].decode()))
    return out


def assert_order_per_object(versions: dict[str, list[tuple[str, str]]]) -> None:
    """Per object, resourceVersions never go back (a spool replay may repeat one)."""
    for uid, events in versions.items():
        rvs = [int(rv) for _, rv in events]
        assert rvs == sorted(rvs), f"out of order for {uid}: {events}"


def missing_versions(
    r: "redis.Redis", namespace: str, written: dict[str, list[str]]
) -> list[tuple[str, str]]:
    """(uid, rv) the API server answered a write with but the stream lacks."""
    seen = stream_versions(r, namespace)
    return [
        (uid, rv)
        for uid, rvs in written.items()
        for rv in rvs
        if rv not in {v for _, v in seen.get(uid, [])}
    ]


def verify(
    redis_url: str, kube: Kube, namespace: str, retries: int = 10, repair: bool = False
) -> tuple[int, str]:
    result = procs.run(
        [
            "verify",
            "--namespace",
            namespace,
            "--resource",
            JOBS_RESOURCE,
            "--retries",
            str(retries),
            "--json",
            *(["--repair"] if repair else []),
        ],
        env(redis_url, kube),
    )
    return result.returncode, result.stdout + result.stderr


def wait_verified(redis_url: str, kube: Kube, namespace: str, timeout_s: float = 90) -> None:
    wait_until(
        lambda: verify(redis_url, kube, namespace, retries=0)[0] == 0,
        timeout_s,
        f"verify clean for {namespace}",
        interval_s=1.0,
    )


def metric(proc: Proc, name: str) -> float:
    """Sum of a metric's samples from the process's /metrics."""
    status, body = proc.http("/metrics")
    assert status == 200, body
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def stored_object(r: "redis.Redis", kind: str, namespace: str, name: str) -> object:
    raw = r.hget(KEYS.state(kind, namespace, name), "object")
    return json.loads(raw) if raw else None
