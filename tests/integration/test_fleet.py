"""`kube2redis watchers` on the real control plane and a real redis-server: two
replicas of a fleet, two shards, each owned through a real Lease. The owner of
shard 0 killed with -9: the other replica takes it over (seen in the Lease's holder
and in the shard's writer), nothing is lost. The owner paused (SIGSTOP) while its
watcher goes on: the other replica takes over, the old watcher is fenced off, and
nothing it sends after that lands."""

import json
import re
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from chaos.toxiproxy import Toxiproxy, binary
from common.keys import Keys
from common.redisconn import text
from common.shards import ShardMap
from tests import procs as kprocs
from tests.procs import Proc, ProcFactory
from tests.support.ci import unavailable
from tests.support.events import JOBS_RESOURCE
from tests.support.kube import Jobs, Kube
from tests.support.redis_server import read_stream
from tests.support.waits import wait_until

SHARDS = 2
MAP = ShardMap(count=SHARDS)
LEASE_S = 4  # short, so a takeover comes soon; nothing below asserts a duration
HOST = socket.gethostname()


@pytest.fixture
def namespaces(kube: Kube) -> Iterator[list[str]]:
    """One namespace in each shard, in shard order."""
    with kube.namespaces_in_each_shard(MAP, "fleet") as made:
        yield sorted({MAP.shard_of(ns): ns for ns in made}.values(), key=MAP.shard_of)


def _env(redis_url: str, kube: Kube, kubeconfig: Path | None = None) -> dict[str, str]:
    return {
        "KUBE2REDIS_REDIS_URL": redis_url,
        "KUBE2REDIS_KUBECONFIG": str(kubeconfig or kube.kubeconfig),
        "KUBE2REDIS_SHARDS": str(SHARDS),
    }


def _scope(namespaces: list[str]) -> list[str]:
    return [a for ns in namespaces for a in ("--namespace", ns)]


def _fleet(
    procs: ProcFactory,
    redis_url: str,
    kube: Kube,
    namespaces: list[str],
    spool: Path,
    ordinal: int,
    *watch_args: str,
    kubeconfig: Path | None = None,
) -> Proc:
    return procs.start(
        f"fleet-{ordinal}",
        [
            "watchers",
            "--replicas", "2",
            "--ordinal", str(ordinal),
            "--identity", f"replica-{ordinal}",
            "--lease-namespace", namespaces[0],
            "--lease-prefix", "k2r",
            "--lease-duration", str(LEASE_S),
            "--renew-deadline", "2.5",
            "--retry-period", "0.5",
            "--spool-dir", str(spool / f"replica-{ordinal}"),
            "--",
            *_scope(namespaces),
            "--resource", JOBS_RESOURCE,
            *watch_args,
        ],
        _env(redis_url, kube, kubeconfig),
    )  # fmt: skip


def _holder(kube: Kube, namespaces: list[str], shard: int) -> str:
    answer = kube.kubectl(
        "get", "lease", f"k2r-shard-{shard}", "-n", namespaces[0],
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


def _taken_over(kube: Kube, namespaces: list[str], one: Proc) -> tuple[int, int]:
    """Wait until replica-1 holds shard 0's Lease and runs its watcher: (pid, token)."""
    wait_until(lambda: _holder(kube, namespaces, 0) == "replica-1", 60, "replica-1 holds 0")
    wait_until(lambda: 0 in _owned(one), 30, "replica-1 runs shard 0's watcher")
    return _owned(one)[0]


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


def _verified(redis_url: str, kube: Kube, namespaces: list[str]) -> bool:
    args = ["verify", *_scope(namespaces), "--resource", JOBS_RESOURCE, "--retries", "0"]
    return kprocs.run(args, _env(redis_url, kube)).returncode == 0


def _mirror_equals_the_api_server(
    procs: ProcFactory, redis_url: str, kube: Kube, namespaces: list[str]
) -> None:
    projector = procs.start("projector", ["project"], _env(redis_url, kube))
    projector.wait_ready()
    wait_until(lambda: _verified(redis_url, kube, namespaces), 90, "verify clean", 1.0)


class Churn:
    """Jobs created and relabelled in every namespace, in a thread, until stopped."""

    def __init__(self, kube: Kube, namespaces: list[str]) -> None:
        self.jobs = [Jobs(kube, ns) for ns in namespaces]
        self.stop, self.done = threading.Event(), 0
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        step = 0
        while not self.stop.wait(0.05):
            jobs, name = self.jobs[step % len(self.jobs)], f"j-{step // 2 % 15}"
            if step < 30:
                jobs.create(name)
            else:
                jobs.label(name, f"v{step}")
            step += 1
            self.done = step

    def wait_for(self, more: int) -> None:
        target = self.done + more
        wait_until(lambda: self.done >= target, 60, f"{more} more changes")

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)


def test_the_standby_takes_over_a_killed_owner_and_nothing_is_lost(
    kube: Kube, namespaces: list[str], redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(redis_url)
    zero = _fleet(procs, redis_url, kube, namespaces, tmp_path, 0)
    wait_until(lambda: _holder(kube, namespaces, 0) == "replica-0", 60, "replica-0 holds 0")
    one = _fleet(procs, redis_url, kube, namespaces, tmp_path, 1)
    zero.wait_ready(60)
    one.wait_ready(60)
    wait_until(lambda: set(_owned(one)) == {1}, 30, "replica-1 runs shard 1's watcher")
    assert set(_owned(zero)) == {0}  # shard 1 was never free long enough for replica-0
    old_pid, old_token = _owned(zero)[0]
    one_pid, _ = _owned(one)[1]
    churn = Churn(kube, namespaces)
    try:
        churn.wait_for(20)
        wait_until(lambda: _writers(r, MAP.keys(0)) == {f"{HOST}-{old_pid}"}, 30, "0 written")
        zero.kill9()
        wait_until(lambda: not _alive(old_pid), 10, "the owner's watcher dies with it")
        new_pid, new_token = _taken_over(kube, namespaces, one)
        assert new_token > old_token
        churn.wait_for(20)
        # New entries in shard 0, written by the new owner's watcher under its token.
        wait_until(
            lambda: _writers(r, MAP.keys(0)) == {f"{HOST}-{new_pid}"}, 30, "the new owner writes"
        )
        assert r.get(MAP.keys(0).fence) == str(new_token).encode()
        assert _owned(one)[1][0] == one_pid  # shard 1 went on undisturbed
        # Its /metrics: both watchers' series, labelled by shard, as Prometheus reads them.
        status, body = one.http("/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(body)}
        appended = families["kube2redis_watcher_events_appended"].samples
        assert {s.labels["shard"] for s in appended if s.value > 0} == {"0", "1"}
        assert families["kube2redis_fleet_shards_owned"].samples[0].value == 2
    finally:
        churn.finish()
    one.wait_ready(60)
    _mirror_equals_the_api_server(procs, redis_url, kube, namespaces)


def _objects_after(r: "redis.Redis", keys: Keys, after: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(fields[b"object"])
        for entry_id, fields in read_stream(r, keys.stream)
        if entry_id > after and fields.get(b"object")
    ]


def test_a_paused_owner_loses_its_shard_and_its_watcher_is_fenced_off(
    kube: Kube, namespaces: list[str], redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    """Both replicas' watchers of shard 0 run at once for a while: the paused owner's
    (it can neither renew nor kill its watcher) and the other replica's. What each
    wrote is told apart by the object: replica-0's watchers drop managedFields,
    replica-1's keep them."""
    r = redis.Redis.from_url(redis_url)
    zero = _fleet(procs, redis_url, kube, namespaces, tmp_path, 0, "--drop-managed-fields")
    wait_until(lambda: _holder(kube, namespaces, 0) == "replica-0", 60, "replica-0 holds 0")
    zero.wait_ready(60)
    one = _fleet(procs, redis_url, kube, namespaces, tmp_path, 1)
    one.wait_ready(60)
    old_pid, _ = _owned(zero)[0]
    shard0 = MAP.keys(0)
    churn = Churn(kube, namespaces)
    try:
        churn.wait_for(10)
        zero.signal(signal.SIGSTOP)  # the parent only: its watcher keeps writing
        try:
            _, new_token = _taken_over(kube, namespaces, one)
            wait_until(lambda: r.get(shard0.fence) == str(new_token).encode(), 30, "new fence")
            last = read_stream(r, shard0.stream)[-1][0]
            # The old watcher, still running, finds the fence at its next write.
            wait_until(lambda: not _alive(old_pid), 30, "the old watcher exits, fenced off")
            churn.wait_for(20)
        finally:
            zero.signal(signal.SIGCONT)
        wait_until(lambda: "lease lost" in zero.text(), 30, "the old owner sees its loss")
    finally:
        churn.finish()
    after = _objects_after(r, shard0, last)
    assert after, "the new owner appended nothing"
    assert all("managedFields" in obj["metadata"] for obj in after), (
        "an entry without managedFields after the fence was raised: the old owner's"
    )
    assert "fenced off: the shard's fence is at" in zero.text()
    _mirror_equals_the_api_server(procs, redis_url, kube, namespaces)


def _proxied_kubeconfig(kube: Kube, port: int, to: Path) -> Path:
    """The same cluster, reached through toxiproxy on port (the serving certificate
    is for 127.0.0.1, whatever the port)."""
    config: dict[str, Any] = yaml.safe_load(kube.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    to.write_text(yaml.safe_dump(config))
    return to


def test_an_owner_cut_off_from_the_api_server_kills_its_watcher_and_the_shard_moves(
    kube: Kube, namespaces: list[str], redis_url: str, procs: ProcFactory, tmp_path: Path
) -> None:
    """Replica-0 reaches the API server through a proxy that goes silent (its Redis
    still answers): it cannot renew, so it SIGKILLs its watcher by the renew
    deadline, and replica-1 (not cut off) takes the shard over."""
    if not binary().exists():
        unavailable(f"toxiproxy (make toxiproxy) at {binary()}")
    proxy = Toxiproxy(tmp_path / "toxiproxy.log")
    try:
        api_port = int(
            yaml.safe_load(kube.kubeconfig.read_text())["clusters"][0]["cluster"]["server"].rsplit(
                ":", 1
            )[1]
        )
        proxied = _proxied_kubeconfig(
            kube, proxy.proxy("apiserver", api_port), tmp_path / "kubeconfig-proxied"
        )
        r = redis.Redis.from_url(redis_url)
        zero = _fleet(procs, redis_url, kube, namespaces, tmp_path, 0, kubeconfig=proxied)
        wait_until(lambda: _holder(kube, namespaces, 0) == "replica-0", 60, "replica-0 holds 0")
        zero.wait_ready(60)
        one = _fleet(procs, redis_url, kube, namespaces, tmp_path, 1)
        one.wait_ready(60)
        old_pid, old_token = _owned(zero)[0]
        churn = Churn(kube, namespaces)
        try:
            churn.wait_for(10)
            proxy.toxic("apiserver", "timeout", {"timeout": 0}, "downstream")  # silence
            wait_until(lambda: not _alive(old_pid), 30, "replica-0 kills its watcher")
            assert "shard 0: lease not renewed for" in zero.text()
            new_pid, new_token = _taken_over(kube, namespaces, one)
            assert new_token > old_token
            churn.wait_for(20)
            wait_until(
                lambda: _writers(r, MAP.keys(0)) == {f"{HOST}-{new_pid}"}, 30, "new owner writes"
            )
            proxy.clear("apiserver")
            # Back in touch, replica-0 finds the lease is replica-1's and stands by.
            wait_until(lambda: "shard 0: lease lost" in zero.text(), 30, "replica-0 sees it")
            wait_until(lambda: 0 not in _owned(zero), 30, "replica-0 stands by for shard 0")
        finally:
            churn.finish()
        assert "fenced off" not in zero.text()  # killed by its parent, before any fence
        _mirror_equals_the_api_server(procs, redis_url, kube, namespaces)
    finally:
        proxy.stop()
