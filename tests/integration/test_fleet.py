"""`kube2redis watchers` on the real control plane and a real redis-server: two
replicas of a fleet, their shards owned through real Leases. The owner of a shard
killed with -9: the standby takes the shard over (seen in the Lease's holder and
in the stream's writer), nothing is lost. The owner paused (SIGSTOP) while its
watcher goes on: the standby takes over, the old watcher is fenced off, and
nothing it sends after that lands."""

import json
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from common.keys import Keys
from common.redisconn import text
from tests.pipeline import KEYS, env, start_projector, wait_verified
from tests.procs import Proc, ProcFactory
from tests.support.events import JOBS_RESOURCE
from tests.support.kube import Jobs, Kube
from tests.support.redis_server import read_stream
from tests.support.waits import wait_until

LEASE_S = 4  # short, so a takeover comes soon; nothing below asserts a duration


def _fleet(
    procs: ProcFactory,
    redis_url: str,
    kube: Kube,
    namespace: str,
    spool: Path,
    ordinal: int,
    *watch_args: str,
    shards: int = 1,
) -> Proc:
    return procs.start(
        f"fleet-{ordinal}",
        [
            "watchers",
            "--replicas", "2",
            "--ordinal", str(ordinal),
            "--identity", f"replica-{ordinal}",
            "--shards", str(shards),
            "--lease-namespace", namespace,
            "--lease-prefix", "k2r",
            "--lease-duration", str(LEASE_S),
            "--renew-deadline", "2.5",
            "--retry-period", "0.5",
            "--spool-dir", str(spool / f"replica-{ordinal}"),
            "--",
            "--namespace", namespace,
            "--resource", JOBS_RESOURCE,
            *watch_args,
        ],
        env(redis_url, kube),
    )  # fmt: skip


def _holder(kube: Kube, namespace: str, shard: int) -> str:
    answer = kube.kubectl(
        "get", "lease", f"k2r-shard-{shard}", "-n", namespace,
        "-o", "jsonpath={.spec.holderIdentity}", check=False,
    )  # fmt: skip
    return answer.stdout if answer.returncode == 0 else ""


def _owned(fleet: Proc) -> dict[int, tuple[int, int]]:
    """shard -> (watcher pid, token), from the replica's /readyz."""
    _, body = fleet.http("/readyz")
    return {
        int(s): (int(pid), int(token))
        for s, pid, token in re.findall(r"shard (\d+): pid (\d+) token (\d+)", body)
    }


def _alive(pid: int) -> bool:
    """Running (an exited child its paused parent has not reaped yet is a zombie:
    it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _writers(r: "redis.Redis", keys: Keys) -> set[str]:
    return {text(w) for w in r.hgetall(keys.checkpoint_writers).values()}


class Churn:
    """Jobs created and relabelled in a thread until stopped."""

    def __init__(self, jobs: Jobs) -> None:
        self.jobs, self.stop, self.done = jobs, threading.Event(), 0
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        step = 0
        while not self.stop.wait(0.05):
            name = f"j-{step % 25}"
            if step < 25:
                self.jobs.create(name)
            else:
                self.jobs.label(name, f"v{step}")
            step += 1
            self.done = step

    def wait_for(self, more: int) -> None:
        target = self.done + more
        wait_until(lambda: self.done >= target, 60, f"{more} more changes")

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.fixture
def churn(kube: Kube, namespace: str) -> Iterator[Churn]:
    running = Churn(Jobs(kube, namespace))
    yield running
    running.finish()


def test_the_standby_takes_over_a_killed_owner_and_nothing_is_lost(
    kube: Kube, namespace: str, redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(redis_url)
    owner = _fleet(procs, redis_url, kube, namespace, tmp_path, 0)
    wait_until(lambda: _holder(kube, namespace, 0) == "replica-0", 60, "replica-0 holds shard 0")
    standby = _fleet(procs, redis_url, kube, namespace, tmp_path, 1)
    owner.wait_ready(60)
    standby.wait_ready(60)  # a replica owning nothing is a ready standby
    assert _owned(standby) == {}
    projector = start_projector(procs, redis_url, kube)
    projector.wait_ready()
    ((old_pid, old_token),) = _owned(owner).values()
    churn = Churn(Jobs(kube, namespace))
    try:
        churn.wait_for(20)
        wait_until(lambda: _writers(r, KEYS) == {f"{_host()}-{old_pid}"}, 30, "the owner writes")
        owner.kill9()
        wait_until(lambda: not _alive(old_pid), 10, "the owner's watcher dies with it")
        wait_until(
            lambda: _holder(kube, namespace, 0) == "replica-1", 60, "the standby holds shard 0"
        )
        wait_until(lambda: 0 in _owned(standby), 30, "the standby runs shard 0's watcher")
        ((new_pid, new_token),) = _owned(standby).values()
        assert new_token > old_token
        churn.wait_for(20)
        # New entries, written by the new owner's watcher under its token.
        wait_until(
            lambda: _writers(r, KEYS) == {f"{_host()}-{new_pid}"}, 30, "the new owner writes"
        )
        assert r.get(KEYS.fence) == str(new_token).encode()
    finally:
        churn.finish()
    standby.wait_ready(60)
    wait_verified(redis_url, kube, namespace)


def _host() -> str:
    import socket

    return socket.gethostname()


def _objects_after(r: "redis.Redis", after: bytes, namespace: str) -> list[dict[str, Any]]:
    return [
        json.loads(fields[b"object"])
        for entry_id, fields in read_stream(r, KEYS.stream)
        if entry_id > after and fields.get(b"namespace") == namespace.encode()
        and fields.get(b"object")
    ]  # fmt: skip


def test_a_paused_owner_loses_its_shard_and_its_watcher_is_fenced_off(
    kube: Kube, namespace: str, redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    """Both replicas' watchers run at once for a while: the paused owner's (it cannot
    renew, nor kill its watcher) and the standby's. What each wrote is told apart by
    the object: the owner's watcher drops managedFields, the standby's keeps them."""
    r = redis.Redis.from_url(redis_url)
    owner = _fleet(procs, redis_url, kube, namespace, tmp_path, 0, "--drop-managed-fields")
    wait_until(lambda: _holder(kube, namespace, 0) == "replica-0", 60, "replica-0 holds shard 0")
    owner.wait_ready(60)
    standby = _fleet(procs, redis_url, kube, namespace, tmp_path, 1)
    standby.wait_ready(60)
    ((old_pid, _),) = _owned(owner).values()
    churn = Churn(Jobs(kube, namespace))
    try:
        churn.wait_for(10)
        owner.signal(signal.SIGSTOP)  # the parent only: its watcher keeps writing
        try:
            wait_until(
                lambda: _holder(kube, namespace, 0) == "replica-1", 60, "the standby takes over"
            )
            wait_until(lambda: 0 in _owned(standby), 30, "the standby runs shard 0's watcher")
            ((_, new_token),) = _owned(standby).values()
            wait_until(lambda: r.get(KEYS.fence) == str(new_token).encode(), 30, "fence raised")
            last = read_stream(r, KEYS.stream)[-1][0]
            # The old watcher, still running, finds the fence at its next write.
            wait_until(lambda: not _alive(old_pid), 30, "the old watcher exits, fenced off")
            churn.wait_for(20)
        finally:
            owner.signal(signal.SIGCONT)
        wait_until(lambda: "lease lost" in owner.text(), 30, "the old owner sees its loss")
    finally:
        churn.finish()
    after = _objects_after(r, last, namespace)
    assert after, "the new owner appended nothing"
    assert all("managedFields" in obj["metadata"] for obj in after), (
        "an entry without managedFields after the fence was raised: the old owner's"
    )
    assert "fenced off: the shard's fence is at" in owner.text()
    projector = start_projector(procs, redis_url, kube)
    projector.wait_ready()
    wait_verified(redis_url, kube, namespace)
