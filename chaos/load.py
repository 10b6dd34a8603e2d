"""The load: Volcano Jobs, PodGroups and Queues created, updated (spec and
status) and deleted across several namespaces, namespaces created and deleted
too, at a steady rate chosen by a seeded generator. Every write the API server
acknowledged is recorded with the uid and resourceVersion it answered."""

import contextlib
import json
import logging
import random
import threading
import time
from typing import Any

import msgspec

from common.kube import KubeError, KubeNotFoundError
from tests.support.kube import Kube, vcjob

log = logging.getLogger(__name__)

JOBS = "/apis/batch.volcano.sh/v1alpha1/namespaces/{ns}/jobs"
PODGROUPS = "/apis/scheduling.volcano.sh/v1beta1/namespaces/{ns}/podgroups"
QUEUES = "/apis/scheduling.volcano.sh/v1beta1/queues"
MERGE = "application/merge-patch+json"


class Write(msgspec.Struct, frozen=True):
    """One write the API server acknowledged."""

    at: float  # seconds since the run began
    op: str  # create | update | status | delete | delete-namespace
    kind: str  # job | podgroup | queue | namespace
    namespace: str
    name: str
    uid: str = ""
    rv: str = ""


class Load:
    """Runs in a thread until stopped; pause() holds it for the quiet checks."""

    def __init__(self, kube: Kube, rng: random.Random, rate: float, began: float) -> None:
        self.kube, self.rng, self.rate, self.began = kube, rng, rate, began
        self.writes: list[Write] = []
        self.failed = 0  # writes the API server did not acknowledge (it was down)
        self.namespaces: list[str] = []
        self.live: dict[tuple[str, str, str], str] = {}  # (kind, ns, name) -> uid
        self._counter = 0
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def start(self) -> None:
        for _ in range(3):
            self._create_namespace()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()
        self._thread.join(60)

    def pause(self) -> None:
        """Hold the load and wait (bounded) until its write in flight is done."""
        self._running.clear()
        self._idle.wait(60)

    def resume(self) -> None:
        self._running.set()

    # ---- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        ops = (
            (self._create_job, 6),
            (self._update_job, 6),
            (self._status_job, 4),
            (self._delete_job, 3),
            (self._podgroup, 4),
            (self._queue, 1),
            (self._namespace, 1),
        )
        actions, weights = zip(*ops, strict=True)
        while not self._stop.is_set():
            if not self._running.is_set():
                self._idle.set()
                self._running.wait()
                continue
            self._idle.clear()
            action = self.rng.choices(actions, weights)[0]
            try:
                action()
            except KubeError as exc:
                self.failed += 1
                log.debug("write failed: %s", exc)
            self._stop.wait(1.0 / self.rate)
        self._idle.set()

    def _record(self, op: str, kind: str, namespace: str, name: str, body: bytes = b"") -> None:
        uid = rv = ""
        if body:
            meta = json.loads(body)["metadata"]
            uid, rv = meta["uid"], meta["resourceVersion"]
        at = time.monotonic() - self.began
        self.writes.append(Write(at, op, kind, namespace, name, uid, rv))

    def _name(self, prefix: str, kind: str, namespace: str) -> str:
        # Now and then a name used before, so an object is re-created under a new uid.
        gone = [n for (k, ns, n) in self._used if k == kind and ns == namespace]
        if gone and self.rng.random() < 0.2:
            name = self.rng.choice(gone)
            if (kind, namespace, name) not in self.live:
                return name
        self._counter += 1
        return f"{prefix}-{self._counter}"

    @property
    def _used(self) -> set[tuple[str, str, str]]:
        return {(w.kind, w.namespace, w.name) for w in self.writes[-500:] if w.op == "delete"}

    def _pick(self, kind: str) -> tuple[str, str] | None:
        candidates = sorted((ns, name) for (k, ns, name) in self.live if k == kind)
        return self.rng.choice(candidates) if candidates else None

    def _payload(self) -> str:
        return "x" * self.rng.randint(500, 4000)

    # ---- Jobs -----------------------------------------------------------------------------

    def _create_job(self) -> None:
        namespace = self.rng.choice(self.namespaces)
        name = self._name("j", "job", namespace)
        body = json.dumps(vcjob(name, namespace, payload=self._payload())).encode()
        answer = self.kube.client.call("POST", JOBS.format(ns=namespace), body)
        self.live[("job", namespace, name)] = json.loads(answer)["metadata"]["uid"]
        self._record("create", "job", namespace, name, answer)

    def _update_job(self) -> None:
        picked = self._pick("job")
        if picked is None:
            return self._create_job()
        namespace, name = picked
        patch: dict[str, Any] = {"metadata": {"labels": {"step": str(self.rng.randint(0, 10**6))}}}
        if self.rng.random() < 0.5:
            patch["spec"] = {"minAvailable": self.rng.randint(1, 3)}
        self._patch("update", "job", f"{JOBS.format(ns=namespace)}/{name}", namespace, name, patch)
        return None

    def _status_job(self) -> None:
        picked = self._pick("job")
        if picked is None:
            return None
        namespace, name = picked
        phase = self.rng.choice(["Pending", "Running", "Completing", "Completed", "Failed"])
        path = f"{JOBS.format(ns=namespace)}/{name}/status"
        self._patch("status", "job", path, namespace, name, {"status": {"state": {"phase": phase}}})
        return None

    def _delete_job(self) -> None:
        picked = self._pick("job")
        if picked is not None:
            self._delete("job", f"{JOBS.format(ns=picked[0])}/{picked[1]}", *picked)

    def _patch(
        self, op: str, kind: str, path: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> None:
        try:
            answer = self.kube.client.call(
                "PATCH", path, json.dumps(patch).encode(), content_type=MERGE
            )
        except KubeNotFoundError:  # its namespace went away meanwhile
            self.live.pop((kind, namespace, name), None)
            return
        self._record(op, kind, namespace, name, answer)

    def _delete(self, kind: str, path: str, namespace: str, name: str) -> None:
        with contextlib.suppress(KubeNotFoundError):
            self.kube.client.call("DELETE", path)
        self.live.pop((kind, namespace, name), None)
        self._record("delete", kind, namespace, name)

    # ---- PodGroups, Queues, namespaces ----------------------------------------------------

    def _podgroup(self) -> None:
        picked = self._pick("podgroup")
        roll = self.rng.random()
        if picked is None or roll < 0.4:
            namespace = self.rng.choice(self.namespaces)
            name = self._name("pg", "podgroup", namespace)
            body = {
                "apiVersion": "scheduling.volcano.sh/v1beta1",
                "kind": "PodGroup",
                "metadata": {"name": name, "annotations": {"payload": self._payload()}},
                "spec": {"minMember": 1, "queue": "default"},
            }
            answer = self.kube.client.call(
                "POST", PODGROUPS.format(ns=namespace), json.dumps(body).encode()
            )
            self.live[("podgroup", namespace, name)] = json.loads(answer)["metadata"]["uid"]
            self._record("create", "podgroup", namespace, name, answer)
        elif roll < 0.8:
            namespace, name = picked
            path = f"{PODGROUPS.format(ns=namespace)}/{name}"
            patch = {"spec": {"minMember": self.rng.randint(1, 5)}}
            self._patch("update", "podgroup", path, namespace, name, patch)
        else:
            self._delete("podgroup", f"{PODGROUPS.format(ns=picked[0])}/{picked[1]}", *picked)

    def _queue(self) -> None:
        picked = self._pick("queue")
        if picked is None or self.rng.random() < 0.6:
            name = self._name("q", "queue", "")
            body = {
                "apiVersion": "scheduling.volcano.sh/v1beta1",
                "kind": "Queue",
                "metadata": {"name": name},
                "spec": {"weight": self.rng.randint(1, 10)},
            }
            answer = self.kube.client.call("POST", QUEUES, json.dumps(body).encode())
            self.live[("queue", "", name)] = json.loads(answer)["metadata"]["uid"]
            self._record("create", "queue", "", name, answer)
        else:
            self._delete("queue", f"{QUEUES}/{picked[1]}", *picked)

    def _namespace(self) -> None:
        if len(self.namespaces) > 2 and self.rng.random() < 0.5:
            namespace = self.rng.choice(self.namespaces)
            self.namespaces.remove(namespace)
            with contextlib.suppress(KubeNotFoundError):
                self.kube.client.call("DELETE", f"/api/v1/namespaces/{namespace}")
            # The namespace controller deletes what is in it, in its own time.
            for key in [k for k in self.live if k[1] == namespace]:
                del self.live[key]
            self._record("delete-namespace", "namespace", namespace, namespace)
        else:
            self._create_namespace()

    def _create_namespace(self) -> None:
        self._counter += 1
        name = f"chaos-{self._counter}"
        self.kube.client.call(
            "POST", "/api/v1/namespaces", json.dumps({"metadata": {"name": name}}).encode()
        )
        self.namespaces.append(name)
